"""The optimizer update as bpcli does it (chunked NumPy ufuncs) against fused numexpr and Numba kernels.

    python benchmarks/fused_update.py            # needs numexpr and/or numba for their rows

Issue 16's first lever: fuse Adam's ~12 element-wise passes (SGD momentum's 4)
into one or a few. Each candidate is checked to give the NumPy path's numbers
bit for bit (float32 scalars throughout, no fast-math) before it is timed; the
times are the best of 5 repeats of many steps, in milliseconds per step, for
W1's 235,146 parameters and W3's 1,862,986. Also timed: importing each library
and a Numba kernel's first call (compiling, or loading its cache).
"""

from __future__ import annotations

import time

import numpy as np

f32 = np.float32
B1, B2, MU, LR = f32(0.9), f32(0.999), f32(0.9), f32(0.01)
C1, C2 = f32(3.16), f32(1e-7)            # Adam's folded bias corrections, as Adam._update forms them
CHUNK = 1 << 16


def numpy_adam(p, g, m, v):
    """bpcli's Adam._update, chunk by chunk (optim/optimizers.py)."""
    for s in range(0, p.size, CHUNK):
        P, G, M, V = p[s:s + CHUNK], g[s:s + CHUNK], m[s:s + CHUNK], v[s:s + CHUNK]
        np.dot(G, G)
        M -= G; M *= B1; M += G                                           # noqa: E702
        np.multiply(G, G, out=G); V -= G; V *= B2; V += G                 # noqa: E702
        np.sqrt(V, out=G); G *= C1; G += C2; np.divide(M, G, out=G); P -= G  # noqa: E702


def numpy_sgd(p, g, b):
    """bpcli's SGD._update with momentum, chunk by chunk."""
    for s in range(0, p.size, CHUNK):
        P, G, B = p[s:s + CHUNK], g[s:s + CHUNK], b[s:s + CHUNK]
        np.dot(G, G)
        B *= MU; B += G; np.multiply(B, LR, out=G); P -= G                # noqa: E702


def numexpr_kernels():
    import numexpr as ne

    def adam(p, g, m, v, chunk=CHUNK):
        for s in range(0, p.size, chunk):
            P, G, M, V = p[s:s + chunk], g[s:s + chunk], m[s:s + chunk], v[s:s + chunk]
            np.dot(G, G)
            ne.evaluate("b1 * (m - g) + g", local_dict={"m": M, "g": G, "b1": B1}, out=M, casting="no")
            ne.evaluate("b2 * (v - g * g) + g * g", local_dict={"v": V, "g": G, "b2": B2}, out=V, casting="no")
            ne.evaluate("p - m / (sqrt(v) * c1 + c2)", local_dict={"p": P, "m": M, "v": V, "c1": C1, "c2": C2},
                        out=P, casting="no")

    def sgd(p, g, b, chunk=CHUNK):
        for s in range(0, p.size, chunk):
            P, G, B = p[s:s + chunk], g[s:s + chunk], b[s:s + chunk]
            np.dot(G, G)
            ne.evaluate("b * mu + g", local_dict={"b": B, "g": G, "mu": MU}, out=B, casting="no")
            ne.evaluate("p - b * lr", local_dict={"p": P, "b": B, "lr": LR}, out=P, casting="no")

    return ne, adam, sgd


def numba_kernels():
    from numba import njit

    @njit(cache=False, nogil=True)
    def adam_kernel(p, g, m, v, b1, b2, c1, c2):
        for i in range(p.size):
            gi = g[i]
            mi = b1 * (m[i] - gi) + gi
            gg = gi * gi
            vi = b2 * (v[i] - gg) + gg
            m[i], v[i] = mi, vi
            p[i] = p[i] - mi / (np.sqrt(vi) * c1 + c2)

    @njit(cache=False, nogil=True)
    def sgd_kernel(p, g, b, mu, lr):
        for i in range(p.size):
            bi = b[i] * mu + g[i]
            b[i] = bi
            p[i] = p[i] - bi * lr

    def adam(p, g, m, v):
        np.dot(g, g)
        adam_kernel(p, g, m, v, B1, B2, C1, C2)

    def sgd(p, g, b):
        np.dot(g, g)
        sgd_kernel(p, g, b, MU, LR)

    return adam, sgd


def arrays(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n).astype(f32), (rng.standard_normal(n) * 1e-2).astype(f32),
            (rng.standard_normal(n) * 1e-3).astype(f32), np.abs(rng.standard_normal(n) * 1e-5).astype(f32))


def same_bits(fn_a, fn_b, states: int, n: int = 200_003) -> bool:
    """Three steps of each from the same state leave the same parameters and state bit for bit."""
    a, b = arrays(n), arrays(n)
    for _ in range(3):
        fn_a(a[0], a[1].copy(), *a[2:2 + states])     # the gradient is scratch: each step gets a fresh copy
        fn_b(b[0], b[1].copy(), *b[2:2 + states])
    return all(np.array_equal(x.view(np.uint32), y.view(np.uint32)) for x, y in zip(a, b))


def best_ms(fn, args, reps: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(reps):
            fn(*args)
        best = min(best, (time.perf_counter() - started) / reps)
    return best * 1e3


def main() -> None:
    rows = {"numpy (bpcli)": (numpy_adam, numpy_sgd)}
    try:
        started = time.perf_counter()
        ne, ne_adam, ne_sgd = numexpr_kernels()
        print(f"import numexpr {ne.__version__}: {time.perf_counter() - started:.3f} s")
        for threads in (1, 2):
            rows[f"numexpr {threads} thread(s)"] = (
                lambda *a, t=threads: (ne.set_num_threads(t), ne_adam(*a))[1],
                lambda *a, t=threads: (ne.set_num_threads(t), ne_sgd(*a))[1])
    except ImportError:
        print("numexpr not installed")
    try:
        started = time.perf_counter()
        nb_adam, nb_sgd = numba_kernels()
        p, g, m, v = arrays(10)
        nb_adam(p, g, m, v)
        nb_sgd(p, g, m)
        print(f"import numba and compile both kernels: {time.perf_counter() - started:.3f} s")
        rows["numba (one loop)"] = (nb_adam, nb_sgd)
    except ImportError:
        print("numba not installed")
    for name, (adam, sgd) in rows.items():
        exact = same_bits(numpy_adam, adam, 2) and same_bits(numpy_sgd, sgd, 1)
        times = []
        for n, reps in ((235_146, 300), (1_862_986, 30)):
            p, g, m, v = arrays(n)
            times += [best_ms(adam, (p, g, m, v), reps), best_ms(sgd, (p, g, m), reps)]
        print(f"{name:24s} bit-exact {exact!s:5s}  W1 Adam {times[0]:6.3f} SGD {times[1]:6.3f} ms   "
              f"W3 Adam {times[2]:6.3f} SGD {times[3]:6.3f} ms", flush=True)


if __name__ == "__main__":
    main()
