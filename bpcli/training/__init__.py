"""Training: one batch (step), the loop (trainer), callbacks, diagnostics, checkpoints, the run directory."""
