"""The parallel run's ordering gives every worker an equal share of the long scenarios."""

from __future__ import annotations

from support.ordering import balanced_order


def _slices(order: list[str], workers: int) -> list[list[str]]:
    size, extra = divmod(len(order), workers)
    out, start = [], 0
    for i in range(workers):
        end = start + size + (1 if i < extra else 0)
        out.append(order[start:end])
        start = end
    return out


def test_long_tests_are_spread_one_per_slice_and_lead_their_slice() -> None:
    ids = [f"t{i:02d}" for i in range(40)]
    durations = {"t00": 140.0, "t01": 100.0, "t02": 60.0, "t03": 45.0, "t04": 30.0}
    order = balanced_order(ids, 4, durations)
    assert sorted(order) == ids  # nothing lost or repeated
    slices = _slices(order, 4)
    assert [s[0] for s in slices] == ["t00", "t01", "t02", "t03"]
    assert sum(len(s) for s in slices) == 40 and {len(s) for s in slices} == {10}
    loads = [sum(durations.get(t, 0.5) for t in s) for s in slices]
    assert loads.index(max(loads)) == 0 and "t04" in slices[3]  # the 30 s one joins the lightest


def test_one_worker_keeps_the_collection_order() -> None:
    ids = ["b", "a", "c"]
    assert balanced_order(ids, 1, {"c": 9.0}) == ids
