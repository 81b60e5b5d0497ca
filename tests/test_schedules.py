"""Schedules: hand-computed lr per step, warmup, plateau logic, state, config errors."""

import math

import numpy as np
import pytest

from bpcli.errors import CheckpointError, ConfigError
from bpcli.config.loading import parse_config_text
from bpcli.optim.schedules import (
    SCHEDULES, Constant, Cosine, Exponential, ReduceOnPlateau, StepDecay, build_schedule, schedule_from_config)


def lrs(schedule, steps):
    return [schedule(s) for s in steps]


def test_constant_with_and_without_warmup():
    assert lrs(Constant(0.1), [0, 1, 1000]) == [0.1, 0.1, 0.1]
    # warmup_steps = round(0.5 * 10) = 5: factor (step+1)/5 until step 4
    warm = Constant(0.1, steps_per_epoch=10, warmup_epochs=0.5)
    assert lrs(warm, [0, 2, 4, 5, 50]) == pytest.approx([0.02, 0.06, 0.1, 0.1, 0.1], rel=1e-15)


def test_warmup_steps_round_and_are_at_least_one():
    # round(0.26 * 10) = 3 warmup steps
    assert lrs(Constant(1.0, 10, 0.26), [0, 1, 2, 3]) == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    # round(0.01 * 10) = 0 -> max(1, 0) = 1: the factor is (0+1)/1 = 1 from the start
    assert Constant(1.0, 10, 0.01).warmup_steps == 1 and Constant(1.0, 10, 0.01)(0) == 1.0


def test_step_decay_per_epoch():
    s = StepDecay(1.0, step_size=2, gamma=0.5, steps_per_epoch=3)
    # steps 0-5 are epochs 0-1; 6-11 epochs 2-3 (x.5); 12 epoch 4 (x.25); 18 epoch 6 (x.125)
    assert lrs(s, [0, 5, 6, 11, 12, 18]) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    warm = StepDecay(1.0, step_size=2, gamma=0.5, steps_per_epoch=3, warmup_epochs=1)
    assert lrs(warm, [0, 1, 2, 6]) == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5], rel=1e-15)


def test_exponential_per_epoch():
    s = Exponential(0.1, gamma=0.5, steps_per_epoch=4)
    assert lrs(s, [0, 3, 4, 9]) == pytest.approx([0.1, 0.1, 0.05, 0.025], rel=1e-15)
    warm = Exponential(0.1, gamma=0.5, steps_per_epoch=4, warmup_epochs=0.5)  # 2 warmup steps
    assert lrs(warm, [0, 1, 4]) == pytest.approx([0.05, 0.1, 0.05], rel=1e-15)


def test_cosine_endpoints_and_midpoint():
    s = Cosine(1.0, epochs=2, steps_per_epoch=5)     # 10 steps in all
    assert s(0) == 1.0 and s(5) == pytest.approx(0.5) and s(10) == 0.0 and s(12) == 0.0
    # (1 + cos(0.1 pi)) / 2 and (1 + cos(0.9 pi)) / 2, cos(0.1 pi) = 0.9510565162951535
    assert s(1) == pytest.approx(0.9755282581475768, rel=1e-12)
    assert s(9) == pytest.approx(0.0244717418524232, rel=1e-12)
    floor = Cosine(0.1, epochs=2, min_lr=0.02, steps_per_epoch=5)
    assert floor(0) == 0.1 and floor(10) == pytest.approx(0.02, rel=1e-15)
    assert floor(5) == pytest.approx((0.1 + 0.02) / 2, rel=1e-15)
    assert floor(9) == pytest.approx(0.02 + 0.08 * 0.0244717418524232, rel=1e-12)


def test_cosine_with_warmup():
    s = Cosine(1.0, epochs=3, steps_per_epoch=4, warmup_epochs=1)  # w = 4, then 8 cosine steps
    assert lrs(s, [0, 1, 3, 4]) == [0.25, 0.5, 1.0, 1.0]
    # step 6: progress 2/8, (1 + cos(pi/4)) / 2; step 8: progress 1/2; step 12: progress 1
    assert s(6) == pytest.approx(0.8535533905932737, rel=1e-12)
    assert s(8) == pytest.approx(0.5, rel=1e-12) and s(12) == 0.0


