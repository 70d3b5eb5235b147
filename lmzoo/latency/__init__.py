"""Latency: measurement backends, measured latency tables and end-to-end benchmarks (DESIGN §6)."""

from lmzoo.latency.backends import (
    BACKENDS,
    Backend,
    OnnxRuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    TorchCompileBackend,
    get_backend,
)
from lmzoo.latency.stats import LatencyStats
from lmzoo.latency.table import ConvConfig, benchmark, compare, conv_config, latency_table

__all__ = [
    "BACKENDS",
    "Backend",
    "ConvConfig",
    "LatencyStats",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "TorchBackend",
    "TorchCompileBackend",
    "benchmark",
    "compare",
    "conv_config",
    "get_backend",
    "latency_table",
]
