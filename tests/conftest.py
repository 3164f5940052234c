"""Shared test configuration: bounded, deterministic hypothesis profiles."""

import os

from hypothesis import HealthCheck, settings

# "ci": deterministic and bounded so the suite is fast and never flaky; "dev": more examples.
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