def feed(s, metrics):
    """(reduced?, lr after) for each metric in turn."""
    return [(s.observe(m), s(10**6)) for m in metrics]


def test_plateau_min_mode_reduces_after_patience_runs_out():
    s = ReduceOnPlateau(1.0, factor=0.5, patience=2)
    # 1.0 and .9 improve; .95 is bad epoch 1, 2, 3 > patience -> reduce, count restarts
    assert feed(s, [1.0, 0.9, 0.95, 0.95, 0.95, 0.95]) == [
        (False, 1.0), (False, 1.0), (False, 1.0), (False, 1.0), (True, 0.5), (False, 0.5)]
    assert s.state_dict() == {"best": 0.9, "num_bad_epochs": 1, "cooldown_counter": 0,
                              "current_lr": 0.5}


def test_plateau_max_mode():
    s = ReduceOnPlateau(1.0, mode="max", factor=0.5, patience=1)
    # .6 is not > .6: bad epochs 1, 2 > 1
    assert feed(s, [0.5, 0.6, 0.6, 0.6]) == [
        (False, 1.0), (False, 1.0), (False, 1.0), (True, 0.5)]


def test_plateau_min_delta_is_an_absolute_threshold():
    s = ReduceOnPlateau(1.0, factor=0.5, patience=0, min_delta=0.25)
    # .75 is not < 1.0 - .25: bad -> reduce; .5 < .75 improves
    assert feed(s, [1.0, 0.75, 0.5]) == [(False, 1.0), (True, 0.5), (False, 0.5)]
    assert s.best == 0.5
    assert feed(ReduceOnPlateau(1.0, patience=0), [1.0, 0.75]) == [(False, 1.0), (False, 1.0)]


def test_plateau_cooldown_ignores_bad_epochs():
    s = ReduceOnPlateau(1.0, factor=0.5, patience=0, cooldown=2)
    # reduce at epoch 2, epochs 3-4 are cooldown, epoch 5 is bad again
    assert feed(s, [1.0] * 5) == [
        (False, 1.0), (True, 0.5), (False, 0.5), (False, 0.5), (True, 0.25)]


def test_plateau_min_lr_floor_and_nan():
    s = ReduceOnPlateau(1.0, factor=0.1, patience=0, min_lr=0.05)
    assert feed(s, [1.0, 2.0, 2.0, 2.0]) == [
        (False, 1.0), (True, 0.1), (True, 0.05), (False, 0.05)]
    s = ReduceOnPlateau(1.0, factor=0.5, patience=0)
    assert feed(s, [1.0, float("nan")]) == [(False, 1.0), (True, 0.5)]
    assert s.best == 1.0


def test_plateau_lr_has_warmup_factor():
    s = ReduceOnPlateau(1.0, factor=0.5, patience=0, steps_per_epoch=4, warmup_epochs=1)
    assert s(0) == 0.25
    s.observe(1.0)
    assert s.observe(2.0) is True
    assert s(1) == 0.25 and s(10) == 0.5   # 0.5 * 2/4, then 0.5


def test_plateau_state_round_trip_mid_sequence():
    metrics = [1.0, 0.8, 0.9, 0.9, 0.9, 0.7, 0.9, 0.9]
    s = ReduceOnPlateau(1.0, factor=0.5, patience=1, cooldown=1)
    assert [r for r, _ in feed(s, metrics[:4])] == [False, False, False, True]
    state = s.state_dict()
    assert state == {"best": 0.8, "num_bad_epochs": 0, "cooldown_counter": 1, "current_lr": 0.5}
    rest = feed(s, metrics[4:])
    assert rest == [(False, 0.5), (False, 0.5), (False, 0.5), (True, 0.25)]
    resumed = ReduceOnPlateau(1.0, factor=0.5, patience=1, cooldown=1)
    resumed.load_state_dict({k: np.asarray(v) for k, v in state.items()})  # as read from .npz
    assert feed(resumed, metrics[4:]) == rest and resumed.state_dict() == s.state_dict()
    assert type(resumed.state_dict()["best"]) is float


