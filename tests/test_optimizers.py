"""Optimizers: hand-computed updates, dtype, in-place contract, checkpoints, torch parity."""

import copy
import tracemalloc

import numpy as np
import pytest
from numpy.testing import assert_allclose

from bpcli.errors import CheckpointError, ConfigError
from bpcli.config.loading import parse_config_text
from bpcli.optim.clipping import clip_grad_norm, clip_grad_value, global_norm
from bpcli.optim.optimizers import OPTIMIZERS, SGD, Adagrad, Adam, AdamW, RMSprop, build_optimizer


def run(opt, grads, p0=(1.0, -2.0), lr=0.1, dtype=np.float64):
    """Step `opt` once per gradient in `grads` (fresh arrays: step may overwrite them)."""
    p = np.array(p0, dtype=dtype)
    for g in grads:
        opt.step(p, np.array(g, dtype=dtype), lr)
    return p


# (optimizer, p0, gradient per step, params after the last step), lr = 0.1 throughout.
HAND = {
    # p -= 0.1*[0.5, 1] twice
    "sgd": (SGD(), (1, -2), [(0.5, 1)] * 2, [0.9, -2.2]),
    # buf = g = [.5, 1]; p = [.95, -2.1] | buf = .9*buf + g = [.95, 1.9]; p = [.855, -2.29]
    # | buf = [1.355, 2.71]; p = [.855 - .1355, -2.29 - .271]
    "sgd_momentum": (SGD(momentum=0.9), (1, -2), [(0.5, 1)] * 3, [0.7195, -2.561]),
    # buf = [.5, 1]; g + .9*buf = [.95, 1.9]; p = [.905, -2.19]
    # | buf = [.95, 1.9]; g + .9*buf = [1.355, 2.71]; p = [.905 - .1355, -2.19 - .271]
    "sgd_nesterov": (SGD(momentum=0.9, nesterov=True), (1, -2), [(0.5, 1)] * 2, [0.7695, -2.461]),
    # g + .1*p = [.6, .8]; p = [.94, -2.08] | g + .1*p = [.594, .792]; p = [.8806, -2.1592]
    "sgd_weight_decay": (SGD(weight_decay=0.1), (1, -2), [(0.5, 1)] * 2, [0.8806, -2.1592]),
    # decay before momentum: buf = [.6, .8]; p = [.94, -2.08]
    # | buf = .5*[.6, .8] + [.594, .792] = [.894, 1.192]; p = [.94 - .0894, -2.08 - .1192]
    "sgd_momentum_decay": (SGD(momentum=0.5, weight_decay=0.1), (1, -2), [(0.5, 1)] * 2,
                           [0.8506, -2.1992]),
    # sum = [9, 16], std = [3+1, 4+1]; p -= .1*[3/4, 4/5] -> [.925, -2.08]
    # | sum = [25, 25], std = 6; p -= .1*[4/6, 3/6] -> [.925 - 1/15, -2.13]
    "adagrad": (Adagrad(eps=1.0), (1, -2), [(3, 4), (4, 3)], [0.8583333333333333, -2.13]),
    # sum = 15 + [1, 49] = [16, 64], std = [5, 9]; p -= .1*[1/5, 7/9]
    "adagrad_initial": (Adagrad(eps=1.0, initial_accumulator_value=15), (1, -2), [(1, 7)],
                        [0.98, -2.0777777777777778]),
    # g + .5*p = [3+1, 4-1] = [4, 3]; sum = [16, 9], std = [5, 4]; p -= .1*[4/5, 3/4]
    "adagrad_weight_decay": (Adagrad(eps=1.0, weight_decay=0.5), (2, -2), [(3, 4)], [1.92, -2.075]),
    # v = .25*[4, 16] = [1, 4], avg = [1+1, 2+1]; p -= .1*[2/2, 4/3] -> [.9, -2.1333]
    # | v = .75*[1, 4] + .25*[1, 4] = [1, 4], avg = [2, 3]; p -= .1*[1/2, 2/3]
    "rmsprop": (RMSprop(alpha=0.75, eps=1.0), (1, -2), [(2, 4), (1, 2)], [0.85, -2.2]),
    # buf = g/avg = [1, 4/3]; p = [.9, -2.1333] | buf = .5*[1, 4/3] + [1/2, 2/3] = [1, 4/3]
    "rmsprop_momentum": (RMSprop(alpha=0.75, eps=1.0, momentum=0.5), (1, -2), [(2, 4), (1, 2)],
                         [0.8, -2.2666666666666666]),
    # g + .5*p = [1+1, 5-1] = [2, 4], then as the first rmsprop step
    "rmsprop_weight_decay": (RMSprop(alpha=0.75, eps=1.0, weight_decay=0.5), (2, -2), [(1, 5)],
                             [1.9, -2.1333333333333333]),
    # b1 = .75, b2 = .96. m = .25*g = [.5, -1]; v = .04*g*g = [.16, .64]; bc1 = .25, bc2 = .04;
    # denom = sqrt(v)/.2 + 1 = [3, 5]; p -= (.1/.25)*m/denom = [1/15, -.08] -> [14/15, -1.92]
    # | m = [.625, -1.25]; v = [.1936, .7744] = [.44^2, .88^2]; bc1 = 7/16, sqrt(bc2) = .28;
    # denom = [11/7 + 1, 22/7 + 1]; p -= (8/35)*m/denom = [1/18, -2/29] -> [79/90, -1.92 + 2/29]
    "adam": (Adam(beta1=0.75, beta2=0.96, eps=1.0), (1, -2), [(2, -4), (1, -2)],
             [0.8777777777777778, -1.8510344827586207]),
    # coupled: g + .5*p = [1.5+.5, -3-1] = [2, -4], then as the first adam step
    "adam_weight_decay": (Adam(beta1=0.75, beta2=0.96, eps=1.0, weight_decay=0.5), (1, -2),
                          [(1.5, -3)], [0.9333333333333333, -1.92]),
    # decoupled: p *= 1 - .1*.5 -> [.95, -1.9]; then the first adam step [1/15, -.08] on g
    "adamw": (AdamW(beta1=0.75, beta2=0.96, eps=1.0, weight_decay=0.5), (1, -2), [(2, -4)],
              [0.8833333333333333, -1.82]),
}


