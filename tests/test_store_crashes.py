"""The store under crashes: a writer killed (``os._exit``, no clean-up runs) at every step of writing
a checkpoint over an existing entry leaves the store holding the old entry or the new one, whole;
what it left is never listed or loaded, and the next reader cleans it. Both ways of putting the new
directory in place are tried: the atomic swap, and the rename through ``.NAME.old`` used where the
file system cannot swap."""

import os
import subprocess
import sys

import pytest
import torch

import lmzoo
from lmzoo.store import built_entries
from lmzoo.testing import random_checkpoint

pytestmark = pytest.mark.integration  # a fresh process per crash: about a minute per way

NAME = "crash-entry"

#: the child: write a checkpoint over the entry, dying at the n-th step of the writer (each call of
#: the functions that touch the disk, before and after it)
CHILD = """
import os, shutil, sys
import lmzoo.checkpoint as checkpoint, lmzoo.files as files
import safetensors.torch
from lmzoo.testing import random_checkpoint

crash_at, swap = int(sys.argv[1]), sys.argv[3] == "swap"
steps = [0]
active = [False]

def counted(function):
    def step():
        if active[0]:
            steps[0] += 1
            if steps[0] == crash_at:
                os._exit(137)

    def wrapper(*args, **kwargs):
        step()
        result = function(*args, **kwargs)
        step()
        return result
    return wrapper

for module, name in [(safetensors.torch, "save_file"), (checkpoint, "write_json"), (os, "replace"),
                     (files, "_exchange"), (shutil, "rmtree"), (os, "mkdir")]:
    setattr(module, name, counted(getattr(module, name)))
if not swap:
    files._exchange = counted(lambda a, b: False)
write = checkpoint.write_checkpoint
def writing(*args, **kwargs):
    active[0] = True
    return write(*args, **kwargs)
checkpoint.write_checkpoint = writing
random_checkpoint(sys.argv[2], name="crash-entry", seed=2)
"""


def _outputs(model):
    with torch.no_grad():
        return model(torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("way", ["swap", "rename"])
def test_a_writer_killed_at_any_step_leaves_the_old_entry_or_the_new_one(tmp_path, monkeypatch, way):
    store = tmp_path / "store"
    monkeypatch.setenv("LMZOO_HOME", str(store))
    _, old = random_checkpoint(store / NAME, name=NAME, seed=1)
    _, new = random_checkpoint(tmp_path / "reference", name=NAME, seed=2)
    old_out, new_out = _outputs(old), _outputs(new)
    seen = set()
    for crash_at in range(1, 60):
        random_checkpoint(store / NAME, name=NAME, seed=1)  # the old entry, every time
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(crash_at), str(store / NAME), way],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode in (0, 137), done.stderr[-2000:]
        assert built_entries() == [NAME]  # listed once, whatever was left beside it
        assert sorted(os.listdir(store)) == [NAME]  # ... and the leftovers are cleaned by that reader
        out = _outputs(lmzoo.load(NAME))
        state = "old" if torch.equal(out, old_out) else "new" if torch.equal(out, new_out) else "torn"
        assert state != "torn", f"crash at step {crash_at}: the entry is neither the old one nor the new one"
        seen.add(state)
        if done.returncode == 0:  # the writer got through every step
            assert state == "new"
            break
    else:
        pytest.fail("the writer never finished")
    assert seen == {"old", "new"} and crash_at > 8  # the crashes hit every part of the write
