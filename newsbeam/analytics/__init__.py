"""Downstream analytics over the Parquet dataset: ``newsbeam query`` and ``newsbeam report``.

``dataset.connect(data_dir)`` is the one place that knows how to open the
dataset (DuckDB view ``articles``); the commands build on it.
"""
from newsbeam.analytics.dataset import connect, read_run_manifests

__all__ = ["connect", "read_run_manifests"]