@pytest.mark.parametrize("case", HAND)
def test_update_by_hand(case):
    opt, p0, grads, expected = copy.deepcopy(HAND[case])   # a fresh optimizer each run
    assert_allclose(run(opt, grads, p0), expected, rtol=1e-13)
    assert int(opt.state_dict()["step"]) == len(grads)


def test_state_by_hand():
    sgd = SGD(momentum=0.9)
    run(sgd, [(0.5, 1)] * 3)
    assert_allclose(sgd.state_dict()["momentum_buffer"], [1.355, 2.71], rtol=1e-13)
    adam = Adam(beta1=0.75, beta2=0.96, eps=1.0)
    run(adam, [(2, -4), (1, -2)])
    state = adam.state_dict()
    assert_allclose(state["exp_avg"], [0.625, -1.25], rtol=1e-13)
    assert_allclose(state["exp_avg_sq"], [0.1936, 0.7744], rtol=1e-13)
    assert state["step"].dtype == np.int64 and state["step"].shape == () and state["step"] == 2


def test_fresh_state_dict_is_just_the_step_count():
    for cls in OPTIMIZERS.values():
        assert set(cls().state_dict()) == {"step"} and cls().state_dict()["step"] == 0


def test_adamw_without_decay_is_adam_exactly():
    grads = np.random.default_rng(1).normal(size=(5, 4))
    assert np.array_equal(run(Adam(), grads, np.ones(4)),
                          run(AdamW(weight_decay=0.0), grads, np.ones(4)))


FULL = {  # every option switched on, for the contract tests below
    "sgd": lambda: SGD(momentum=0.9, nesterov=True, weight_decay=0.01),
    "adagrad": lambda: Adagrad(weight_decay=0.01, initial_accumulator_value=0.1),
    "rmsprop": lambda: RMSprop(momentum=0.9, weight_decay=0.01),
    "adam": lambda: Adam(weight_decay=0.01),
    "adamw": lambda: AdamW(),
    "sgd_plain": SGD,
}


def quadratic(n, dtype, seed=0):
    """p0 and a gradient function g(p) = h*p - c of a random diagonal quadratic."""
    rng = np.random.default_rng(seed)
    h, c, p0 = rng.uniform(0.5, 2.0, n), rng.normal(size=n), rng.normal(size=n)
    return p0.astype(dtype), lambda p: (h * p - c).astype(dtype)


