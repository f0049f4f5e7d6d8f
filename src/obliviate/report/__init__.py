from .bench_page import render_bench_html, render_bench_report
from .run_page import render_run_report, write_run_report
from .summary import DIRECTIONS, build_report, format_table, load_report, versions, write_report
from .training_log import read_metrics

__all__ = ["DIRECTIONS", "build_report", "format_table", "load_report", "read_metrics", "render_bench_html",
           "render_bench_report", "render_run_report", "versions", "write_report", "write_run_report"]
