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

    The turns are taken one read at a time only while two sources or more still have room;
    a source reading alone reads its run at once (the request path merges a thousand items).
    """
    clean = {name: _valid(lists[name]) for name in SOURCES if name in lists}
    quota = quotas(depth, {name: len(items) for name, items in clean.items()})
    merged = _Merge(clean, depth)
    added = dict.fromkeys(clean, 0)

    def open_sources() -> list[str]:
        return [
            name
            for name in SOURCES
            if name in clean
            and merged.read[name] < len(clean[name])
            and added[name] < quota.get(name, 0)
        ]

    while len(merged.items) < depth:  # in turn, each within its quota
        reading = open_sources()
        if not reading:
            break
        if len(reading) == 1:
            (name,) = reading
            added[name] += merged.run(name, quota[name] - added[name])
            continue
        # As many rounds at once as no source can reach its quota or the list its depth in.
        rounds = min(
            min(quota[name] - added[name] for name in reading),
            min(len(clean[name]) - merged.read[name] for name in reading),
            (depth - len(merged.items)) // len(reading),
        )
        if rounds > 1:
            for name, n in merged.rounds(reading, rounds).items():
                added[name] += n
            continue
        for name in reading:
            added[name] += merged.take(name)
    for name in SOURCES:  # then whatever is left, the towers' first
        if name in clean:
            merged.run(name, depth - len(merged.items))
    return merged.result()


class _Merge:
    """The merged list so far, each source's read position and each item's source bits
    (an array over the item indices the lists hold: 0, not in the list)."""

    def __init__(self, lists: Mapping[str, IntArray], depth: int) -> None:
        self.lists = lists
        self.depth = depth
        self.items: list[int] = []
        size = 1 + max((int(items.max()) for items in lists.values() if len(items)), default=0)
        self.bits = np.zeros(size, dtype=np.int64)
        self.read = dict.fromkeys(lists, 0)

    def take(self, name: str) -> int:
        """Read ``name``'s next item: mark it if in, add it if there is room (1 if added)."""
        item = int(self.lists[name][self.read[name]])
        bit = 1 << SOURCES.index(name)
        if self.bits[item]:
            self.bits[item] |= bit
            self.read[name] += 1
            return 0
        if len(self.items) >= self.depth:
            return 0
        self.bits[item] = bit
        self.items.append(item)
        self.read[name] += 1
        return 1

    def rounds(self, names: list[str], count: int) -> dict[str, int]:
        """``count`` turns of ``names`` at once, each reading its next item (the caller
        makes sure none runs out or fills up meanwhile). Returns how many each added."""
        block = np.stack(
            [self.lists[name][self.read[name] : self.read[name] + count] for name in names],
            axis=1,
        ).reshape(-1)  # in turn order: round by round, the sources in order
        _, first = np.unique(block, return_index=True)
        known = np.ones(len(block), dtype=bool)
        known[first] = False
        known |= self.bits[block] != 0
        bits = np.tile(np.array([1 << SOURCES.index(name) for name in names]), count)
        self.bits[block[~known]] = bits[~known]
        np.bitwise_or.at(self.bits, block[known], bits[known])
        self.items.extend(block[~known].tolist())
        for name in names:
            self.read[name] += count
        by_source = (~known).reshape(count, len(names)).sum(axis=0)
        return {name: int(n) for name, n in zip(names, by_source, strict=True)}

    def run(self, name: str, new: int) -> int:
        """Read ``name`` on until ``new`` items were added (or it ends): what :meth:`take`
        would do item by item, at once. Returns how many were added."""
        new = min(new, self.depth - len(self.items))
        rest = self.lists[name][self.read[name] :]
        if new <= 0 or len(rest) == 0:
            return 0
        known = self.bits[rest] != 0
        fresh = np.flatnonzero(~known)
        stop = int(fresh[new - 1]) + 1 if len(fresh) >= new else len(rest)
        read, seen = rest[:stop], known[:stop]
        bit = 1 << SOURCES.index(name)
        self.bits[read[seen]] |= bit  # a source lists an item once: no repeats to lose
        self.bits[read[~seen]] = bit
        self.items.extend(read[~seen].tolist())
        self.read[name] += stop
        return int(min(len(fresh), new))

    def result(self) -> tuple[IntArray, IntArray]:
        items = np.array(self.items, dtype=np.int64)
        return items, self.bits[items]


def _valid(items: IntArray) -> IntArray:
    """A source's items without padding and repeats (the first of each kept, in order)."""
    items = np.asarray(items, dtype=np.int64).reshape(-1)
    items = items[items >= 0]
    _, first = np.unique(items, return_index=True)
    return items[np.sort(first)]
