from .html import read_metrics, render_bench_html, render_bench_report, render_run_report, write_run_report
from .summary import DIRECTIONS, build_report, format_table, load_report, versions, write_report

__all__ = ["DIRECTIONS", "build_report", "format_table", "load_report", "read_metrics", "render_bench_html",
           "render_bench_report", "render_run_report", "versions", "write_report", "write_run_report"]
