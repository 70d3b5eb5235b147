"""Latency backends behind one small interface, chosen by name (DESIGN §6).

A backend turns (module, example inputs, device, dtype) into a runner, a no-argument callable that
performs one forward pass; :func:`measure` warms it up and times it. CUDA work is timed with CUDA
events on the current stream; host-blocking runtimes (onnxruntime) and CPU work with
``time.perf_counter``. CPU thread counts are fixed for the measurement and recorded.
"""

from __future__ import annotations

import contextlib
import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lmzoo.devices import resolve_device
from lmzoo.errors import InvalidArgumentError, LatencyBackendUnavailable, LmzooError
from lmzoo.latency.setting import BACKENDS, DEFAULT_RUNS, DEFAULT_WARMUP, LatencySetting
from lmzoo.latency.stats import LatencyStats
from lmzoo.version import __version__

Runner = Callable[[], object]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass(frozen=True)
class Target:
    """Where a measurement runs: device, dtype, and (CPU) the number of intra-op threads."""

    device: torch.device
    dtype: torch.dtype
    threads: int

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def device_name(self) -> str:
        """Human name of the device: the GPU model, or the CPU model and thread count."""
        if self.is_cuda:
            return torch.cuda.get_device_name(self.device)
        return f"{_cpu_model()} ({self.threads} thread{'s' if self.threads != 1 else ''})"


def make_target(
    device: str = "cpu", dtype: str | torch.dtype = "float32", threads: int | None = None
) -> Target:
    """Validate and normalise where to measure (one clear error for each bad value)."""
    dev = resolve_device(device, error=LatencyBackendUnavailable)
    if dev.type not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"latency is measured on 'cpu', 'cuda' or 'cuda:N', not {device!r}")
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise InvalidArgumentError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype]
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidArgumentError(f"threads must be a positive integer, got {threads!r}")
    return Target(dev, dtype, threads or torch.get_num_threads())


class Backend(ABC):
    """One way to run a network. Subclasses implement ``prepare``; ``check`` raises
    LatencyBackendUnavailable (with what to install) when the backend cannot run on a target."""

    name: ClassVar[str]
    #: runs block the host until done (timed with perf_counter even on CUDA)
    synchronous: ClassVar[bool] = False

    def check(self, target: Target) -> None:  # noqa: B027 - most backends run everywhere
        """Raise LatencyBackendUnavailable if this backend cannot run on ``target``."""

    @abstractmethod
    def prepare(self, module: nn.Module, inputs: Sequence[torch.Tensor], target: Target) -> Runner:
        """A callable running one forward pass of ``module`` on ``inputs`` (already on target)."""

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def options(self) -> dict[str, Any]:
        """Settings that change the numbers (recorded with every table and card)."""
        return {}


class TorchBackend(Backend):
    """PyTorch eager, under ``torch.inference_mode``."""

    name = "torch"

    def prepare(self, module: nn.Module, inputs: Sequence[torch.Tensor], target: Target) -> Runner:
        def run() -> object:
            with torch.inference_mode():
                return module(*inputs)

        return run


