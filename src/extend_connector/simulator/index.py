"""A change-date index: keys kept sorted by (changed epoch-ms, key) for inclusive changedSince
paging.

Lists page over this order, so a record changed while a client pages moves to the END of
the order (its new change date is the newest): a client that re-reads from its high-water
mark minus an overlap sees it again. Updates are O(log n) search plus one list move.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable


class ChangeIndex:
    def __init__(self) -> None:
        self._order: list[tuple[int, str]] = []
        self._at: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._order)

    def load(self, items: Iterable[tuple[int, str]]) -> None:
        """Bulk load (initial data): one sort instead of n insertions."""
        for changed_ms, key in items:
            self._at[key] = changed_ms
        self._order = sorted((ms, key) for key, ms in self._at.items())

    def touch(self, key: str, changed_ms: int) -> None:
        old = self._at.get(key)
        if old is not None:
            i = bisect_left(self._order, (old, key))
            if i < len(self._order) and self._order[i] == (old, key):
                del self._order[i]
        self._at[key] = changed_ms
        insort(self._order, (changed_ms, key))

    def query(
        self,
        since_ms: int | None,
        offset: int,
        limit: int,
        keep: Callable[[str], bool] | None = None,
    ) -> tuple[int, list[str]]:
        """(total matching, keys of the requested slice), oldest change first."""
        start = 0 if since_ms is None else bisect_left(self._order, (since_ms, ""))
        if keep is None:
            total = len(self._order) - start
            return total, [key for _, key in self._order[start + offset : start + offset + limit]]
        matching = [key for _, key in self._order[start:] if keep(key)]
        return len(matching), matching[offset : offset + limit]
