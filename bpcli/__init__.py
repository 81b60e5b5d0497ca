"""bpcli: backpropagation by hand in NumPy, driven by YAML configs.

The Python API (bpcli/api.py, documented in README's "Python API"):

    import bpcli
    run = bpcli.train("xor", training__epochs=500)      # a Run: summary, metrics, run_dir, .model
    model = bpcli.load(run.run_dir)                     # a Model: .predict(X), .predict_proba(X)

Importing bpcli imports nothing else: `train`, `load`, `Run` and `Model` are
brought in from bpcli.api on first use, so `bpcli --help` starts fast.
"""

from bpcli.version import __version__

API = ("train", "load", "Run", "Model")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    """bpcli.train and the rest of the API, imported on first use (with NumPy and everything under it)."""
    if name in API:
        from bpcli import api

        return getattr(api, name)
    raise AttributeError(f"module 'bpcli' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *API])