@pytest.mark.parametrize("make", FULL.values(), ids=FULL.keys())
def test_float32_stays_float32(make):
    p0, grad = quadratic(6, np.float32)
    p32, p64, opt32, opt64 = p0.copy(), p0.astype(np.float64), make(), make()
    for _ in range(10):
        opt32.step(p32, grad(p32), 0.01)
        opt64.step(p64, grad(p64).astype(np.float64), 0.01)
    assert p32.dtype == np.float32
    assert all(a.dtype == np.float32 for k, a in opt32.state_dict().items() if k != "step")
    assert_allclose(p32, p64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", FULL.values(), ids=FULL.keys())
def test_params_in_place_state_private_grads_only_scratch(make):
    p0, grad = quadratic(5, np.float64)
    opt, p = make(), p0.copy()
    g1 = grad(p)
    opt.step(p, g1, 0.1)                       # step 1 with g1 ...
    g1[:] = np.nan                             # ... whose contents may be clobbered afterwards
    opt.step(p, grad(p), 0.1)
    ref = make()
    expected = p0.copy()
    for _ in range(2):
        ref.step(expected, grad(expected), 0.1)
    assert np.array_equal(p, expected)         # no reference to g1 was kept
    for a in opt.state.values():
        assert not np.shares_memory(a, p) and not np.shares_memory(a, g1)
    saved = opt.state_dict()
    opt.step(p, grad(p), 0.1)
    assert all(not np.shares_memory(saved[k], a) for k, a in opt.state.items())
    assert saved["step"] == 2


@pytest.mark.parametrize("make", FULL.values(), ids=FULL.keys())
def test_steps_after_the_first_allocate_no_full_size_temporaries(make):
    p, g = np.ones(100_000), np.full(100_000, 0.5)
    opt = make()
    opt.step(p, g.copy(), 0.1)                 # the first step allocates state and scratch
    tracemalloc.start()
    opt.step(p, g, 0.1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < p.nbytes // 4


@pytest.mark.parametrize("make", FULL.values(), ids=FULL.keys())
def test_state_dict_round_trip_is_bitwise(make):
    p0, grad = quadratic(8, np.float32, seed=3)
    lrs = [0.05, 0.04, 0.03, 0.02, 0.01] * 2
    opt, p = make(), p0.copy()
    for lr in lrs[:5]:
        opt.step(p, grad(p), lr)
    state, p_mid = opt.state_dict(), p.copy()
    for lr in lrs[5:]:
        opt.step(p, grad(p), lr)
    resumed = make()
    resumed.load_state_dict(state)
    for a in state.values():
        a.fill(-1)                             # the optimizer holds copies, not these arrays
    for lr in lrs[5:]:
        resumed.step(p_mid, grad(p_mid), lr)
    assert np.array_equal(p_mid, p)


def test_load_state_dict_rejects_mismatches():
    adam = Adam()
    run(adam, [(1.0, 2.0)])
    good = adam.state_dict()
    used = Adam()
    run(used, [(1.0, 2.0, 3.0)], p0=(0.0, 0.0, 0.0))
    with pytest.raises(CheckpointError, match=r"\(2,\).*\(3,\)"):
        used.load_state_dict(good)             # state for 2 params, optimizer on 3
    bad = {**good, "exp_avg_sq": np.zeros(3)}
    with pytest.raises(CheckpointError, match="exp_avg_sq"):
        Adam().load_state_dict(bad)
    with pytest.raises(CheckpointError, match="momentum_buffer"):
        SGD(momentum=0.9).load_state_dict(good)
    with pytest.raises(CheckpointError, match="step"):
        Adam().load_state_dict({"exp_avg": np.zeros(2), "exp_avg_sq": np.zeros(2)})
    fresh = Adam()
    fresh.load_state_dict(good)
    with pytest.raises(CheckpointError, match="wrong model"):
        fresh.step(np.zeros(3), np.zeros(3), 0.1)


TORCH = [("sgd", {}), ("sgd", {"momentum": 0.9}),
         ("sgd", {"momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
         ("adagrad", {"weight_decay": 0.1, "initial_accumulator_value": 0.5}),
         ("rmsprop", {}), ("rmsprop", {"momentum": 0.7, "weight_decay": 0.1}),
         ("adam", {}), ("adam", {"beta1": 0.8, "weight_decay": 0.1}), ("adamw", {})]


@pytest.mark.parametrize("name,hp", TORCH)
def test_matches_torch_optim(name, hp):
    torch = pytest.importorskip("torch")
    kw = dict(hp)
    if name.startswith("adam"):
        kw["betas"] = (kw.pop("beta1", 0.9), kw.pop("beta2", 0.999))
    cls = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam",
           "adamw": "AdamW"}[name]
    p0, grad = quadratic(7, np.float64, seed=11)
    t = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    theirs = getattr(torch.optim, cls)([t], lr=0.1, **kw)
    ours, p = build_optimizer(name, **hp), p0.copy()
    for k in range(20):
        lr = 0.05 * (1 + k % 3)                # a varying lr, as a schedule gives
        ours.step(p, grad(p), lr)
        theirs.param_groups[0]["lr"] = lr
        t.grad = torch.from_numpy(grad(t.detach().numpy()))
        theirs.step()
    assert_allclose(p, t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_clip_grad_norm_by_hand():
    g = np.array([3.0, 4.0])
    assert clip_grad_norm(g, 1.0) == 5.0       # the norm before clipping
    assert_allclose(g, [0.599999880000024, 0.799999840000032], rtol=1e-12)  # [3,4]/(5+1e-6)
    assert_allclose(g, [0.6, 0.8], rtol=1e-6)
    for limit in (5.0, 10.0):                  # at or below the limit: untouched
        g = np.array([3.0, 4.0])
        assert clip_grad_norm(g, limit) == 5.0 and np.array_equal(g, [3.0, 4.0])
    g32 = np.array([3.0, 4.0], dtype=np.float32)
    assert clip_grad_norm(g32, 2.5) == 5.0 and g32.dtype == np.float32
    assert_allclose(g32, [1.5, 2.0], rtol=1e-6)
    assert global_norm(np.array([1.0, 2.0, -2.0])) == 3.0


def test_clip_grad_value_in_place():
    g = np.array([-3.0, 0.5, 2.0, -0.25])
    assert clip_grad_value(g, 1.0) is None
    assert np.array_equal(g, [-1.0, 0.5, 1.0, -0.25])


# The config schema checks hyperparameters before any optimizer is built (the classes trust
# what they are given): each problem names its key and what is allowed.
@pytest.mark.parametrize("section, key, allowed", [
    ("optimizer: {name: sgd, momentum: 1.0}", "optimizer.momentum", "[0, 1)"),
    ("optimizer: {name: sgd, nesterov: true}", "optimizer.nesterov", "requires momentum > 0"),
    ("optimizer: {name: sgd, momentum: 0.9, nesterov: 'yes'}", "optimizer.nesterov", "true or false"),
    ("optimizer: {name: sgd, weight_decay: -0.1}", "optimizer.weight_decay", ">= 0"),
    ("optimizer: {name: adagrad, eps: 0}", "optimizer.eps", "> 0"),
    ("optimizer: {name: adagrad, initial_accumulator_value: -1}", "optimizer.initial_accumulator_value", ">= 0"),
    ("optimizer: {name: rmsprop, alpha: 1.5}", "optimizer.alpha", "[0, 1)"),
    ("optimizer: {name: rmsprop, momentum: '0.9'}", "optimizer.momentum", "[0, 1)"),
    ("optimizer: {name: adam, beta2: 1.0}", "optimizer.beta2", "[0, 1)"),
    ("optimizer: {name: adamw, weight_decay: .nan}", "optimizer.weight_decay", ">= 0"),
    ("training: {clip_grad_norm: 0.0}", "training.clip_grad_norm", "> 0"),
    ("training: {clip_grad_value: -1.0}", "training.clip_grad_value", "> 0"),
    ("optimizer: {name: adm}", "optimizer.name", "Did you mean 'adam'"),
    ("optimizer: {name: adm}", "optimizer.name", "adagrad, adam, adamw, rmsprop, sgd"),
    ("optimizer: {name: adam, beta_1: 0.9}", "optimizer.beta_1", "Did you mean 'beta1'"),
    ("optimizer: {name: adam, beta_1: 0.9}", "optimizer.beta_1", "allowed: beta1, beta2, eps, lr, name, weight_decay"),
])
def test_bad_config_names_key_and_allowed_values(section, key, allowed):
    with pytest.raises(ConfigError) as info:
        parse_config_text("model: {layers: [{type: dense, units: 2}]}\n" + section + "\n", "c.yaml")
    [line] = str(info.value).splitlines()[1:]
    assert f" {key}: " in line and allowed in line


def test_build_optimizer_sets_hyperparameters():
    opt = build_optimizer("adamw", beta1=0.8, weight_decay=0.5)
    assert type(opt) is AdamW and (opt.beta1, opt.beta2, opt.weight_decay) == (0.8, 0.999, 0.5)
    assert build_optimizer("adamw").weight_decay == 0.01   # PyTorch's AdamW default


def test_adam_with_a_zero_learning_rate_updates_its_moments_but_not_the_parameters():
    opt, p = Adam(), np.array([1.0, -2.0], dtype=np.float32)
    opt.step(p, np.array([0.5, 0.5], dtype=np.float32), 0.0)
    assert p.tolist() == [1.0, -2.0]
    np.testing.assert_allclose(opt.state_dict()["exp_avg"], [0.05, 0.05], rtol=1e-6)
