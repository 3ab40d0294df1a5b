"""Shared pytest configuration: deterministic, CPU-friendly hypothesis settings for every suite."""

from hypothesis import HealthCheck, settings

# Derandomized so a failure reproduces on every machine; no deadline because the 2-core CI box is shared.
settings.register_profile(
    "anymole",
    derandomize=True,
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("anymole")
