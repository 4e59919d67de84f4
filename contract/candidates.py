"""How retrieval merges its candidate sources, the same in the build and in the graph.

Three sources propose candidates, each best first: the two-tower model's nearest items
(:data:`TWO_TOWER`), the item-item model's best items for the user's history
(:data:`ITEM_ITEM`, collaborative) and the user's demographic segment's most popular items
(:data:`POPULAR`). Each source but the towers gets a fixed share of the candidate slots; the
towers fill the rest. The merged list takes the sources' items in turn by rank (the towers'
first, then the item-item source's first, then the segment's first, then each one's second,
...), so its head holds every source's best: under load ranking scores only the head. An item
two sources found is listed once, carrying both sources in its bit mask.

The build trains the combiner and the rankers on these merged lists, so what the models learn
on is what serving asks them to rank.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from contract.arrays import IntArray

TWO_TOWER = "two_tower"
ITEM_ITEM = "item_item"
POPULAR = "popular"
#: The sources in merge order; a candidate's mask has bit ``i`` set when ``SOURCES[i]`` found it.
SOURCES = (TWO_TOWER, ITEM_ITEM, POPULAR)
#: The share of the candidate slots each source but the towers gets.
SHARES: Mapping[str, float] = {ITEM_ITEM: 0.1, POPULAR: 0.05}


def quotas(depth: int, available: Mapping[str, int]) -> dict[str, int]:
    """Slots per source for ``depth`` candidates: each non-tower source its share (or what it
    has), the towers the rest; a source without items gets none."""
    out = {
        name: min(round(depth * SHARES[name]), available.get(name, 0))
        for name in SOURCES
        if name != TWO_TOWER
    }
    out[TWO_TOWER] = depth - sum(out.values())
    return out


def proposals(depth: int) -> int:
    """How many items to ask each non-tower source for: twice the largest share, room for
    the items another source already proposed."""
    return 2 * max(round(depth * share) for share in SHARES.values())


def merge(lists: Mapping[str, IntArray], depth: int) -> tuple[IntArray, IntArray]:
    """Merged candidates (at most ``depth``, -1 never) and their source masks.

    ``lists``: each source's items, best first, already without what the user has seen (-1
    entries are ignored). A source absent from ``lists`` proposes nothing; slots a source
    cannot fill (it ran dry, or its items were already in) go to the other sources' next
    items, the towers' first.
    """
    clean = {name: _valid(lists[name]) for name in SOURCES if name in lists}
    quota = quotas(depth, {name: len(items) for name, items in clean.items()})
    items: list[int] = []
    masks: dict[int, int] = {}
    read = dict.fromkeys(clean, 0)  # how far into each source's list the merge has read

    def take(name: str, bit: int, limit: int) -> None:
        """Read ``name``'s next item: mark it if in, add it if ``limit`` allows."""
        item = int(clean[name][read[name]])
        if item in masks:
            masks[item] |= 1 << bit
        elif len(items) < limit:
            masks[item] = 1 << bit
            items.append(item)
        else:
            return
        read[name] += 1

    added = dict.fromkeys(clean, 0)
    progress = True
    while len(items) < depth and progress:  # in turn, each within its quota
        progress = False
        for bit, name in enumerate(SOURCES):
            if name not in clean or read[name] >= len(clean[name]):
                continue
            if added[name] >= quota.get(name, 0):
                continue
            before = len(items)
            take(name, bit, depth)
            added[name] += len(items) - before
            progress = True
    for bit, name in enumerate(SOURCES):  # then whatever is left, the towers' first
        while name in clean and read[name] < len(clean[name]) and len(items) < depth:
            take(name, bit, depth)
    merged = np.array(items, dtype=np.int64)
    return merged, np.array([masks[i] for i in items], dtype=np.int64)


def _valid(items: IntArray) -> IntArray:
    items = np.asarray(items, dtype=np.int64).reshape(-1)
    return items[items >= 0]
