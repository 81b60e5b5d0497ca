"""The wheel must carry every subpackage and the shipped datasets."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_packages_are_found_not_listed_by_hand():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "packages" not in config or "find" in config["packages"]
    assert config["packages"]["find"]["include"] == ["bpcli", "bpcli.*"]


def test_every_group_is_a_package():
    """A folder of modules without __init__.py would be left out of the wheel by find."""
    folders = {p.parent for p in (ROOT / "bpcli").rglob("*.py")}
    assert all((folder / "__init__.py").is_file() for folder in folders)


def test_shipped_dataset_files_match_package_data_globs():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = config["package-data"]["bpcli"]
    shipped = [p for p in (ROOT / "bpcli" / "datasets").rglob("*") if p.is_file()]
    assert shipped and all(any(p.relative_to(ROOT / "bpcli").match(g) for g in globs) for p in shipped)


def test_the_top_level_datasets_folder_is_the_shipped_one():
    assert (ROOT / "datasets").resolve() == (ROOT / "bpcli" / "datasets").resolve()


def test_shipped_configs_match_package_data_globs():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bpcli"]
    shipped = [p for p in (ROOT / "bpcli" / "configs").rglob("*") if p.is_file()]
    assert shipped and all(any(p.relative_to(ROOT / "bpcli").match(g) for g in globs) for p in shipped)
    assert (ROOT / "configs").resolve() == (ROOT / "bpcli" / "configs").resolve()
