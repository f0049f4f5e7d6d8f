from .summary import DIRECTIONS, build_report, format_table, load_report, versions, write_report

__all__ = ["DIRECTIONS", "build_report", "format_table", "load_report", "versions", "write_report"]
