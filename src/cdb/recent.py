"""``RecentIds``: the newest ids a component remembers to do each thing once.

Redelivery (a consumer restarted, an order resent) reaches back only so far, so the
ids that make an effect happen once need not be kept forever: risk's decided signals
and applied fills, the venues' finished orders all keep the newest ``limit``.
"""

from __future__ import annotations

from collections.abc import Iterator


class RecentIds:
    """An insertion-ordered set of at most ``limit`` ids; the oldest goes first.

    Args:
        limit: how many ids are kept.
    """

    __slots__ = ("_ids", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._ids: dict[str, None] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: str) -> str | None:
        """Remember ``key`` (in its first place if known); the id forgotten for it."""
        ids = self._ids
        ids[key] = None
        if len(ids) > self.limit:
            oldest = next(iter(ids))
            del ids[oldest]
            return oldest
        return None

    def discard(self, key: str) -> None:
        self._ids.pop(key, None)
