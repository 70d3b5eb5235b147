"""Nothing lost, nothing half-written, one clear line: what a clumsy or hostile user does to the
store, the mirrors and the names, and what lmzoo does about it."""

import os
import subprocess

import pytest
from click.testing import CliRunner

import lmzoo
from lmzoo.cli import main
from lmzoo.testing import random_checkpoint


def _git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@u", "GIT_COMMITTER_NAME": "u"}
    env["GIT_COMMITTER_EMAIL"] = "u@u"
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    ).stdout


def _publish(directory, target, *more):
    return CliRunner().invoke(main, ["publish", f"local-dir:{directory}", "--to-git", str(target), *more])


@pytest.fixture
def checkpoint(tmp_path):
    return random_checkpoint(tmp_path / "test-entry", seed=3)[0]


def test_publishing_to_git_never_destroys_what_is_there(checkpoint, tmp_path):
    # a directory of other files
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    result = _publish(checkpoint, folder)
    assert result.exit_code == 1 and "is not empty and not a git mirror" in result.stderr
    assert os.listdir(folder) == ["precious.txt"] and (folder / "precious.txt").read_text() == "keep me"
    # somebody else's repository, with a tracked file and uncommitted work
    other = tmp_path / "other"
    other.mkdir()
    _git(other, "init", "-q", "-b", "main")
    (other / "tracked.txt").write_text("v1")
    _git(other, "add", "tracked.txt")
    _git(other, "commit", "-q", "-m", "mine")
    (other / "draft.txt").write_text("not committed")
    result = _publish(checkpoint, other)
    assert result.exit_code == 1 and "whose last commit is not 'lmzoo: publish test-entry'" in result.stderr
    assert sorted(os.listdir(other)) == [".git", "draft.txt", "tracked.txt"]
    assert _git(other, "rev-list", "--count", "HEAD").strip() == "1"
    # our own mirror with uncommitted changes
    mirror = tmp_path / "mirror"
    assert _publish(checkpoint, mirror).exit_code == 0
    (mirror / "notes.txt").write_text("mine")
    result = _publish(checkpoint, mirror)
    assert result.exit_code == 1 and "has uncommitted changes" in result.stderr
    assert (mirror / "notes.txt").read_text() == "mine"
    # a path that climbs out of the mirrors
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data").write_text("x")
    result = _publish(checkpoint, tmp_path / "mirrors" / "models" / ".." / ".." / "victim")
    assert result.exit_code == 1 and "climbs out with '..'" in result.stderr
    assert os.listdir(victim) == ["data"] and not (tmp_path / "mirrors").exists()
    # an empty directory is fine, and so is publishing again (the previous files replaced)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _publish(checkpoint, empty).exit_code == 0 and _publish(checkpoint, empty).exit_code == 0


def test_links_out_of_a_checkpoint_are_never_followed(checkpoint, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    (checkpoint / "passwd").symlink_to("/etc/passwd")
    result = _publish(checkpoint, tmp_path / "mirror")
    assert result.exit_code == 1 and "is a link to /etc/passwd" in result.stderr
    assert not (tmp_path / "mirror").exists()
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda *a, **k: calls.append("create_repo"))
    result = CliRunner().invoke(main, ["publish", f"local-dir:{checkpoint}", "--repo-id", "org/repo"])
    assert result.exit_code == 1 and "lmzoo copies regular files only" in result.stderr and not calls
    (checkpoint / "passwd").unlink()
    os.mkfifo(checkpoint / "pipe")
    result = _publish(checkpoint, tmp_path / "mirror")
    assert result.exit_code == 1 and "is not a regular file" in result.stderr


