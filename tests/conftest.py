"""How the suite shares the machine (pytest-xdist, `-n auto --dist loadgroup` in pyproject.toml).

The tests that run several processes of their own at once (Dask clusters with two worker
processes, trainings killed and resumed at random moments) are one group, run one after
another on one xdist worker, while the other workers take the rest test by test: two of
them side by side would share the cores four ways, and their timeouts are set for two.
"""

import pytest

OWN_PROCESSES = ("test_sweep_cluster.py", "test_sweep_resume.py", "test_faults_run.py", "test_faults_process.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in OWN_PROCESSES:
            item.add_marker(pytest.mark.xdist_group("own-processes"))
