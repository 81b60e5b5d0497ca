"""The configs that ship with bpcli (bpcli/configs/, also the checkout's top-level configs/).

    shipped_configs() -> {name: path}   quickstart, xor, optimizers/adam, ...
    find_shipped(name) -> path | None   "quickstart", "quickstart.yaml", "configs/quickstart.yaml"

They are package data, so a pip-installed bpcli has them too: `bpcli train quickstart` (or the
README's `bpcli train configs/quickstart.yaml`) works in any folder, and `bpcli config new`
copies one out, comments and all, to edit.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "configs"
SWEEPS_DIR = SHIPPED_DIR / "sweeps"   # sweep files, not training configs: `bpcli sweep NAME` finds them
SUFFIXES = (".yaml", ".yml")


def shipped_configs() -> dict[str, Path]:
    """Every shipped training config by its name: the path below configs/ without the suffix, sorted."""
    return {path.relative_to(SHIPPED_DIR).with_suffix("").as_posix(): path
            for path in sorted(SHIPPED_DIR.rglob("*.yaml")) if SWEEPS_DIR not in path.parents}


def find_shipped(name: str | Path) -> Path | None:
    """The shipped config a name or a checkout-relative path means, or None."""
    text = Path(name).as_posix()
    text = text.removeprefix("./").removeprefix("configs/")
    for suffix in SUFFIXES:
        text = text.removesuffix(suffix)
    return shipped_configs().get(text)


def summary_line(path: Path) -> str:
    """The first line of a config's header comment: what it is."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""
