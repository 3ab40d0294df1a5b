"""Capacity model: a seeded queueing simulation of animators submitting ``anymole`` fills to a pool of GPUs.

Arrivals are Poisson: each of ``animators`` submits a fill every ``fill_interval_s`` on average, independently of
whether their last fill came back (an open model; a real animator waits, so this errs on the busy side). Each
animator works on one scene at a time: their first fill adapts a new scene, and each later one is, with
probability ``repeat_share``, another fill of the current scene (it can reuse the adapted prior and estimator)
or else the start of a new scene. A fill holds one GPU for its whole service time; a GPU runs one fill at a time.

Placement policies (what the job manager does with a fill; `POLICIES`):

- ``affinity``: a repeat fill goes to the GPU that adapted its scene and waits for it; a new scene goes to an
  idle GPU (the one idle longest), else to the GPU with the fewest fills queued or running (ties: the one that
  frees first). One FIFO queue per GPU, a fill placed when it is submitted.
- ``spill``: the order of issue 19's placement: a repeat fill goes to a GPU holding its scene if one is idle,
  else to an idle GPU, which reads the scene's artefacts from shared storage (``cache_load_s``) and holds them
  from then on, else to the holding GPU that frees first; a repeat whose scene is still adapting waits for it.
  New scenes as ``affinity``.
- ``shared``: no affinity, one FIFO queue for the pool, each fill to the GPU that frees first (the one idle
  longest), blind to caches. Per-scene artefacts are on storage every GPU reads: a repeat fill on a GPU that
  does not hold the scene pays the second-fill time plus ``cache_load_s``, provided the scene's adaptation has
  finished somewhere when the fill starts (else it adapts the scene again: the whole job).
- ``local``: as ``shared``, but each GPU caches only what it computed itself (no shared storage): a repeat fill
  on another GPU pays the whole job.

Times are seconds throughout. The simulation is a loop over fills in arrival order (exact for FIFO queues:
start times never decrease in arrival order within a queue); it draws every random number up front
(`draw_fills`), so all policies and GPU counts see the same fills (common random numbers).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "POLICIES",
    "Fills",
    "Policy",
    "ServiceTimes",
    "SimResult",
    "Workload",
    "draw_fills",
    "erlang_c_mean_wait",
    "gpus_needed",
    "simulate",
    "sweep",
]

Policy = Literal["affinity", "spill", "shared", "local"]
POLICIES: tuple[Policy, ...] = ("affinity", "spill", "shared", "local")


@dataclass(frozen=True)
class ServiceTimes:
    """GPU seconds one fill holds a GPU, and where each figure comes from.

    whole_job_s: a fill on a scene not yet adapted on the GPU (render, ICAdapt, estimator training, sampling,
        mimicking).
    second_fill_s: a fill on a scene whose adapted prior and estimator the GPU holds (render, sampling,
        mimicking).
    device: the card (or cards) the figures were measured on.
    sources: figure name → where it comes from (file and key, or "assumed").
    """

    whole_job_s: float
    second_fill_s: float
    device: str
    sources: dict[str, str]

    def __post_init__(self) -> None:
        if not 0 < self.second_fill_s <= self.whole_job_s:
            raise ValueError(
                f"need 0 < second_fill_s <= whole_job_s, got second_fill_s={self.second_fill_s}, "
                f"whole_job_s={self.whole_job_s}"
            )


@dataclass(frozen=True)
class Workload:
    """The studio and the simulation's length.

    animators: people submitting fills.
    fill_interval_s: mean seconds between one animator's fills (default: one every 20 min).
    repeat_share: probability that a fill after an animator's first is on their current (adapted) scene.
    hours: simulated hours of fills measured, after ``warmup_hours`` that are simulated and not measured.
    service: ``fixed`` (each fill takes exactly its measured time) or ``exponential`` (random with that mean;
        the M/M/c check).
    cache_load_s: seconds a GPU spends reading a scene's artefacts from shared storage (policy ``shared``).
    seed: seeds every random draw.
    """

    animators: int = 100
    fill_interval_s: float = 1200.0
    repeat_share: float = 0.5
    hours: float = 200.0
    warmup_hours: float = 4.0
    service: Literal["fixed", "exponential"] = "fixed"
    cache_load_s: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.animators < 1:
            raise ValueError(f"animators must be >= 1, got {self.animators}")
        if self.fill_interval_s <= 0 or self.hours <= 0 or self.warmup_hours < 0 or self.cache_load_s < 0:
            raise ValueError(
                f"need fill_interval_s > 0, hours > 0, warmup_hours >= 0, cache_load_s >= 0, got "
                f"{self.fill_interval_s}, {self.hours}, {self.warmup_hours}, {self.cache_load_s}"
            )
        if not 0 <= self.repeat_share < 1:
            raise ValueError(f"repeat_share must be in [0, 1), got {self.repeat_share}")
        if self.service not in ("fixed", "exponential"):
            raise ValueError(f"service must be fixed or exponential, got {self.service!r}")

    @property
    def arrival_rate(self) -> float:
        """Fills per second from the whole studio."""
        return self.animators / self.fill_interval_s

    def offered_load(self, times: ServiceTimes) -> float:
        """GPUs kept busy on average when every repeat fill finds its scene's cache (a lower bound)."""
        return self.arrival_rate * (self.repeat_share * times.second_fill_s + (1 - self.repeat_share) * times.whole_job_s)


