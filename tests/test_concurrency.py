"""Two processes on one work directory take turns per stage: two `lmzoo tables importance --shard`
processes on a fresh work directory (each needs the base network first) train the base once, the
second reading what the first wrote, and both shards finish."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # two smoke builds side by side


def test_two_shards_on_a_fresh_workdir_train_the_base_once(tmp_path):
    lmzoo = Path(sys.executable).with_name("lmzoo")
    env = {**os.environ, "LMZOO_HOME": str(tmp_path / "store"), "OMP_NUM_THREADS": "1"}
    common = ["tables", "importance", "mobilenetv2-fmnist-layermerge", "--profile", "smoke"]
    common += ["--workdir", str(tmp_path / "work"), "--quiet"]
    processes = [
        subprocess.Popen(
            [str(lmzoo), *common, "--shard", shard],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for shard in ("0/2", "1/2")
    ]
    outputs = [p.communicate(timeout=900) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    errs = [err for _, err in outputs]
    assert sum("is in use by another lmzoo process; waiting for it to finish" in e for e in errs) == 1
    (base,) = (tmp_path / "work" / "mobilenetv2-fmnist-layermerge").glob("base-*")
    assert sorted(p.name for p in base.iterdir()) == [".lock", "metrics.json", "model.safetensors"]
    # the shard that finished first says so; the other assembled the table
    assert sum("done: " in e and "not measured yet" in e for e in errs) <= 1
    tables = list((tmp_path / "work" / "mobilenetv2-fmnist-layermerge").glob("importance-*/importance.json"))
    assert len(tables) == 1
