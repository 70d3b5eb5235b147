from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_and_the_recipes_are_in_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lmzoo").rglob("__init__.py")}
    listed = set(config["packages"])
    assert on_disk | {"lmzoo._recipes"} == listed
    assert config["package-dir"]["lmzoo._recipes"] == "recipes"
    assert list((ROOT / "recipes").glob("*.yaml"))
