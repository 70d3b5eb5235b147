"""Export of merged networks to ONNX: one self-contained ``.onnx`` file, run in onnxruntime against the
PyTorch output before it is kept, with a record of how it was checked (``onnx.json``) that cards and
publishing read. ``lmzoo export NAME --format onnx`` writes both next to the checkpoint."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lmzoo.errors import LmzooError
from lmzoo.files import write_atomic

if TYPE_CHECKING:  # torch is imported when an export runs: the command line starts without it
    import torch
    from torch import nn

    from lmzoo.records import OnnxExport

#: opset 17: what the TorchScript exporter targets by default; onnxruntime >= 1.14 and TensorRT >= 8.6
#: run it, and every operator of a merged CNN or DDPM UNet exists there
DEFAULT_OPSET = 17
#: the largest difference allowed between onnxruntime's and PyTorch's output, relative to the
#: output's largest magnitude: float32 reassociation in other kernels stays far below it
TOLERANCE = 1e-4
#: the batch sizes a dynamic-batch export is checked at (one fixed export: batch 1 only)
CHECKED_BATCHES = (1, 3)
ONNX_NAME = "model.onnx"
RECORD_NAME = "onnx.json"
FORMATS = ("onnx",)


class ExportError(LmzooError):
    """A network could not be exported, or its export does not compute what the network does."""


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_inputs: Sequence[torch.Tensor],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    seed: int = 0,
) -> OnnxExport:
    """Export ``model`` (taking inputs shaped like ``example_inputs``, batch 1) to ``path`` and check
    it in onnxruntime against PyTorch on seeded random inputs; the file is written only when it
    matches (:data:`TOLERANCE`). Returns the record of the check."""
    import onnxruntime as ort
    import torch

    from lmzoo.latency.endtoend import PlainOutput
    from lmzoo.onnx_graph import onnx_bytes
    from lmzoo.records import OnnxExport

    net = PlainOutput(model).eval().cpu()
    blob = onnx_bytes(net, [x.cpu() for x in example_inputs], opset=opset, dynamic_batch=dynamic_batch)
    try:
        session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime rejects the graph
        raise ExportError(f"onnxruntime cannot load the exported graph: {str(err)[:300]}") from None
    generator = torch.Generator().manual_seed(seed)
    batches = CHECKED_BATCHES if dynamic_batch else (1,)
    worst_abs = worst_rel = 0.0
    for batch in batches:
        inputs = [_random_like(x, batch, generator) for x in example_inputs]
        with torch.no_grad():
            expected = net(*inputs).float()
        feeds = {node.name: x.numpy() for node, x in zip(session.get_inputs(), inputs, strict=True)}
        (got,) = session.run(None, feeds)
        got_t = torch.from_numpy(got).float()
        if got_t.shape != expected.shape:
            raise ExportError(
                f"onnxruntime gives shape {tuple(got_t.shape)}, PyTorch {tuple(expected.shape)}"
            )
        abs_error = float((got_t - expected).abs().max())
        worst_abs = max(worst_abs, abs_error)
        worst_rel = max(worst_rel, abs_error / max(float(expected.abs().max()), 1e-12))
    if not worst_rel <= TOLERANCE:
        raise ExportError(
            f"the ONNX graph differs from PyTorch by {worst_rel:.2e} of the output's scale (tolerance "
            f"{TOLERANCE:g}); it was not written"
        )
    path = Path(path)
    write_atomic(path, blob)
    return OnnxExport(
        file=path.name,
        opset=opset,
        dynamic_batch=dynamic_batch,
        input_shapes=tuple(tuple(x.shape) for x in example_inputs),
        checked_batches=batches,
        max_abs_error=worst_abs,
        relative_error=worst_rel,
        tolerance=TOLERANCE,
        provider="CPUExecutionProvider",
        versions={"torch": torch.__version__, "onnxruntime": ort.__version__},
    )


def _random_like(example: torch.Tensor, batch: int, generator: torch.Generator) -> torch.Tensor:
    import torch

    shape = (batch, *example.shape[1:])
    if example.is_floating_point():
        return torch.randn(shape, generator=generator, dtype=example.dtype)
    return torch.randint(0, 1000, shape, generator=generator, dtype=example.dtype)  # DDPM timesteps


def export_checkpoint(
    directory: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
) -> tuple[Path, OnnxExport]:
    """Export the checkpoint in ``directory`` to ``out`` (default: ``model.onnx`` in the directory)
    and write the check's record (``onnx.json``) next to the file. Returns the file and record."""
    from lmzoo.checkpoint import load_checkpoint, read_config
    from lmzoo.rebuild import example_inputs

    directory = Path(directory)
    config = read_config(directory)
    model = load_checkpoint(directory)
    target = Path(out) if out is not None else directory / ONNX_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    record = export_onnx(
        model,
        target,
        example_inputs=example_inputs(config["input_shape"], config["task"]),
        opset=opset,
        dynamic_batch=dynamic_batch,
    )
    record.save(target.with_name(RECORD_NAME) if target.suffix == ".onnx" else target.with_suffix(".json"))
    return target, record
