"""Shared pytest configuration: one torch thread, deterministic CPU-friendly hypothesis settings."""

import os

import torch
from hypothesis import HealthCheck, settings

# One intra-op thread, here and in child processes (the import worker, `anymole serve` subprocesses). The
# tensors in tests are tiny, and on the shared 2-core box a second OpenMP thread mostly spin-waits for a
# core: with `taskset -c 0,1` under the usual load, the tiny ICAdapt and soft-silhouette pose tests took
# 72 s with torch's default 2 threads and 7 s with 1, and the rig/io/metrics/baseline/cli suites 15.7-19.7 s
# vs 13.1-13.5 s. An explicit OMP_NUM_THREADS still wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Derandomized so a failure reproduces on every machine; no deadline because the 2-core CI box is shared.
settings.register_profile(
    "anymole",
    derandomize=True,
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("anymole")
