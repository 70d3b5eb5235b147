"""The zoo: registry, local store, checkpoint loading (strict, safe, one error type), `lmzoo list / info
/ publish`, with checkpoints made from random weights."""

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmzoo
from lmzoo.checkpoint import CheckpointError, load_checkpoint
from lmzoo.cli import main
from lmzoo.testing import random_checkpoint

ENTRY = "mobilenetv2-fmnist-layermerge-1.6x"


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("store") / "test-entry", source="timm", seed=3)


def _outputs(model, source):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if source == "timm":
            return model(torch.randn(4, 1, 32, 32, generator=g))
        return model(torch.randn(2, 3, 16, 16, generator=g), torch.tensor([3, 700])).sample


@pytest.mark.parametrize("source", ["timm", "diffusers"])
def test_save_then_load_is_bit_exact(tmp_path, source):
    directory, merged = random_checkpoint(tmp_path / "entry", source=source, seed=1)
    loaded = load_checkpoint(directory)
    assert not loaded.training
    assert torch.equal(_outputs(merged, source), _outputs(loaded, source))
    state = getattr(loaded, "unet", loaded).state_dict()
    assert merged.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in merged.state_dict().items())


def test_a_merged_unet_loads_as_its_own_diffusers_class(tmp_path):
    from diffusers import ConfigMixin, DDPMPipeline, DDPMScheduler, ModelMixin, UNet2DModel

    from lmzoo.sources.diffusers.unet import LayerMergeUNet2DModel

    directory, merged = random_checkpoint(tmp_path / "unet", source="diffusers")
    model = lmzoo.load(f"local-dir:{directory}")
    assert type(model) is LayerMergeUNet2DModel and not isinstance(model, UNet2DModel)
    assert isinstance(model, ModelMixin) and isinstance(model, ConfigMixin)
    config = json.loads((directory / "config.json").read_text())
    assert model.config.plan == config["plan"] and model.config.base_config["block_out_channels"] == [16, 32]
    assert model.config.sample_size == 16 and model.config.in_channels == 3
    out = model(sample=torch.zeros(1, 3, 16, 16), timestep=5, return_dict=False)  # UNet2DModel's signature
    assert isinstance(out, tuple) and out[0].shape == (1, 3, 16, 16)
    # diffusers' own save/load round-trips it (the structure is rebuilt from the config and the plan)
    model.save_pretrained(tmp_path / "diffusers")
    again = LayerMergeUNet2DModel.from_pretrained(tmp_path / "diffusers", low_cpu_mem_usage=False).eval()
    assert torch.equal(_outputs(again, "diffusers"), _outputs(merged, "diffusers"))
    # and a diffusers pipeline drives it like a UNet2DModel
    pipeline = DDPMPipeline(unet=model, scheduler=DDPMScheduler(num_train_timesteps=20))
    images = pipeline(
        batch_size=1, num_inference_steps=2, output_type="np", generator=torch.manual_seed(0)
    ).images
    assert images.shape == (1, 16, 16, 3)


def test_zoo_names_resolve_local_store_first(timm_checkpoint, monkeypatch):
    directory, merged = timm_checkpoint
    monkeypatch.setenv("LMZOO_HOME", str(directory.parent))
    assert "test-entry" in lmzoo.list_models() and lmzoo.list_models("test-*") == ["test-entry"]
    assert ENTRY in lmzoo.list_models("mobilenetv2-fmnist-*")
    assert torch.equal(_outputs(lmzoo.load("test-entry"), "timm"), _outputs(merged, "timm"))


def test_load_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path))
    with pytest.raises(
        lmzoo.LmzooError, match=rf"not built .* not published; build it with `lmzoo build {ENTRY}`"
    ):
        lmzoo.load(ENTRY)
    with pytest.raises(lmzoo.LmzooError, match=f"did you mean {ENTRY}"):
        lmzoo.load("mobilenetv2-fmnist-layermerg-1.6x")
    with pytest.raises(lmzoo.LmzooError, match="hf-hub:ORG/REPO"):
        lmzoo.load("hf-hub:not a repo")
    with pytest.raises(lmzoo.LmzooError, match=r"no config\.json"):
        lmzoo.load(f"local-dir:{tmp_path}")


