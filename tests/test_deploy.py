"""A merged network deploys the ways a PyTorch network does: torch.jit.script (whenever its base
scripts), torch.compile, torch.export, ONNX in onnxruntime (``lmzoo export``), half and bfloat16,
and channels_last memory; each gives the merged network's output."""

import json
import random
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
import torchvision
from click.testing import CliRunner

import lmzoo
from lmzoo.cards import card_from_checkpoint
from lmzoo.cli import main
from lmzoo.core.candidates import candidates
from lmzoo.engine import apply_plan, merge, tensor_output, trace
from lmzoo.export import export_onnx
from lmzoo.latency.endtoend import PlainOutput
from lmzoo.testing import TINY_MODELS, random_checkpoint, random_plan

NAMES = list(TINY_MODELS)
CARDS = Path(__file__).resolve().parent.parent / "cards"
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def _merged(name, seed=0):
    t = TINY_MODELS[name]
    torch.manual_seed(seed)
    model = t.build().eval()
    inputs = t.inputs(2, torch.float32)
    spec = trace(model, inputs)
    plan = random_plan(spec, candidates(spec), random.Random(seed))
    return model, merge(apply_plan(model, spec, plan)).eval(), inputs


def _out(net, inputs):
    with torch.no_grad():
        return tensor_output(net(*inputs)).float()


def _close(got, want, tolerance):
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= tolerance * max(scale, 1e-6)


def _scripts(module):
    try:
        return torch.jit.script(module)
    except Exception:  # TorchScript rejects the module's Python (a diffusers UNet, say)
        return None


@pytest.mark.parametrize("name", NAMES)
def test_a_merged_network_scripts_whenever_its_base_does(name):
    model, merged, inputs = _merged(name)
    if _scripts(model) is None:  # diffusers' UNet2DModel and the test net's inline import: not even the base
        assert name in ("ddpm-unet", "graph")
        return
    scripted = _scripts(merged)
    assert scripted is not None, f"the merged {name} does not script while its base does"
    _close(_out(scripted, inputs), _out(merged, inputs), 1e-6)


def test_a_merged_generic_network_scripts():
    """The generic family's merged networks are fx GraphModules: torchvision's ResNet-18 scripts."""
    model = torchvision.models.resnet18(num_classes=10).eval()
    inputs = (torch.randn(2, 3, 32, 32),)
    spec = trace(model, inputs)
    merged = merge(apply_plan(model, spec, random_plan(spec, candidates(spec), random.Random(1)))).eval()
    _close(_out(torch.jit.script(merged), inputs), _out(merged, inputs), 1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_torch_export_and_compile(name):
    _, merged, inputs = _merged(name)
    want = _out(merged, inputs)
    exported = torch.export.export(PlainOutput(merged), inputs)
    _close(_out(exported.module(), inputs), want, 1e-6)
    compiled = torch.compile(PlainOutput(merged), backend="aot_eager")  # the compile stack, no C++ build
    _close(_out(compiled, inputs), want, 1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_half_bfloat16_and_channels_last(name):
    _, merged, inputs = _merged(name)
    want = _out(merged, inputs)
    last = merged.to(memory_format=torch.channels_last)
    moved = tuple(x.to(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs)
    _close(_out(last, moved), want, 1e-5)
    for dtype in (torch.bfloat16, torch.float16):  # 8 and 11 significant bits: the same outputs, roughly
        low = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
        got = _out(PlainOutput(merged).to(dtype), low)
        assert torch.isfinite(got).all()
        similarity = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0)
        assert similarity > 0.99, (dtype, float(similarity))
    merged.float()


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_pytorch_in_onnxruntime(name, tmp_path):
    _, merged, inputs = _merged(name)
    record = export_onnx(
        merged, tmp_path / "m.onnx", example_inputs=tuple(x[:1] for x in inputs), dynamic_batch=True
    )
    assert record.checked_batches == (1, 3) and record.relative_error <= record.tolerance
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    feeds = {node.name: x.numpy() for node, x in zip(session.get_inputs(), inputs, strict=True)}
    (got,) = session.run(None, feeds)  # batch 2: the dynamic axis
    _close(torch.from_numpy(got), _out(merged, inputs), 1e-4)


@pytest.mark.parametrize("source", ["timm", "diffusers"])
def test_lmzoo_export_writes_a_checked_file_the_card_and_publish_carry(source, tmp_path):
    directory, _ = random_checkpoint(tmp_path / "entry", source=source, seed=2)
    runner = CliRunner()
    result = runner.invoke(main, ["export", f"local-dir:{directory}", "--opset", "17"])
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.strip() == str(directory / "model.onnx") and "checked in onnxruntime" in result.stderr
    )
    record = json.loads((directory / "onnx.json").read_text())
    assert record["opset"] == 17 and not record["dynamic_batch"] and record["relative_error"] < 1e-4
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    model = lmzoo.load(f"local-dir:{directory}")
    shape = json.loads((directory / "config.json").read_text())["input_shape"]
    x = torch.randn(1, *shape)
    inputs = (x,) if source == "timm" else (x, torch.tensor([7]))
    (got,) = session.run(None, {n.name: t.numpy() for n, t in zip(session.get_inputs(), inputs, strict=True)})
    _close(torch.from_numpy(got), _out(model, inputs), 1e-4)
    mirror = tmp_path / "mirror"
    published = runner.invoke(main, ["publish", f"local-dir:{directory}", "--to-git", str(mirror), "--onnx"])
    assert published.exit_code == 0, published.output
    assert (mirror / "model.onnx").is_file() and (mirror / "onnx.json").is_file()
    card_dir = tmp_path / "card"  # a committed card's records, with this export's record beside them
    shutil.copytree(CARDS / "mobilenetv2-fmnist-layermerge-1.6x", card_dir)
    shutil.copyfile(directory / "onnx.json", card_dir / "onnx.json")
    card = card_from_checkpoint(card_dir)
    assert (
        "`model.onnx` holds the same network in ONNX: `model.onnx` (ONNX opset 17, batch 1) was run" in card
    )
    bad = runner.invoke(main, ["export", f"local-dir:{directory}", "--format", "tflite"])
    assert bad.exit_code == 2 and "'tflite' is not 'onnx'" in bad.output


@pytest.mark.integration  # inductor builds C++ kernels: seconds to minutes
def test_torch_compile_with_inductor():
    _, merged, inputs = _merged("mobilenetv2")
    _close(_out(torch.compile(PlainOutput(merged)), inputs), _out(merged, inputs), 1e-4)
