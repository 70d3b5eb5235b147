import pytest
import torch
from torch import nn

from lmzoo.errors import InvalidArgumentError, LatencyBackendUnavailable
from lmzoo.latency import LatencyStats, benchmark, compare, get_backend
from lmzoo.latency.backends import BACKENDS, make_target, measure, measure_interleaved

FAST = {"warmup": 1, "runs": 5}


def _net():
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1)).eval()


def test_stats_summarise_the_runs():
    stats = LatencyStats.from_times([5.0, 1.0, 2.0, 4.0, 3.0], warmup=7)
    assert (stats.median_ms, stats.min_ms, stats.mean_ms, stats.runs, stats.warmup) == (3.0, 1.0, 3.0, 5, 7)
    assert stats.p10_ms == pytest.approx(1.4) and stats.p90_ms == pytest.approx(4.6)
    assert LatencyStats.from_dict(stats.to_dict()) == stats


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_cpu_backends_measure_and_restore_threads(backend):
    before = torch.get_num_threads()
    target = make_target("cpu", threads=1)
    stats = measure(_net(), [torch.randn(2, 4, 16, 16)], backend=get_backend(backend), target=target, **FAST)
    assert stats.runs == 5 and stats.warmup == 1
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert torch.get_num_threads() == before


def test_benchmark_does_not_touch_the_model_and_accepts_a_batch_size():
    model = _net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    stats = benchmark(model, torch.randn(1, 4, 16, 16), batch_size=3, **FAST)
    assert stats.runs == 5
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_compare_interleaves_models_and_pools_their_runs():
    small = nn.Conv2d(4, 4, 1).eval()
    big = nn.Sequential(nn.Conv2d(4, 16, 7, padding=3), *[nn.Conv2d(16, 16, 7, padding=3) for _ in range(6)])
    timed = compare({"small": small, "big": big}, torch.randn(1, 4, 32, 32), warmup=1, runs=12, rounds=4)
    assert timed["small"].runs == timed["big"].runs == 12
    assert timed["big"].median_ms > timed["small"].median_ms


def test_interleaved_jobs_each_take_their_own_inputs():
    jobs = {
        "a": (nn.Conv2d(3, 3, 1), [torch.randn(1, 3, 8, 8)]),
        "b": (nn.Conv2d(5, 5, 1), [torch.randn(1, 5, 4, 4)]),
    }
    timed = measure_interleaved(
        jobs, backend=get_backend("torch"), target=make_target(), warmup=0, runs=4, rounds=2
    )
    assert set(timed) == {"a", "b"} and timed["a"].runs == 4


@pytest.mark.slow
def test_torch_compile_backend_on_cpu():
    stats = benchmark(_net(), torch.randn(1, 4, 16, 16), backend="torch-compile", **FAST)
    assert stats.median_ms > 0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"backend": "tflite"}, InvalidArgumentError, "unknown latency backend 'tflite'"),
        ({"device": "tpu"}, InvalidArgumentError, "unknown device 'tpu'"),
        ({"dtype": "float8"}, InvalidArgumentError, "unknown dtype 'float8'"),
        ({"threads": 0}, InvalidArgumentError, "threads must be a positive integer"),
        ({"batch_size": 0}, InvalidArgumentError, "batch_size must be a positive integer"),
        ({"runs": 0}, InvalidArgumentError, "runs must be a positive integer"),
    ],
)
def test_bad_settings_are_one_clear_error(kwargs, error, message):
    with pytest.raises(error, match=message):
        benchmark(_net(), torch.randn(1, 4, 8, 8), **{"warmup": 0, "runs": 2, **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_without_a_gpu_names_the_problem(backend):
    with pytest.raises(LatencyBackendUnavailable, match="CUDA is not available here"):
        benchmark(_net(), torch.randn(1, 4, 8, 8), backend=backend, device="cuda", **FAST)


def test_tensorrt_checks_cuda_before_touching_tensorrt():
    # on CPU the check must fail on the device, never reach `import tensorrt` (opaque errors)
    with pytest.raises(LatencyBackendUnavailable, match="needs a CUDA GPU"):
        benchmark(_net(), torch.randn(1, 4, 8, 8), backend="tensorrt", device="cpu", **FAST)


def test_tensorrt_missing_library_is_actionable(monkeypatch):
    import builtins

    from lmzoo.latency import backends

    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    with pytest.raises(LatencyBackendUnavailable, match="pip install tensorrt"):
        backends._import_tensorrt()


def test_onnxruntime_cuda_provider_missing_is_actionable(monkeypatch):
    import onnxruntime

    from lmzoo.latency.backends import OnnxRuntimeBackend, Target

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    target = Target(torch.device("cuda", 0), torch.float32, 1)
    with pytest.raises(LatencyBackendUnavailable, match="install onnxruntime-gpu"):
        OnnxRuntimeBackend().check(target)


def test_out_of_memory_becomes_a_batch_size_error():
    class Greedy(nn.Module):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")

    with pytest.raises(InvalidArgumentError, match=r"a batch of 4 does not fit .* smaller batch_size"):
        benchmark(Greedy(), torch.randn(4, 3, 8, 8), **FAST)
