"""Loading from a real Hub-compatible server: a checkpoint published with `lmzoo publish --to-git`
into an olah mirror directory, served by olah on 127.0.0.1 in offline mode, and loaded through
huggingface_hub by `hf-hub:` name and by zoo name."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from click.testing import CliRunner

import lmzoo
from lmzoo.cli import main
from lmzoo.testing import random_checkpoint

pytestmark = pytest.mark.integration  # smoke builds, torchrun, olah and Ray: the integration tier

ORG = "lmzoo-test"
FAMILY = "tinynet-fmnist-layermerge"
ENTRY = f"{FAMILY}-1.5x"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """An olah server on a free port over an empty mirrors directory; stopped by pid afterwards."""
    olah = Path(sys.executable).with_name("olah-cli")
    if not olah.exists():
        pytest.fail("olah-cli is missing: install the test extra (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("olah")
    mirrors, port = root / "mirrors", _free_port()
    (mirrors / "models").mkdir(parents=True)
    config = root / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'repos-path = "{root / "repos"}"\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f'mirrors-path = ["{mirrors}"]\n'
        "[accessibility]\noffline = true\n"
    )
    with open(root / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(
            [str(olah), "-c", str(config), "--log-path", str(root / "logs")],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.get(url, timeout=2)
            break
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"olah did not start: {(root / 'stderr.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, mirrors
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@pytest.fixture
def hub_env(mirror, tmp_path, monkeypatch):
    from huggingface_hub import constants

    url, mirrors = mirror
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs offline (conftest); not here
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path / "empty-store"))
    return url, mirrors


def _outputs(model):
    with torch.no_grad():
        return model(torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)))


def _publish(directory, mirrors, repo):
    result = CliRunner().invoke(
        main, ["publish", f"local-dir:{directory}", "--to-git", str(mirrors / "models" / ORG / repo)]
    )
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_load_from_a_hub_mirror_by_repo_and_by_zoo_name(hub_env, tmp_path, monkeypatch):
    _, mirrors = hub_env
    directory, merged = random_checkpoint(tmp_path / "built" / ENTRY, name=ENTRY, seed=5)
    (directory / "README.md").write_text("# the test card\n")
    sha = _publish(directory, mirrors, ENTRY)
    expected = _outputs(merged)
    shown = CliRunner().invoke(main, ["show", f"hf-hub:{ORG}/{ENTRY}@{sha}"])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == "# the test card\n\n" and f"loaded hf-hub:{ORG}/{ENTRY}@{sha}" in shown.stderr

    assert torch.equal(_outputs(lmzoo.load(f"hf-hub:{ORG}/{ENTRY}")), expected)
    assert torch.equal(_outputs(lmzoo.load(f"hf-hub:{ORG}/{ENTRY}@{sha}")), expected)

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    shipped = Path(lmzoo.__file__).parent.parent / "recipes" / "mobilenetv2-fmnist-layermerge.yaml"
    text = shipped.read_text().replace("name: mobilenetv2-fmnist-layermerge", f"name: {FAMILY}", 1)
    text = text.replace("speedups: [1.3, 1.6, 2.0]", "speedups: [1.5]")
    assert f"name: {FAMILY}" in text and "speedups: [1.5]" in text
    (recipes / f"{FAMILY}.yaml").write_text(text + f"hub:\n  org: {ORG}\n  revisions:\n    {ENTRY}: {sha}\n")
    monkeypatch.setenv("LMZOO_RECIPES", str(recipes))
    assert lmzoo.zoo.registry()[ENTRY].repo_id == f"{ORG}/{ENTRY}"
    assert torch.equal(_outputs(lmzoo.load(ENTRY)), expected)  # empty store -> the pinned Hub revision

    # A later publish moves main; the zoo name stays on its pinned sha.
    _, other = random_checkpoint(tmp_path / "other" / ENTRY, name=ENTRY, seed=6)
    new_sha = _publish(tmp_path / "other" / ENTRY, mirrors, ENTRY)
    assert new_sha != sha
    assert torch.equal(_outputs(lmzoo.load(ENTRY)), expected)
    assert torch.equal(_outputs(lmzoo.load(f"hf-hub:{ORG}/{ENTRY}")), _outputs(other))

    # A sha-pinned revision in the cache loads with no network: the endpoint is now a dead port.
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_free_port()}")
    assert torch.equal(_outputs(lmzoo.load(f"hf-hub:{ORG}/{ENTRY}@{sha}")), expected)
    with pytest.raises(lmzoo.LmzooError, match="could not be reached"):
        lmzoo.load(f"hf-hub:{ORG}/never-downloaded")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1 at start-up
    assert torch.equal(_outputs(lmzoo.load(ENTRY)), expected)
    with pytest.raises(lmzoo.LmzooError, match="HF_HUB_OFFLINE is set"):
        lmzoo.load(f"hf-hub:{ORG}/never-downloaded")


def test_hub_errors_are_lmzoo_errors(hub_env, tmp_path):
    _, mirrors = hub_env
    with pytest.raises(lmzoo.LmzooError, match="not found"):
        lmzoo.load(f"hf-hub:{ORG}/no-such-repo")
    not_a_checkpoint = mirrors / "models" / ORG / "plain"
    not_a_checkpoint.mkdir(parents=True)
    (not_a_checkpoint / "README.md").write_text("hello\n")
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "x"]):
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
        env["GIT_COMMITTER_EMAIL"] = "t@t"
        subprocess.run(["git", *command], cwd=not_a_checkpoint, check=True, env=env)
    with pytest.raises(lmzoo.LmzooError, match=r"config\.json"):
        lmzoo.load(f"hf-hub:{ORG}/plain")
    shutil.rmtree(not_a_checkpoint)


def test_a_ddpm_checkpoint_loads_as_a_diffusers_pipeline_from_the_hub(hub_env, tmp_path):
    """DDPMPipeline.from_pretrained of the repository's snapshot on the mirror, in a fresh process that
    only imports lmzoo and sets HF_ENDPOINT, as a user would: the merged UNet (lmzoo's class, named in
    model_index.json) and the training schedule. (diffusers takes components of other libraries than
    its own from local directories only, so the snapshot is downloaded first.)"""
    url, mirrors = hub_env
    directory, merged = random_checkpoint(tmp_path / "ddpm", source="diffusers", name="ddpm-entry", seed=7)
    sha = _publish(directory, mirrors, "ddpm-entry")
    x, t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([99])
    torch.save({"x": x, "t": t}, tmp_path / "inputs.pt")
    script = (
        "import sys, torch, lmzoo\n"
        "from diffusers import DDPMPipeline\n"
        "from huggingface_hub import snapshot_download\n"
        f"pipeline = DDPMPipeline.from_pretrained(snapshot_download('{ORG}/ddpm-entry', revision='{sha}'))\n"
        "assert type(pipeline.unet).__name__ == 'LayerMergeUNet2DModel'\n"
        "assert pipeline.scheduler.config['beta_end'] == 0.02\n"
        "inputs = torch.load(sys.argv[1])\n"
        "with torch.no_grad():\n"
        "    out = pipeline.unet(inputs['x'], inputs['t']).sample\n"
        "torch.save({'out': out, 'state': pipeline.unet.state_dict()}, sys.argv[2])\n"
    )
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-c", script, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = torch.load(tmp_path / "out.pt")
    state = {k.removeprefix("unet."): v for k, v in saved["state"].items()}
    own = {k.removeprefix("unet."): v for k, v in merged.state_dict().items()}
    assert state.keys() == own.keys() and all(torch.equal(state[k], own[k]) for k in own)  # bit for bit
    with torch.no_grad():  # the same function, up to the kernels another process picks (rounding)
        torch.testing.assert_close(saved["out"], merged(x, t).sample, rtol=1e-5, atol=1e-6)


def test_info_and_card_read_a_hub_repository(hub_env, tmp_path):
    """`lmzoo info` and `lmzoo card` take hf-hub: names as show and load do (the records only are
    downloaded: no weights)."""
    _, mirrors = hub_env
    committed = Path(__file__).resolve().parent.parent / "cards" / "resnet34-fmnist-layermerge-1.6x"
    published = tmp_path / "published"
    shutil.copytree(committed, published)
    (published / "model.safetensors").write_bytes(b"weights are not downloaded for a card")
    sha = _publish(published, mirrors, "resnet34-card")
    runner = CliRunner()
    info = runner.invoke(main, ["info", f"hf-hub:{ORG}/resnet34-card@{sha}", "--json"])
    assert info.exit_code == 0, info.output
    record = json.loads(info.stdout)
    assert record["method"] == "layermerge" and record["test"]["accuracy"] > 80
    card = runner.invoke(main, ["card", f"hf-hub:{ORG}/resnet34-card", "--revision", sha])
    assert card.exit_code == 0, card.output
    assert card.stdout == (committed / "README.md").read_text() + "\n"
    snapshot = Path(record["local_path"])
    assert not (snapshot / "model.safetensors").exists() and (snapshot / "plan.json").is_file()