@dataclass(frozen=True)
class Fills:
    """Every fill of one run, in arrival order (N fills).

    arrival_s: (N,) submit times, increasing. scene: (N,) scene ids. repeat: (N,) whether the fill is on a
    scene an earlier fill started. scale: (N,) service-time multipliers (all 1 for fixed service).
    measure_from_s, until_s: the window whose arrivals are measured.
    """

    arrival_s: np.ndarray
    scene: np.ndarray
    repeat: np.ndarray
    scale: np.ndarray
    measure_from_s: float
    until_s: float


def draw_fills(w: Workload) -> Fills:
    """The run's fills: Poisson arrivals at `Workload.arrival_rate` over warm-up plus measured hours, each
    assigned to a uniformly drawn animator (the superposition of one Poisson process per animator)."""
    rng = np.random.default_rng(w.seed)
    until = (w.warmup_hours + w.hours) * 3600.0
    n = int(rng.poisson(w.arrival_rate * until))
    arrival = np.sort(rng.uniform(0.0, until, n))
    animator = rng.integers(0, w.animators, n)
    wants_repeat = rng.random(n) < w.repeat_share
    scale = rng.exponential(1.0, n) if w.service == "exponential" else np.ones(n)
    current = np.full(w.animators, -1)
    scene = np.empty(n, dtype=np.int64)
    repeat = np.zeros(n, dtype=bool)
    for i in range(n):  # an animator's first fill always starts a scene
        a = animator[i]
        if wants_repeat[i] and current[a] >= 0:
            repeat[i] = True
        else:
            current[a] = i
        scene[i] = current[a]
    return Fills(arrival, scene, repeat, scale, w.warmup_hours * 3600.0, until)


@dataclass(frozen=True)
class SimResult:
    """One (policy, GPU count) run, over the fills that arrived in the measured window.

    wait_*_s: seconds from submit to the fill's start on a GPU (percentiles and mean).
    turnaround_mean_s: mean seconds from submit to the result (wait + service).
    utilisation: GPU-seconds the measured fills took / (GPUs × measured seconds): the utilisation while below 1;
        at 1 or more the work outgrows the GPUs and the waits grow with the simulated hours (`saturated`).
    whole_job_share: share of fills that paid the whole job (new scenes plus repeats that missed the cache).
    """

    policy: Policy
    gpus: int
    fills: int
    wait_p50_s: float
    wait_p90_s: float
    wait_p99_s: float
    wait_mean_s: float
    turnaround_mean_s: float
    utilisation: float
    whole_job_share: float

    @property
    def saturated(self) -> bool:
        """More work than GPU time: no steady state, the waits only say how long the run was."""
        return self.utilisation >= 0.99


def simulate(fills: Fills, times: ServiceTimes, gpus: int, policy: Policy, cache_load_s: float = 5.0) -> SimResult:
    """Run ``fills`` on ``gpus`` GPUs under ``policy`` (see the module docstring)."""
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    if policy in ("affinity", "spill"):
        start, cost, whole = _affinity(fills, times, gpus, cache_load_s if policy == "spill" else None)
    elif policy in ("shared", "local"):
        start, cost, whole = _pool(fills, times, gpus, cache_load_s if policy == "shared" else None)
    else:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    keep = fills.arrival_s >= fills.measure_from_s
    wait = (start - fills.arrival_s)[keep]
    p50, p90, p99 = (float(v) for v in np.percentile(wait, [50, 90, 99]))
    span = fills.until_s - fills.measure_from_s
    return SimResult(
        policy=policy,
        gpus=gpus,
        fills=int(keep.sum()),
        wait_p50_s=p50,
        wait_p90_s=p90,
        wait_p99_s=p99,
        wait_mean_s=float(wait.mean()),
        turnaround_mean_s=float((wait + cost[keep]).mean()),
        utilisation=float(cost[keep].sum() / (gpus * span)),
        whole_job_share=float(whole[keep].mean()),
    )


