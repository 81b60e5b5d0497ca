"""bpcli's version: a leaf, so the modules that record it (checkpoints, run.json, exports) import nothing above them."""

__version__ = "0.1.0"