@pytest.mark.parametrize(
    "name",
    ["../../outside", "/etc", ".crash-entry.tmp-1-x", "a/b", "x" * 10_000, "..", "entry\n", ""],
    ids=["parent", "absolute", "hidden", "slash", "long", "dots", "newline", "empty"],
)
def test_a_zoo_name_is_a_name_never_a_path(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path))
    with pytest.raises(lmzoo.InvalidArgumentError, match="is not a zoo entry name") as raised:
        lmzoo.load(name)
    assert "local-dir:PATH" in str(raised.value) and len(str(raised.value)) < 400
    result = CliRunner().invoke(main, ["info", name])
    assert result.exit_code == 1 and "Traceback" not in result.output


def _rewrite_weights(directory, change):
    """Rewrite a checkpoint's weights with ``change`` applied, and its digests to match (what a
    careless tool that recomputes digests would leave): the checks behind the digests must catch it."""
    import json

    from safetensors.torch import load_file, save_file

    from lmzoo.checkpoint import with_integrity

    weights = directory / "model.safetensors"
    save_file(change(load_file(weights)), str(weights))
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(with_integrity(config, weights)))


def test_a_checkpoint_loads_only_as_it_was_written(tmp_path, monkeypatch):
    """The digests written with a checkpoint find a flipped byte in the weights and an edited plan;
    NaN or infinite weights and weights of another dtype are refused whatever the digests say."""
    import json

    import torch

    from lmzoo.checkpoint import CheckpointError

    directory, merged = random_checkpoint(tmp_path / "entry", seed=3)
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is not the file written with its config"):
        lmzoo.load(f"local-dir:{directory}")
    assert lmzoo.load(f"local-dir:{directory}", verify=False) is not None  # the documented opt-out
    monkeypatch.setenv("LMZOO_VERIFY", "0")
    assert lmzoo.load(f"local-dir:{directory}") is not None
    monkeypatch.delenv("LMZOO_VERIFY")

    directory, _ = random_checkpoint(tmp_path / "plan", seed=3)
    config = json.loads((directory / "config.json").read_text())
    config["plan"]["blocks"][0]["kept"] = []  # the plan no longer matches the weights' network
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="was changed after it was written"):
        lmzoo.load(f"local-dir:{directory}")

    directory, _ = random_checkpoint(tmp_path / "nan", seed=3)
    first = None

    def poison(state):
        nonlocal first
        first = next(k for k, v in state.items() if v.is_floating_point())
        state[first][...] = float("nan")
        return state

    _rewrite_weights(directory, poison)
    with pytest.raises(CheckpointError, match="NaN or infinite values"):
        lmzoo.load(f"local-dir:{directory}")

    directory, _ = random_checkpoint(tmp_path / "half", seed=3)
    _rewrite_weights(
        directory, lambda state: {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    )
    with pytest.raises(CheckpointError, match="wrong dtype"):
        lmzoo.load(f"local-dir:{directory}")
    assert torch.isfinite(next(merged.parameters())).all()


def _replace(path, make):
    path.unlink()
    make(path)


def _edit_config(directory, change):
    import json

    config = json.loads((directory / "config.json").read_text())
    change(config)
    (directory / "config.json").write_text(json.dumps(config))


HOSTILE_CHECKPOINTS = {
    "config link out": (
        lambda d, out: _replace(d / "config.json", lambda p: p.symlink_to(out / "config.json")),
        "is a link to .* outside",
    ),
    "config /dev/zero": (
        lambda d, out: _replace(d / "config.json", lambda p: p.symlink_to("/dev/zero")),
        "is a link to /dev/zero",
    ),
    "config FIFO": (lambda d, out: _replace(d / "config.json", os.mkfifo), "is not a regular file"),
    "weights FIFO": (lambda d, out: _replace(d / "model.safetensors", os.mkfifo), "is not a regular file"),
    "weights link out": (
        lambda d, out: _replace(d / "model.safetensors", lambda p: p.symlink_to(out / "model.safetensors")),
        "is a link to .* outside",
    ),
    "nested JSON": (
        lambda d, out: (d / "config.json").write_text("[" * 100_000 + "]" * 100_000),
        "nested too deeply",
    ),
    "huge input side": (
        lambda d, out: _edit_config(d, lambda c: c.update(input_shape=[1, 4_194_304, 1])),
        "'input_shape' must be",
    ),
    "hub architecture": (
        lambda d, out: _edit_config(d, lambda c: c["base"].update(arch="hf-hub:timm/resnet18.a1_in1k")),
        "names a place to fetch an architecture from",
    ),
    "config huge": (
        lambda d, out: (d / "config.json").write_bytes(b" " * (2 << 20)),
        "more than the .* an lmzoo file can be",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CHECKPOINTS))
def test_a_hostile_checkpoint_is_one_clear_error_read_from_nowhere_else(case, tmp_path):
    """Links leading out, FIFOs, devices, deep nesting, absurd shapes and Hub references in a
    checkpoint are refused before anything is read from them or built (each case would otherwise
    hang, read another file, exhaust memory, trace for minutes or contact the Hub)."""
    import time

    from lmzoo.checkpoint import CheckpointError

    directory, _ = random_checkpoint(tmp_path / "entry", seed=3)
    outside, _ = random_checkpoint(tmp_path / "outside", seed=4)
    damage, message = HOSTILE_CHECKPOINTS[case]
    damage(directory, outside)
    start = time.monotonic()
    for verify in (True, False):
        with pytest.raises(CheckpointError, match=message):
            lmzoo.load(f"local-dir:{directory}", verify=verify)
    result = CliRunner().invoke(main, ["card", f"local-dir:{directory}"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert time.monotonic() - start < 10


def test_a_hub_snapshot_links_into_its_cache_and_a_long_path_is_refused(tmp_path):
    """The Hub cache's layout (snapshot files are links into the repository's blobs/) loads; a path
    the system refuses is one error, not an OSError."""
    import shutil

    import torch

    from lmzoo.checkpoint import CheckpointError

    directory, merged = random_checkpoint(tmp_path / "entry", seed=3)
    repo = tmp_path / "hub" / "models--org--entry"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(directory / name, repo / "blobs" / name)
        (snapshot / name).symlink_to(f"../../blobs/{name}")
    model = lmzoo.load(f"local-dir:{snapshot}")
    for ours, theirs in zip(model.state_dict().values(), merged.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)
    with pytest.raises(CheckpointError, match="File name too long") as raised:
        lmzoo.load("local-dir:" + "a" * 10_000)
    assert len(str(raised.value)) < 400
    result = CliRunner().invoke(main, ["info", "local-dir:" + "a" * 10_000])
    assert result.exit_code == 1 and len(result.stderr) < 400


def test_the_public_api_refuses_what_it_cannot_mean(tmp_path):
    """Each of these escaped as a TypeError, OverflowError or ValueError, hung, or was accepted."""
    import random
    import time

    import torch

    from lmzoo.core import solver
    from lmzoo.core.candidates import Candidate, candidates
    from lmzoo.core.plan import PLAN_FORMAT, Plan
    from lmzoo.engine import apply_plan, trace
    from lmzoo.tables import ImportanceTable, LatencyTable
    from lmzoo.testing import TINY_MODELS, random_plan

    for fields in ((0, 1, -3, 1, False, (1,)), (0, 1, 3, 0, False, (1,)), ("0", 1, 3, 1, False, (1,))):
        with pytest.raises(lmzoo.InvalidPlanError):
            Candidate(*fields)
    with pytest.raises(lmzoo.InvalidPlanError, match="kept units are a tuple of integers"):
        Candidate(0, 1, 3, 1, False, "1")
    blocks = [
        {"start": i, "end": i + 1, "kernel": 3, "stride": 1, "depthwise": False, "kept": [i + 1]}
        for i in range(10**6)
    ]
    start = time.monotonic()
    with pytest.raises(lmzoo.InvalidPlanError, match="a network has at most 10000 positions"):
        Plan.from_dict({"format": PLAN_FORMAT, "length": 10**6, "blocks": blocks})
    assert time.monotonic() - start < 1

    tiny = TINY_MODELS["resnet-basic"]
    model = tiny.build().eval()
    spec = trace(model, tiny.inputs(1, torch.float32))
    cands = candidates(spec)
    latency = LatencyTable({c: 0.1 + 0.01 * i for i, c in enumerate(cands)}, spec=spec, fixed_ms=1.0)
    importance = ImportanceTable({c: 0.5 for c in cands}, spec=spec)
    with pytest.raises(lmzoo.InvalidInputError, match="larger than 2048 per side"):
        trace(model, torch.randn(1, 3, 4096, 8))
    with pytest.raises(lmzoo.InvalidSpecError):
        apply_plan(model, None, random_plan(spec, cands, random.Random(0)))
    for value in (1e308, 1e-320):
        with pytest.raises(lmzoo.InvalidTableError):
            LatencyTable(dict.fromkeys(cands, value), spec=spec)
    with pytest.raises(lmzoo.InvalidTableError):
        ImportanceTable(dict.fromkeys(cands, 1e308), spec=spec)
    with pytest.raises(lmzoo.InvalidArgumentError, match="levels must be an integer from 1 to 100,000"):
        solver.solve(latency, importance, speedup=1.2, levels=10**7)
    with pytest.raises(lmzoo.InfeasibleBudgetError, match="the fastest plan takes"):
        solver.solve(latency, importance, budget_ms=1e-300)
    fastest = solver.solve_reachable(latency, importance, speedup=50.0, levels=100)[0]
    for levels in (1, 2):  # a grid too coarse for any plan: the fastest plan all the same
        plan, reachable = solver.solve_reachable(latency, importance, speedup=50.0, levels=levels)
        assert latency.chain_ms(plan) <= latency.chain_ms(fastest) and 1 < reachable < 50
    free = LatencyTable(dict.fromkeys(cands, 0.0), spec=spec, fixed_ms=1.0)
    plan, _ = solver.solve_reachable(free, importance, speedup=50.0)
    assert free.chain_ms(plan) == 0


def test_incomplete_records_are_left_out_of_results_and_cards_say_why(tmp_path):
    import json

    from lmzoo.records import Evaluation, RecordError
    from lmzoo.results import results_rows

    directory, _ = random_checkpoint(tmp_path / "entry", seed=3)
    (directory / "evaluation.json").write_text(
        json.dumps({"format": Evaluation.FORMAT, "task": "classification"})
    )
    (directory / "plan.json").write_text("{}")
    (directory / "recipe.yaml").write_text("name: x\n")
    with pytest.warns(UserWarning, match="is left out of the results: .*malformed evaluation"):
        assert results_rows([directory]) == []
    result = CliRunner().invoke(main, ["card", f"local-dir:{directory}"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    with pytest.raises(RecordError, match="must hold a finite 'accuracy'"):
        Evaluation.from_dict({"task": "classification", "test": {"loss": 1.0}, "base_test": {}})


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--repo-id", "org/repo..", "--repo-id must be ORG/REPO"), ("--tag", "a..b", "--tag must be letters")],
)
def test_publish_refuses_invalid_hub_names_before_contacting_anything(
    checkpoint, monkeypatch, option, value, message
):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda *a, **k: calls.append("create_repo"))
    args = ["publish", f"local-dir:{checkpoint}", "--repo-id", "org/repo", option, value]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and message in result.stderr and not calls


def test_an_evaluation_read_back_is_written_back_byte_for_byte(tmp_path):
    """A cached evaluation record goes into every rebuilt checkpoint: integer metrics (an example
    count) stay integers, so a rebuild from the cache rewrites no committed card file."""
    import json

    from lmzoo.records import Evaluation
    from tests.test_committed_cards import CARDS

    source = CARDS / "resnet34-fmnist-layermerge-2x" / "evaluation.json"
    Evaluation.load(source).save(tmp_path / "evaluation.json")
    assert (tmp_path / "evaluation.json").read_text() == source.read_text()
    assert json.loads(source.read_text())["test"]["heldout"] == 10000