def test_state_dict_checks():
    for cls in (Constant, Exponential):
        s = cls(0.1, 0.5) if cls is Exponential else cls(0.1)
        assert s.state_dict() == {}
        s.load_state_dict({})
        with pytest.raises(CheckpointError, match="current_lr"):
            s.load_state_dict(ReduceOnPlateau(0.1).state_dict())
    s = ReduceOnPlateau(0.1)
    with pytest.raises(CheckpointError, match="num_bad_epochs"):
        s.load_state_dict({"best": 1.0, "cooldown_counter": 0, "current_lr": 0.1})
    with pytest.raises(CheckpointError, match="cooldown_counter"):
        s.load_state_dict({"best": 1.0, "num_bad_epochs": 0, "cooldown_counter": -1,
                           "current_lr": 0.1})
    s.load_state_dict({"best": -math.inf, "num_bad_epochs": 2, "cooldown_counter": 0,
                       "current_lr": 0.01})
    assert (s.best, s.num_bad_epochs, s(0)) == (-math.inf, 2, 0.01)


# The config schema checks a schedule's options before it is built (the classes trust what they
# are given), also against the rest of the config (optimizer.lr, training.epochs).
@pytest.mark.parametrize("section, key, allowed", [
    ("optimizer: {lr: 0}", "optimizer.lr", "> 0"),
    ("schedule: {warmup_epochs: -1}", "schedule.warmup_epochs", ">= 0"),
    ("schedule: {name: step, step_size: 0}", "schedule.step_size", "integer >= 1"),
    ("schedule: {name: step, step_size: 1, gamma: 0}", "schedule.gamma", "(0, 1]"),
    ("schedule: {name: exponential, gamma: 1.5}", "schedule.gamma", "(0, 1]"),
    ("schedule: {name: cosine, min_lr: 0.2}\noptimizer: {lr: 0.1}", "schedule.min_lr", "[0, lr=0.1]"),
    ("schedule: {name: cosine, warmup_epochs: 3}\ntraining: {epochs: 2}", "schedule.warmup_epochs",
     "at most epochs=2"),
    ("schedule: {name: reduce_on_plateau, min_lr: 0.2}\noptimizer: {lr: 0.1}", "schedule.min_lr", "[0, lr=0.1]"),
    ("schedule: {name: reduce_on_plateau, factor: 1.0}", "schedule.factor", "(0, 1)"),
    ("schedule: {name: reduce_on_plateau, patience: -1}", "schedule.patience", "integer >= 0"),
    ("schedule: {name: reduce_on_plateau, cooldown: 1.5}", "schedule.cooldown", "integer >= 0"),
    ("schedule: {name: reduce_on_plateau, min_delta: -0.1}", "schedule.min_delta", ">= 0"),
    ("schedule: {name: reduce_on_plateau, mode: max}", "schedule.mode", "unknown key"),
    ("schedule: {name: cosin}", "schedule.name", "Did you mean 'cosine'"),
    ("schedule: {name: cosin}", "schedule.name", "constant, cosine, exponential, reduce_on_plateau, step"),
    ("schedule: {name: cosine, min_lrr: 0.0}", "schedule.min_lrr", "Did you mean 'min_lr'"),
    ("schedule: {name: step}", "schedule.step_size", "required"),
])
def test_bad_config_names_key_and_allowed_values(section, key, allowed):
    with pytest.raises(ConfigError) as info:
        parse_config_text("model: {layers: [{type: dense, units: 2}]}\n" + section + "\n", "c.yaml")
    [line] = str(info.value).splitlines()[1:]
    assert f" {key}: " in line and allowed in line


def test_the_cosine_schedule_takes_epochs_from_the_config():
    schedule = schedule_from_config({"name": "cosine", "min_lr": 0.0, "warmup_epochs": 0.0}, lr=0.1,
                                    steps_per_epoch=2, epochs=3, mode="min")
    assert (schedule.epochs, schedule.total_steps, schedule(0), schedule(6)) == (3, 6, 0.1, 0.0)


def test_build_schedule():
    assert set(SCHEDULES) == {"constant", "step", "exponential", "cosine", "reduce_on_plateau"}
    s = build_schedule("step", lr=1.0, step_size=2, gamma=0.5, steps_per_epoch=3)
    assert type(s) is StepDecay and s(6) == 0.5
    s = build_schedule("reduce_on_plateau", lr=0.1, mode="max", patience=3)
    assert (s.mode, s.patience, s.factor) == ("max", 3, 0.1)