def _pool(fills: Fills, times: ServiceTimes, gpus: int, load_s: float | None) -> tuple[np.ndarray, ...]:
    """One FIFO queue, cache-blind: start and service seconds of every fill, and whether it paid the whole
    job. ``load_s`` None: no shared storage (a GPU reuses only what it adapted itself)."""
    n = len(fills.arrival_s)
    start = np.empty(n)
    cost = np.empty(n)
    whole = np.zeros(n, dtype=bool)
    free = [(0.0, g) for g in range(gpus)]  # (time the GPU frees, GPU): the GPU idle longest pops first
    held: dict[int, dict[int, float]] = {}  # scene → GPU → time its artefacts are ready there
    for i in range(n):
        t, s, k = fills.arrival_s[i], int(fills.scene[i]), fills.scale[i]
        ready_at, g = heapq.heappop(free)
        begin = max(t, ready_at)
        where = held.setdefault(s, {})
        if where.get(g, math.inf) <= begin:
            c = times.second_fill_s * k
        elif load_s is not None and min(where.values(), default=math.inf) <= begin:
            c = times.second_fill_s * k + load_s
        else:
            c, whole[i] = times.whole_job_s * k, True
        end = begin + c
        where.setdefault(g, end)
        start[i], cost[i] = begin, c
        heapq.heappush(free, (end, g))
    return start, cost, whole


def _affinity(fills: Fills, times: ServiceTimes, gpus: int, spill_load_s: float | None) -> tuple[np.ndarray, ...]:
    """One FIFO queue per GPU, placed at submit: start and service seconds of every fill, and whether it paid
    the whole job. ``spill_load_s`` None: repeat fills always wait for their scene's GPU; else a repeat whose
    scene's GPUs are all busy goes to an idle GPU and loads the scene from shared storage for that long."""
    n = len(fills.arrival_s)
    start = np.empty(n)
    cost = np.empty(n)
    free_at = [0.0] * gpus
    ends: list[deque[float]] = [deque() for _ in range(gpus)]  # end times of fills queued or running, per GPU
    held: dict[int, dict[int, float]] = {}  # scene → GPU → time its artefacts are ready there
    for i in range(n):
        t, s, k = fills.arrival_s[i], int(fills.scene[i]), fills.scale[i]
        idle = min(range(gpus), key=free_at.__getitem__)  # the GPU idle longest, if any is idle
        if fills.repeat[i]:
            where = held[s]
            g = min(where, key=free_at.__getitem__)  # the scene's GPU that frees first
            c = times.second_fill_s * k
            if spill_load_s is not None and free_at[g] > t and free_at[idle] <= t and min(where.values()) <= t:
                g, c = idle, c + spill_load_s
                where[g] = t + c
        else:
            g = idle
            if free_at[g] > t:  # none idle: the shortest queue
                for q in ends:
                    while q and q[0] <= t:
                        q.popleft()
                g = min(range(gpus), key=lambda h: (len(ends[h]), free_at[h]))
            c = times.whole_job_s * k
            held[s] = {g: max(t, free_at[g]) + c}
        begin = max(t, free_at[g])
        free_at[g] = begin + c
        ends[g].append(free_at[g])
        start[i], cost[i] = begin, c
    return start, cost, ~fills.repeat


def sweep(fills: Fills, times: ServiceTimes, gpus: range, cache_load_s: float = 5.0) -> list[SimResult]:
    """`simulate` for every policy and GPU count (the same fills for all)."""
    return [simulate(fills, times, g, p, cache_load_s) for p in POLICIES for g in gpus]


def gpus_needed(results: list[SimResult], policy: Policy, limit_s: float = 120.0, stat: str = "wait_p50_s") -> int | None:
    """The fewest GPUs from which on ``stat`` stays under ``limit_s`` seconds for ``policy`` (None: not within
    the swept counts)."""
    rows = sorted((r for r in results if r.policy == policy), key=lambda r: r.gpus)
    found = None
    for r in reversed(rows):
        if getattr(r, stat) >= limit_s:
            break
        found = r.gpus
    return found


def erlang_c_mean_wait(arrival_rate: float, service_rate: float, servers: int) -> float:
    """Mean wait in queue of M/M/c (Erlang C), seconds: ``C(c, a) / (c·μ − λ)`` with ``a = λ/μ``.

    arrival_rate: λ, fills per second. service_rate: μ, fills per second per GPU. servers: c.
    Raises ValueError when λ >= c·μ (no steady state)."""
    a = arrival_rate / service_rate
    if a >= servers:
        raise ValueError(f"unstable: offered load {a:.3f} >= servers {servers}")
    terms = [a**k / math.factorial(k) for k in range(servers)]
    top = a**servers / math.factorial(servers) * servers / (servers - a)
    return top / (sum(terms) + top) / (servers * service_rate - arrival_rate)
