"""The network: activations, initializers, layers, the model, losses, penalties and metrics (pure NumPy)."""
