"""Shared pytest configuration: hypothesis profiles.

The ``ci`` profile (selected automatically when CI is set, or with HYPOTHESIS_PROFILE=ci) is
derandomized, so a CI run is reproducible; the ``dev`` profile explores new examples each run.
Both have ``deadline=None``: Numba compiles on first call and timing is not what these tests check.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=25, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", deadline=None, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
