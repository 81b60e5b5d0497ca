"""Hyperparameter sweeps: many training runs of one base config, searched by Optuna, run on Dask.

    spec.py      the sweep file: reading, validating (every problem at its line), the resolved sweep
    space.py     the kinds of search dimension (loguniform, uniform, int, choice), a registry
    trials.py    one trial's config: the base, the sweep's `set`, the sampled params and a seed
    engine.py    Optuna: the samplers and pruners (registries), the study and its storage
    cluster.py   Dask: a LocalCluster on 127.0.0.1, or an existing cluster by address
    worker.py    what runs on a worker: one trial, trained in a temporary folder, its files returned
    sweepdir.py  the sweep directory: the one place that names its files
    driver.py    the loop: ask Optuna for a trial, queue it on Dask, record it when it ends

Optuna and Dask are an optional extra (pip install -e ".[sweep]" in a checkout): only engine.py,
cluster.py, worker.py and driver.py import them, inside functions, so the rest of
bpcli never loads them. Like every group below cli/, nothing here prints: progress
reaches the command through a callback.
"""
