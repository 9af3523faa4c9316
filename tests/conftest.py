"""Hypothesis profiles for the property-based and fuzz tests.

``default`` (CI): deterministic (``derandomize=True``: the same examples on every run and every
machine), no deadline (a gradient check or a fuzzed file may legitimately take a while on a busy
CI core), no example database, 100 examples per property unless a test asks for a multiple.

``long``: ten times the examples, kill trials and fuzz cases, with fresh random examples on every
run (failures are saved to ``.hypothesis/`` and replayed first next time)::

    HYPOTHESIS_PROFILE=long python -m pytest -q

Tests scale their own budgets (``@settings(max_examples=...)``, kill trials, fuzz sweeps) by
``settings.default.max_examples // 100``: 1 by default, 10 in the long profile.
"""

from __future__ import annotations

import os

# One BLAS thread per test process (and the processes tests start): pytest-xdist runs a worker
# per core, and chainrule train's default, BLAS's own count of one thread per core, would put
# two threads on each core. Set before NumPy's and SciPy's BLAS read it, and on NumPy's if loaded.
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"
from hypothesis import HealthCheck, settings
from threadpoolctl import threadpool_limits

threadpool_limits(limits=1, user_api="blas")

settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=100,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    derandomize=False,
    deadline=None,
    max_examples=1000,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
