"""Latency (DESIGN §6): how a measurement is made (``setting``: one LatencySetting record taken whole
everywhere; ``measurement``: what it resolved to here), the backends that run networks (``backends``),
timing statistics (``stats``), measured latency tables (``table``), end-to-end benchmarks
(``endtoend``) and latency cards (``card``). Names below are imported on first use."""

from typing import TYPE_CHECKING

from lmzoo.lazy import lazy_exports

_EXPORTS = {
    "lmzoo.latency.setting": ("BACKENDS", "LatencySetting"),
    "lmzoo.latency.measurement": ("Measurement",),
    "lmzoo.latency.backends": (
        "Backend",
        "OnnxRuntimeBackend",
        "TensorRTBackend",
        "TorchBackend",
        "TorchCompileBackend",
        "get_backend",
    ),
    "lmzoo.latency.stats": ("LatencyStats",),
    "lmzoo.latency.table": ("ConvConfig", "conv_config", "latency_table"),
    "lmzoo.latency.endtoend": ("benchmark", "compare", "deploy_form"),
    "lmzoo.latency.card": ("LatencyCard", "measure_plan"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(name for names in _EXPORTS.values() for name in names)

if TYPE_CHECKING:
    from lmzoo.latency.backends import (
        Backend,
        OnnxRuntimeBackend,
        TensorRTBackend,
        TorchBackend,
        TorchCompileBackend,
        get_backend,
    )
    from lmzoo.latency.card import LatencyCard, measure_plan
    from lmzoo.latency.endtoend import benchmark, compare, deploy_form
    from lmzoo.latency.measurement import Measurement
    from lmzoo.latency.setting import BACKENDS, LatencySetting
    from lmzoo.latency.stats import LatencyStats
    from lmzoo.latency.table import ConvConfig, conv_config, latency_table
