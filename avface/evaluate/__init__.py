"""Evaluation outputs (train / inference / evaluate layer): the paper's result tables, pictures, partitioned
per-frame results and their dask aggregation, the nightly MLflow comparison. The metrics themselves are pure
functions in ``avface.metrics``."""

from avface.evaluate.plots import ErrorPanel, plot_ced, render_error_heatmaps
from avface.evaluate.results import (
    FACESET_COLUMNS,
    MULTIFACE_COLUMNS,
    PAPER_TABLE4,
    PAPER_TABLE5,
    MethodResult,
    faceset_summary,
    paper_rows,
    write_results,
)
from avface.evaluate.tables import aggregate_frame_results, read_frame_results, write_frame_results

__all__ = ["ErrorPanel", "plot_ced", "render_error_heatmaps", "FACESET_COLUMNS", "MULTIFACE_COLUMNS",
           "PAPER_TABLE4", "PAPER_TABLE5", "MethodResult", "faceset_summary", "paper_rows", "write_results",
           "aggregate_frame_results", "read_frame_results", "write_frame_results"]
