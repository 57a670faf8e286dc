"""The order a parallel run takes its tests in (used by tests/conftest.py)."""

from __future__ import annotations

SHORT_SECONDS = 0.5  # what a test missing from tests/durations.json is expected to take


def balanced_order(ids: list[str], workers: int, durations: dict[str, float]) -> list[str]:
    """`ids` reordered as `workers` consecutive slices of equal length (xdist's `worksteal` hands
    each worker one slice) whose expected times are as equal as the long tests allow, each slice
    longest first. Without this the long scenarios, which sit together in tests/acceptance/,
    all land in the first worker's slice and run one after another while the others idle."""
    if workers <= 1 or len(ids) < workers:
        return ids
    size, extra = divmod(len(ids), workers)
    capacity = [size + (1 if i < extra else 0) for i in range(workers)]
    bins: list[list[str]] = [[] for _ in range(workers)]
    load = [0.0] * workers
    by_length = sorted(ids, key=lambda i: -durations.get(i, SHORT_SECONDS))
    for test_id in by_length:
        open_bins = [b for b in range(workers) if len(bins[b]) < capacity[b]]
        target = min(open_bins, key=lambda b: load[b])
        bins[target].append(test_id)
        load[target] += durations.get(test_id, SHORT_SECONDS)
    return [test_id for slice_ in bins for test_id in slice_]
