"""Gradient clipping, on the flat gradient vector, as PyTorch's clip_grad_norm_ and clip_grad_value_.

    global_norm(g)           ||g||, one BLAS pass
    clip_grad_norm(g, c)     g *= c / (||g|| + 1e-6) when ||g|| > c; returns ||g|| before
    clip_grad_value(g, c)    g = clip(g, -c, c), coordinate by coordinate

The thresholds come from training.clip_grad_norm and training.clip_grad_value,
which the config schema has checked (> 0).
"""

from __future__ import annotations

import math

import numpy as np


def global_norm(grads: np.ndarray) -> float:
    """The L2 norm of the whole flat gradient: sqrt(g . g), one BLAS pass."""
    return math.sqrt(float(np.vdot(grads, grads)))


def clip_grad_norm(grads: np.ndarray, max_norm: float) -> float:
    """Scale grads in place so their norm is <= max_norm; return the norm before clipping."""
    norm = global_norm(grads)
    if norm > max_norm:
        grads *= grads.dtype.type(max_norm / (norm + 1e-6))   # PyTorch's clip_grad_norm_
    return norm


def clip_grad_value(grads: np.ndarray, clip_value: float) -> None:
    """Clip each gradient coordinate in place to [-clip_value, clip_value]."""
    c = grads.dtype.type(clip_value)
    np.clip(grads, -c, c, out=grads)
