"""Advice from the layer diagnostics: five warnings, each in plain words with what to try.

    vanishing_gradients   the first layer's gradient norm orders of magnitude below the last layer's
    exploding_gradients   ... or above it, or any layer's above diagnostics.exploding_norm
    dead_units            more than dead_fraction of a ReLU-family layer's units never active in an epoch
    saturation            more than saturated_fraction of sigmoid/tanh outputs at their flat ends
    update_ratio          the median update-to-weight ratio outside [update_ratio_low, update_ratio_high]

Each is a pure function of one epoch's rows (diagnostics.py) and the
`diagnostics` section; each can be switched off (diagnostics.warn.<kind>).
"""

from __future__ import annotations

import math


def warnings_for(rows: list[dict], options: dict, lr_is_full: bool = True) -> list[dict]:
    """The problems one epoch's rows show, as {"kind", "epoch", "layer", "message"}, for the kinds switched on.

    lr_is_full: the learning rate is at least half its configured value; the
    update-ratio check is skipped otherwise (a decayed or warming-up learning
    rate is meant to move the weights less).
    """
    checks = {"vanishing_gradients": _gradient_flow, "exploding_gradients": _gradient_flow,
              "dead_units": _dead_units, "saturation": _saturation, "update_ratio": _update_ratio}
    found = []
    for kind, check in checks.items():
        if options["warn"].get(kind, True) and (kind != "update_ratio" or lr_is_full):
            found += [w for w in check(rows, options) if w["kind"] == kind]
    return found


def _warning(kind: str, row: dict, message: str) -> dict:
    return {"kind": kind, "epoch": row["epoch"], "layer": row["layer"], "message": f"epoch {row['epoch']}: {message}"}


def _gradient_flow(rows, options) -> list[dict]:
    """The first layer's gradient norm orders of magnitude below (or above) the last layer's."""
    if len(rows) < 2:
        return []
    first, last, ratio = rows[0], rows[-1], options["gradient_ratio"]
    g0, g1 = first["grad_norm"], last["grad_norm"]
    found = []
    if not (math.isfinite(g0) and math.isfinite(g1)) or g1 == 0:
        return found
    if g0 < g1 / ratio:
        found.append(_warning("vanishing_gradients", first, (
            f"vanishing gradients: the gradient norm of {first['layer']} ({g0:.2g}) is {g0 / g1:.1g} times that "
            f"of {last['layer']} ({g1:.2g}), so the first layers barely learn. Try ReLU-family activations with "
            "He initialization, batch norm, or fewer layers (diagnostics.warn.vanishing_gradients: false turns "
            "this off).")))
    if g0 > g1 * ratio or max(r["grad_norm"] for r in rows) > options["exploding_norm"]:
        worst = max(rows, key=lambda r: r["grad_norm"])
        found.append(_warning("exploding_gradients", worst, (
            f"exploding gradients: the gradient norm of {worst['layer']} is {worst['grad_norm']:.3g} (the last "
            f"layer's: {g1:.3g}). Try a lower learning rate, gradient clipping (training.clip_grad_norm), smaller "
            "initial weights or batch norm (diagnostics.warn.exploding_gradients: false turns this off).")))
    return found


def _dead_units(rows, options) -> list[dict]:
    dead = [r for r in rows if r["dead_fraction"] is not None and r["dead_fraction"] > options["dead_fraction"]]
    return [_warning("dead_units", r, (
        f"dead ReLUs: {r['dead_fraction']:.0%} of the {r['units']} units after {r['layer']} were never active in "
        "this epoch, so they no longer learn. Try a lower learning rate, leaky_relu, or He initialization with "
        "zero biases (diagnostics.warn.dead_units: false turns this off).")) for r in dead[:1]]


def _saturation(rows, options) -> list[dict]:
    saturated = [r for r in rows if r["saturated_fraction"] is not None
                 and r["saturated_fraction"] > options["saturated_fraction"]]
    return [_warning("saturation", r, (
        f"saturated units: {r['saturated_fraction']:.0%} of the {r['activation']} outputs after {r['layer']} are "
        f"at its flat ends, where the derivative is nearly 0 and gradients stop. Try smaller initial weights "
        "(glorot_uniform), standardized inputs, batch norm or ReLU (diagnostics.warn.saturation: false turns "
        "this off).")) for r in saturated[:1]]


def _update_ratio(rows, options) -> list[dict]:
    """CS231n's rule of thumb: each step should change the weights by about 1e-3 of their size."""
    ratios = sorted(r["update_ratio"] for r in rows)
    median = ratios[(len(ratios) - 1) // 2]  # the lower middle: one outlying layer of two does not decide
    low, high = options["update_ratio_low"], options["update_ratio_high"]
    if low <= median <= high or not math.isfinite(median):
        return []
    direction = "too low: training will crawl" if median < low else "too high: training may be unstable"
    return [_warning("update_ratio", rows[0], (
        f"update-to-weight ratio {median:.1g} (median over layers; about 1e-3 is healthy, outside "
        f"[{low:g}, {high:g}] is suspect), so the learning rate looks {direction}. Try optimizer.lr "
        f"{'x10' if median < low else '/10'} (diagnostics.warn.update_ratio: false turns this off)."))]
