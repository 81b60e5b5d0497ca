"""Optimizers, learning-rate schedules and gradient clipping: how gradients become weight updates."""
