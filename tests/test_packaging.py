"""The wheel must carry every subpackage and the shipped datasets."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bpcli").rglob("__init__.py")}
    assert on_disk | {"bpcli.datasets"} == set(config["packages"])
    assert config["package-dir"]["bpcli.datasets"] == "datasets"


def test_shipped_dataset_files_match_package_data_globs():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = config["package-data"]["bpcli.datasets"]
    shipped = [p for p in (ROOT / "datasets").rglob("*") if p.is_file()]
    assert shipped and all(any(p.relative_to(ROOT / "datasets").match(g) for g in globs) for p in shipped)