class TorchCompileBackend(Backend):
    """``torch.compile`` with inductor; CUDA graphs ("reduce-overhead") on GPU when asked."""

    name = "torch-compile"

    def __init__(self, *, cuda_graphs: bool = False) -> None:
        self.cuda_graphs = cuda_graphs

    def check(self, target: Target) -> None:
        if self.cuda_graphs and not target.is_cuda:
            raise InvalidArgumentError("CUDA graphs need a CUDA device; drop cuda_graphs on CPU")

    def prepare(self, module: nn.Module, inputs: Sequence[torch.Tensor], target: Target) -> Runner:
        mode = "reduce-overhead" if self.cuda_graphs else "default"
        compiled = torch.compile(module, mode=mode, dynamic=False)

        def run() -> object:
            with torch.inference_mode():
                return compiled(*inputs)

        return run

    def options(self) -> dict[str, Any]:
        return {"cuda_graphs": self.cuda_graphs}


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime: the CPU execution provider, or the CUDA provider on a GPU (onnxruntime-gpu)."""

    name = "onnxruntime"
    synchronous = True

    def check(self, target: Target) -> None:
        ort = _import_onnxruntime()
        if target.is_cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise LatencyBackendUnavailable(
                "onnxruntime has no CUDAExecutionProvider here: install onnxruntime-gpu (in place of "
                "onnxruntime) on a machine with a GPU, or measure onnxruntime on 'cpu'"
            )

    def prepare(self, module: nn.Module, inputs: Sequence[torch.Tensor], target: Target) -> Runner:
        ort = _import_onnxruntime()
        from lmzoo.onnx_graph import onnx_bytes

        model = onnx_bytes(module, inputs)
        options = ort.SessionOptions()
        options.intra_op_num_threads = target.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not target.is_cuda:
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            feeds = {i.name: x.detach().cpu().numpy() for i, x in zip(session.get_inputs(), inputs)}
            return lambda: session.run(None, feeds)
        provider = ("CUDAExecutionProvider", {"device_id": target.device.index or 0})
        session = ort.InferenceSession(model, options, providers=[provider])
        binding = session.io_binding()
        for spec, x in zip(session.get_inputs(), inputs):
            x = x.contiguous()
            binding.bind_input(
                spec.name,
                "cuda",
                target.device.index or 0,
                _numpy_dtype(x.dtype),
                tuple(x.shape),
                x.data_ptr(),
            )
        for out in session.get_outputs():
            binding.bind_output(out.name, "cuda", target.device.index or 0)
        return lambda: session.run_with_iobinding(binding)

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "onnxruntime": _import_onnxruntime().__version__}


class TensorRTBackend(Backend):
    """TensorRT 10/11: ONNX → engine, named I/O tensors, ``execute_async_v3`` on the current CUDA
    stream, timed with CUDA events. fp16: TensorRT 10 sets the FP16 builder flag; TensorRT 11
    removed it, so the ONNX itself is exported in fp16."""

    name = "tensorrt"

    def check(self, target: Target) -> None:
        # CUDA first: without a GPU, trt.Builder fails with an opaque pybind error.
        if not target.is_cuda or not torch.cuda.is_available():
            raise LatencyBackendUnavailable(
                "the tensorrt backend needs a CUDA GPU (device='cuda'); none is in use here. Measure with "
                "'torch' or 'onnxruntime' on CPU, or run on a machine with an NVIDIA GPU"
            )
        _import_tensorrt()

    def prepare(self, module: nn.Module, inputs: Sequence[torch.Tensor], target: Target) -> Runner:
        trt = _import_tensorrt()
        major = int(trt.__version__.split(".")[0])
        fp16 = target.dtype == torch.float16
        export_dtype = torch.float16 if fp16 and major >= 11 else torch.float32
        onnx_inputs = [x.to(export_dtype) if x.is_floating_point() else x for x in inputs]
        from lmzoo.onnx_graph import onnx_bytes

        model = onnx_bytes(module.to(export_dtype), onnx_inputs)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(model):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise LmzooError(f"TensorRT could not parse the exported ONNX: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
        if fp16 and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise LmzooError("TensorRT failed to build an engine for this network (see its log above)")
        engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
        context = engine.create_execution_context()
        feeds = iter(onnx_inputs)
        keep_alive: list[torch.Tensor] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            torch_dtype = _torch_dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                tensor = next(feeds).to(target.device, torch_dtype).contiguous()
            else:
                shape = tuple(context.get_tensor_shape(name))
                tensor = torch.empty(shape, dtype=torch_dtype, device=target.device)
            keep_alive.append(tensor)
            context.set_tensor_address(name, tensor.data_ptr())

        def run() -> object:
            context.execute_async_v3(torch.cuda.current_stream(target.device).cuda_stream)
            return keep_alive

        return run

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "tensorrt": _import_tensorrt().__version__}


_BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (TorchBackend, TorchCompileBackend, OnnxRuntimeBackend, TensorRTBackend)
}
if tuple(_BACKENDS) != BACKENDS:  # the names recipes validate against are these classes'
    raise ImportError(f"lmzoo.latency.setting.BACKENDS {BACKENDS} != the backend classes {tuple(_BACKENDS)}")


def get_backend(backend: str | Backend) -> Backend:
    """A backend by name ('torch', 'torch-compile', 'onnxruntime', 'tensorrt'), or the instance given."""
    if isinstance(backend, Backend):
        return backend
    if backend not in _BACKENDS:
        raise InvalidArgumentError(
            f"unknown latency backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    return _BACKENDS[backend]()


def measure(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    backend: Backend,
    target: Target,
    warmup: int | None = None,
    runs: int | None = None,
) -> LatencyStats:
    """Warm up and time ``module(*inputs)`` (moved to the target) with ``backend``."""
    jobs = {"": (module, inputs)}
    return measure_interleaved(jobs, backend=backend, target=target, warmup=warmup, runs=runs)[""]


def measure_interleaved(
    jobs: Mapping[str, tuple[nn.Module, Sequence[torch.Tensor]]],
    *,
    backend: Backend,
    target: Target,
    warmup: int | None = None,
    runs: int | None = None,
    rounds: int = 1,
) -> dict[str, LatencyStats]:
    """Time several (module, inputs) jobs, alternating between them in ``rounds`` rounds of
    ``runs / rounds`` runs each (in a rotating order), so that slow drifts of a shared machine hit
    all of them alike: ratios and differences of the medians are then fair."""
    warmup = DEFAULT_WARMUP[target.device.type] if warmup is None else warmup
    runs = DEFAULT_RUNS[target.device.type] if runs is None else runs
    if warmup < 0 or runs < 1 or rounds < 1:
        raise InvalidArgumentError(
            f"need warmup >= 0, runs >= 1 and rounds >= 1, got {warmup}, {runs}, {rounds}"
        )
    backend.check(target)
    per_round = max(1, runs // rounds)
    times: dict[str, list[float]] = {name: [] for name in jobs}
    with _fixed_threads(target.threads):
        runners = {}
        for name, (module, inputs) in jobs.items():
            with _memory_errors(_batch_of(inputs), target):
                module = module.to(device=target.device, dtype=target.dtype).eval()
                runners[name] = backend.prepare(module, _moved(inputs, target), target)
                _time_runs(runners[name], target, warmup, 1, host_timed=backend.synchronous)
        names = list(runners)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name] += _time_runs(runners[name], target, 0, per_round, host_timed=backend.synchronous)
    return {name: LatencyStats.from_times(t, warmup=warmup) for name, t in times.items()}


def measure_times(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    backend: Backend,
    target: Target,
    warmup: int,
    runs: int,
) -> list[float]:
    """The raw per-run times (ms) of ``module(*inputs)`` after ``warmup`` untimed runs."""
    backend.check(target)
    with _fixed_threads(target.threads), _memory_errors(_batch_of(inputs), target):
        module = module.to(device=target.device, dtype=target.dtype).eval()
        run = backend.prepare(module, _moved(inputs, target), target)
        return _time_runs(run, target, warmup, runs, host_timed=backend.synchronous)


def _batch_of(inputs: Sequence[torch.Tensor]) -> int:
    return int(inputs[0].shape[0]) if inputs and inputs[0].dim() else 1


def _moved(inputs: Sequence[torch.Tensor], target: Target) -> list[torch.Tensor]:
    return [
        x.to(target.device, target.dtype) if x.is_floating_point() else x.to(target.device) for x in inputs
    ]


def _time_runs(run: Runner, target: Target, warmup: int, runs: int, *, host_timed: bool) -> list[float]:
    for _ in range(warmup):
        run()
    if target.is_cuda and not host_timed:
        torch.cuda.synchronize(target.device)
        stream = torch.cuda.current_stream(target.device)
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)
        ]
        for start, end in events:
            start.record(stream)
            run()
            end.record(stream)
        torch.cuda.synchronize(target.device)
        return [start.elapsed_time(end) for start, end in events]
    if target.is_cuda:
        torch.cuda.synchronize(target.device)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        if target.is_cuda:
            torch.cuda.synchronize(target.device)
        times.append((time.perf_counter() - started) * 1e3)
    return times


@contextlib.contextmanager
def _fixed_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _memory_errors(batch: int, target: Target) -> Iterator[None]:
    try:
        yield
    except torch.OutOfMemoryError:
        raise InvalidArgumentError(
            f"a batch of {batch} does not fit in the memory of {target.device}: use a smaller batch_size"
        ) from None
    except RuntimeError as err:
        if "can't allocate memory" in str(err) or "out of memory" in str(err):
            raise InvalidArgumentError(
                f"a batch of {batch} does not fit in the memory of {target.device}: use a smaller batch_size"
            ) from None
        raise


def backend_versions(backend: Backend) -> dict[str, str]:
    """Versions of every library a backend's numbers depend on, plus lmzoo's."""
    return {**backend.versions(), "lmzoo": __version__}


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise LatencyBackendUnavailable(
            "the onnxruntime backend needs onnxruntime: pip install 'lmzoo[onnx]'"
        ) from None
    return onnxruntime


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise LatencyBackendUnavailable(
            "the tensorrt backend needs TensorRT 10 or 11: pip install tensorrt (it downloads from "
            "NVIDIA's index) on a machine with an NVIDIA GPU and matching CUDA"
        ) from None
    return tensorrt


def _numpy_dtype(dtype: torch.dtype) -> Any:
    import numpy as np

    return {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}[dtype]


def _torch_dtype(np_dtype: Any) -> torch.dtype:
    import numpy as np

    mapping: Mapping[Any, torch.dtype] = {
        np.float32: torch.float32,
        np.float16: torch.float16,
        np.int32: torch.int32,
        np.int64: torch.int64,
    }
    return mapping[np.dtype(np_dtype).type]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def target_of(setting: LatencySetting) -> Target:
    """Where a measurement with ``setting`` runs (validated)."""
    return make_target(setting.device, setting.dtype, setting.threads)