def _copy(directory, target):
    target.mkdir()
    for name in ("config.json", "model.safetensors"):
        (target / name).write_bytes((directory / name).read_bytes())
    return target


def _edit_config(directory, edit):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
            "corrupted",
        ),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64), "corrupted"),
        (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
        (lambda d: (d / "config.json").write_text("{not json"), "not a valid JSON"),
        (lambda d: (d / "config.json").write_text('{"format": NaN}'), "not a valid JSON"),
        (lambda d: _edit_config(d, lambda c: c.update(input_shape="32x32")), "input_shape"),
        (lambda d: _edit_config(d, lambda c: c["base"].update(arch="no_such_net")), "not a timm model name"),
        (lambda d: _edit_config(d, lambda c: c["base"].update(source="keras")), "base.source"),
        (
            lambda d: _edit_config(d, lambda c: c["base"].update(arch="hf-hub:org/net")),
            "a place to fetch an architecture from",
        ),
        (
            lambda d: _edit_config(
                d,
                lambda c: c.update(
                    format="lmzoo.checkpoint/1", base={"family": "keras", "arch": "x", "kwargs": {}}
                ),
            ),
            "unknown model family",
        ),
        (lambda d: _edit_config(d, lambda c: c["base"]["kwargs"].update(num_classes=7)), "does not match"),
        (lambda d: _edit_config(d, lambda c: c["plan"]["blocks"].pop()), "plan does not fit"),
        (
            lambda d: _edit_config(d, lambda c: c.update(spec_fingerprint="0" * 16)),
            "traces to another network",
        ),
    ],
)
def test_bad_checkpoints_fail_with_one_error_type(timm_checkpoint, tmp_path, damage, message):
    """What the loader checks beyond the digests (checkpoints written before them have none): with
    the digests checked, each of these is first reported as a changed file."""
    broken = _copy(timm_checkpoint[0], tmp_path / "broken")
    damage(broken)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(broken, verify=False)
    with pytest.raises(CheckpointError):
        load_checkpoint(broken)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 70)
    | st.floats(allow_nan=False, width=32)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_configs_raise_only_lmzoo_errors(timm_checkpoint, tmp_path_factory, data):
    """Any mutation of a valid config.json (a value replaced, a key dropped or added) either still
    loads a network or raises CheckpointError; nothing else escapes."""
    directory = timm_checkpoint[0]
    config = json.loads((directory / "config.json").read_text())
    paths = [p for p in _paths(config) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = config
        for key in path[:-1]:
            parent = parent[key] if isinstance(parent, (dict, list)) and _has(parent, key) else None
            if parent is None:
                break
        if parent is None or not _has(parent, path[-1]):
            continue
        action = data.draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = data.draw(JSON)
        elif action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(max_size=8))] = data.draw(JSON)
    target = tmp_path_factory.mktemp("fuzz")
    (target / "config.json").write_text(json.dumps(config))
    (target / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    with contextlib.suppress(CheckpointError):  # the digests off too: the structural checks behind them
        load_checkpoint(target, verify=data.draw(st.booleans()))


def _has(container, key):
    return key in container if isinstance(container, dict) else isinstance(key, int) and key < len(container)


def test_list_and_info(timm_checkpoint, monkeypatch):
    directory, _ = timm_checkpoint
    monkeypatch.setenv("LMZOO_HOME", str(directory.parent))
    runner = CliRunner()
    listed = runner.invoke(main, ["list", "mobilenetv2-fmnist-*", "--json"])
    assert listed.exit_code == 0, listed.output
    records = json.loads(listed.stdout)
    assert [r["name"] for r in records] == lmzoo.list_models("mobilenetv2-fmnist-*")
    one = next(r for r in records if r["name"] == ENTRY)
    assert one["target_speedup"] == 1.6 and one["dataset"] == "fashion-mnist" and one["local_path"] is None
    text = runner.invoke(main, ["list"])
    assert "test-entry" in text.stdout and "built" in text.stdout and "recipe only" in text.stdout
    info = runner.invoke(main, ["info", ENTRY, "--json"])
    assert json.loads(info.stdout)["arch"] == "mobilenetv2_100"
    built = runner.invoke(main, ["info", "test-entry"])
    assert built.exit_code == 0 and str(directory) in built.stdout
    unknown = runner.invoke(main, ["info", "mobilenetv2-fmnist-layermerge-1.7x"])
    assert unknown.exit_code == 1 and "did you mean" in unknown.stderr and "Traceback" not in unknown.output


def test_publish_to_git_commits_plain_blobs_and_tags_and_can_be_repeated(tmp_path):
    directory, _ = random_checkpoint(tmp_path / "test-entry", seed=3)
    mirror = tmp_path / "models" / "org" / "repo"
    runner = CliRunner()

    def publish(*args):
        return runner.invoke(main, ["publish", f"local-dir:{directory}", "--to-git", str(mirror), *args])

    first = publish("--tag", "v1")
    assert first.exit_code == 0, first.output
    sha = first.stdout.strip()

    def git(*args):
        return subprocess.run(["git", *args], cwd=mirror, capture_output=True, text=True, check=True).stdout

    assert (
        len(sha) == 40
        and git("rev-parse", "HEAD").strip() == sha
        and git("rev-parse", "v1^{commit}").strip() == sha
    )
    assert sorted(git("ls-files").split()) == ["config.json", "model.safetensors"]
    blob = subprocess.run(
        ["git", "show", "HEAD:model.safetensors"], cwd=mirror, capture_output=True, check=True
    )
    assert blob.stdout == (directory / "model.safetensors").read_bytes()  # a plain blob, not an LFS pointer
    # repeated: unchanged files make no new commit, the same tag is already there, a new one is added
    for args in (("--tag", "v1"), ("--tag", "v2"), ()):
        again = publish(*args)
        assert again.exit_code == 0 and again.stdout.strip() == sha, again.output
        assert "no new commit" in again.stderr
    assert git("rev-list", "--count", "HEAD").strip() == "1"
    assert (
        git("rev-parse", "v2^{commit}").strip()
        == git("rev-parse", f"lmzoo-{lmzoo.__version__}").strip()
        == sha
    )
    # a changed checkpoint: a new commit; a taken tag is refused (the commit reported), moved on request
    random_checkpoint(directory, seed=5)
    taken = publish("--tag", "v1")
    assert taken.exit_code == 1 and "Traceback" not in taken.output
    new_sha = git("rev-parse", "HEAD").strip()
    assert (
        new_sha != sha
        and f"as {new_sha}, but not tagged: the tag v1 already names commit {sha[:12]}" in taken.stderr
    )
    moved = publish("--tag", "v1", "--move-tag")
    assert moved.exit_code == 0 and moved.stdout.strip() == new_sha == git("rev-parse", "v1^{commit}").strip()
    versioned = publish()  # the default tag names the first commit: versioned per commit instead
    assert versioned.exit_code == 0 and f"tagged lmzoo-{lmzoo.__version__}-{new_sha[:10]}" in versioned.stderr
    assert git("rev-parse", f"lmzoo-{lmzoo.__version__}").strip() == sha
    both = runner.invoke(
        main, ["publish", f"local-dir:{directory}", "--to-git", str(mirror), "--repo-id", "a/b"]
    )
    assert both.exit_code == 1 and "exactly one" in both.stderr


def test_publish_to_hub_is_one_commit_and_a_tag_and_can_be_repeated(tmp_path, monkeypatch):
    """Wiring of `lmzoo publish --repo-id` to huggingface_hub (the Hub itself is out of reach here; a
    repository's head and tags are kept in memory): one upload_folder commit of the checkpoint
    directory, a tag on that commit, the sha printed, the token never printed; a re-publish of
    unchanged files keeps the commit and its tag; a taken tag fails after the commit, saying so."""
    from huggingface_hub import CommitInfo, GitRefInfo, GitRefs, HfApi

    directory, _ = random_checkpoint(tmp_path / "test-entry", seed=3)
    calls = []
    repo = {"head": "0" * 40, "tags": {}, "next": "a"}
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", kwargs))
        content = (directory / "model.safetensors").read_bytes()
        if repo.get("content") != content:  # unchanged files make no commit, as the Hub does
            repo["content"], repo["head"] = content, repo["next"] * 40
        return CommitInfo(
            commit_url="https://huggingface.co/org/repo/commit/" + repo["head"],
            commit_message="m",
            commit_description="",
            oid=repo["head"],
            pr_url=None,
        )

    def refs(self, repo_id, **kw):
        tags = [GitRefInfo(name=t, ref=f"refs/tags/{t}", target_commit=c) for t, c in repo["tags"].items()]
        return GitRefs(branches=[], converts=[], tags=tags)

    def create_tag(self, repo_id, *, tag, revision, **kw):
        calls.append(("create_tag", tag, revision))
        assert tag not in repo["tags"], "409: the tag exists"
        repo["tags"][tag] = revision

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create_repo",)))
    monkeypatch.setattr(
        HfApi, "repo_info", lambda self, repo_id, **kw: type("Info", (), {"sha": repo["head"]})
    )
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(HfApi, "list_repo_refs", refs)
    monkeypatch.setattr(HfApi, "create_tag", create_tag)
    monkeypatch.setattr(HfApi, "delete_tag", lambda self, repo_id, *, tag, **kw: repo["tags"].pop(tag))

    def publish(*args):
        return CliRunner().invoke(main, ["publish", f"local-dir:{directory}", "--repo-id", "org/repo", *args])

    result = publish("--tag", "t1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "a" * 40 and "hf_secret" not in result.output
    assert [c[0] for c in calls] == ["create_repo", "upload_folder", "create_tag"]
    assert calls[1][1]["folder_path"] == directory and calls[1][1]["repo_id"] == "org/repo"
    assert calls[2][1:] == ("t1", "a" * 40) and "a new commit" in result.stderr
    calls.clear()
    again = publish("--tag", "t1")
    assert again.exit_code == 0 and again.stdout.strip() == "a" * 40 and "no new commit" in again.stderr
    assert "create_tag" not in [c[0] for c in calls]
    random_checkpoint(directory, seed=5)
    repo["next"] = "b"
    taken = publish("--tag", "t1")
    assert taken.exit_code == 1 and "Traceback" not in taken.output
    assert f"as commit {'b' * 40}, but not tagged: the tag t1 already names commit {'a' * 12}" in taken.stderr
    moved = publish("--tag", "t1", "--move-tag")
    assert moved.exit_code == 0 and repo["tags"]["t1"] == "b" * 40


def test_publishing_without_a_network_is_one_line_saying_nothing_was_committed(timm_checkpoint, monkeypatch):
    """A real connection to a closed port: no traceback, one line naming what was not uploaded."""
    import socket

    from huggingface_hub import constants

    directory, _ = timm_checkpoint
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the suite runs offline (conftest)
    offline = CliRunner().invoke(main, ["publish", f"local-dir:{directory}", "--repo-id", "org/repo"])
    assert offline.exit_code == 1 and "nothing was committed: HF_HUB_OFFLINE is set" in offline.stderr
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    result = CliRunner().invoke(main, ["publish", f"local-dir:{directory}", "--repo-id", "org/repo"])
    assert result.exit_code == 1 and "Traceback" not in result.output and "hf_secret" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert "publishing test-entry to org/repo on http://127.0.0.1" in line
    assert "failed, nothing was committed: the Hub could not be reached (ConnectError" in line


def test_baseline_entries_are_zoo_entries(tmp_path, monkeypatch):
    """The baselines the cards show (<stem>-depth-, -layer-, -layermerge-union-) are listed, inspected
    and loaded like LayerMerge's entries, and filtered by method."""
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path))
    depth = lmzoo.list_models("resnet34-fmnist-*", method="depth")
    assert depth == ["resnet34-fmnist-depth-1.05x"]  # the recipe's solve.method_speedups.depth
    assert "mobilenetv2-fmnist-layermerge-union-1.6x" in lmzoo.list_models(method="layermerge-union")
    runner = CliRunner()
    listed = runner.invoke(main, ["list", "resnet34-fmnist-*", "--method", "layer"])
    assert listed.exit_code == 0 and len(listed.stdout.splitlines()) == 4
    assert all(" layer " in line and "recipe only" in line for line in listed.stdout.splitlines())
    record = json.loads(runner.invoke(main, ["info", "resnet34-fmnist-layer-1.6x", "--json"]).stdout)
    assert (record["method"], record["recipe"], record["target_speedup"]) == (
        "layer",
        "resnet34-fmnist-layermerge",
        1.6,
    )
    with pytest.raises(lmzoo.LmzooError, match=r"build it with `lmzoo build resnet34-fmnist-layer-1\.6x`"):
        lmzoo.load("resnet34-fmnist-layer-1.6x")
    random_checkpoint(tmp_path / "resnet34-fmnist-depth-2x", name="resnet34-fmnist-depth-2x")
    assert lmzoo.load("resnet34-fmnist-depth-2x") is not None


