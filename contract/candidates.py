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
import numpy.typing as npt

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

    Computed without reading one item at a time (the request path merges a thousand items):
    in the turns, every source reads its r-th item in round r until its quota is in, so what
    decides the merge is the round each source stops at. Starting from "each reads its whole
    list", stopping rounds are recomputed from the reads they imply until they settle; fewer
    reads only turn repeats into new items, so the rounds only move earlier, and the first
    ones that reproduce themselves are the turn-by-turn ones.
    """
    clean = {name: _valid(lists[name]) for name in SOURCES if name in lists}
    names = [name for name in SOURCES if name in clean]
    size = 1 + max((int(items.max()) for items in clean.values() if len(items)), default=0)
    if not names or depth <= 0 or not any(len(clean[name]) for name in names):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    quota = quotas(depth, {name: len(items) for name, items in clean.items()})
    limits = np.array([quota.get(name, 0) for name in names])
    lengths = np.array([len(clean[name]) for name in names])
    grid = np.full((int(lengths.max()), len(names)), -1, dtype=np.int64)
    for column, name in enumerate(names):
        grid[: lengths[column], column] = clean[name]
    rounds = np.arange(len(grid))[:, None]
    stops = np.where(limits > 0, lengths, 0)
    while True:  # the rounds each source stops at, until they settle
        read = np.where(rounds < stops, grid, -1).reshape(-1)
        new = _first_reads(read)
        added = np.cumsum(new.reshape(grid.shape), axis=0)
        full = added >= limits
        reached = np.where(full.any(axis=0), full.argmax(axis=0) + 1, lengths)
        settled = np.minimum(stops, np.where(limits > 0, reached, 0))
        if np.array_equal(settled, stops):
            break
        stops = settled
    bit = np.tile([1 << SOURCES.index(name) for name in names], len(grid))
    taken = read >= 0
    bits = np.zeros(size, dtype=np.int64)
    np.bitwise_or.at(bits, read[taken], bit[taken])
    items = [read[new]]
    count = int(new.sum())
    for column, name in enumerate(names):  # then whatever is left, the towers' first
        if count >= depth:
            break
        rest = clean[name][stops[column] :]
        fresh = bits[rest] == 0
        positions = np.flatnonzero(fresh)
        want = depth - count
        stop = int(positions[want - 1]) + 1 if len(positions) >= want else len(rest)
        bits[rest[:stop]] |= 1 << SOURCES.index(name)
        items.append(rest[:stop][fresh[:stop]])
        count += int(fresh[:stop].sum())
    merged = np.concatenate(items)
    return merged, bits[merged]


def _first_reads(read: IntArray) -> npt.NDArray[np.bool_]:
    """Which entries (not -1) are the first of their item in ``read``."""
    taken = np.flatnonzero(read >= 0)
    items = read[taken]
    first = np.empty(int(items.max()) + 1 if len(items) else 0, dtype=np.int64)
    # Each item's earliest position: written backwards, so the last write to an item is its
    # first read. NumPy assigns a 1-D index array in order (not promised by its docs, so
    # tests/unit/contract/test_candidates.py checks the merge against one read per turn);
    # np.minimum.at says the same with a promise and costs the merge 70% more.
    first[items[::-1]] = taken[::-1]
    out = np.zeros(len(read), dtype=bool)
    out[taken] = first[items] == taken
    return out


def _valid(items: IntArray) -> IntArray:
    """A source's items without padding and repeats (the first of each kept, in order)."""
    items = np.asarray(items, dtype=np.int64).reshape(-1)
    items = items[items >= 0]
    return items[_first_reads(items)]
