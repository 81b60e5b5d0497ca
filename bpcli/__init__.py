"""bpcli: backpropagation by hand in NumPy, driven by YAML configs."""

__version__ = "0.1.0"