def test_a_profile_build_is_marked_everywhere_and_not_published_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path))
    name = f"{ENTRY}-smoke"
    random_checkpoint(tmp_path / name, name=name, profile="smoke")
    runner = CliRunner()
    listed = runner.invoke(main, ["list", "mobilenetv2-fmnist-layermerge-1.6x*"])
    lines = dict(line.split(maxsplit=1) for line in listed.stdout.splitlines())
    assert "smoke profile: not the zoo entry" in lines[name] and "recipe only" in lines[ENTRY]
    assert json.loads(runner.invoke(main, ["info", name, "--json"]).stdout)["profile"] == "smoke"
    with pytest.warns(lmzoo.ProfileBuildWarning, match=f"{name} was built with the recipe's 'smoke' profile"):
        lmzoo.load(name)
    refused = runner.invoke(main, ["publish", name, "--to-git", str(tmp_path / "mirror")])
    assert refused.exit_code == 1 and "pass --allow-profile" in refused.stderr
    assert not (tmp_path / "mirror").exists()
    allowed = runner.invoke(main, ["publish", name, "--to-git", str(tmp_path / "mirror"), "--allow-profile"])
    assert allowed.exit_code == 0, allowed.output


def test_an_absent_device_is_one_error_before_loading(timm_checkpoint, monkeypatch):
    directory, _ = timm_checkpoint
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(lmzoo.DeviceUnavailableError, match="CUDA is not available here"):
        lmzoo.load(f"local-dir:{directory}", device="cuda")
    with pytest.raises(lmzoo.InvalidArgumentError, match="unknown device 'tpu'"):
        lmzoo.load(f"local-dir:{directory}", device="tpu")
    result = CliRunner().invoke(main, ["show", f"local-dir:{directory}"])
    assert result.exit_code == 0


def test_info_and_card_take_local_dir_names(tmp_path):
    directory, _ = random_checkpoint(tmp_path / "entry", name="test-entry")
    runner = CliRunner()
    record = json.loads(runner.invoke(main, ["info", f"local-dir:{directory}", "--json"]).stdout)
    assert record["local_path"] == str(directory) and record["profile"] == "default"
    committed = Path(__file__).resolve().parent.parent / "cards" / ENTRY
    copy = tmp_path / "card"
    shutil.copytree(committed, copy)
    (copy / "README.md").write_text("stale")
    card = runner.invoke(main, ["card", f"local-dir:{copy}", "--out", str(tmp_path / "mirror")])
    assert card.exit_code == 0, card.output
    expected = (committed / "README.md").read_text()
    assert (tmp_path / "mirror" / "README.md").read_text() == expected == (copy / "README.md").read_text()
