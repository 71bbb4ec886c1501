"""The pipeline's counters: one Beam metrics namespace, which the run manifest
queries (:mod:`newsbeam.pipeline.manifest`)."""
from apache_beam.metrics import Metrics

NAMESPACE = "newsbeam"


def counter(name: str):
    """A Beam counter in newsbeam's namespace."""
    return Metrics.counter(NAMESPACE, name)
