"""Evaluation outputs from prediction records: metrics, the markdown report and the plots."""

from mvqa.eval.metrics import compute_metrics
from mvqa.eval.report import format_table, write_report

__all__ = ["compute_metrics", "format_table", "write_report"]
