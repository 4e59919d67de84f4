"""The candidate merge both the build and the graph run: quotas, order, de-duplication."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from contract.arrays import IntArray
from contract.candidates import ITEM_ITEM, POPULAR, SHARES, SOURCES, TWO_TOWER, merge, quotas

TOWER_BIT, ITEM_BIT, POPULAR_BIT = (1 << SOURCES.index(s) for s in (TWO_TOWER, ITEM_ITEM, POPULAR))


def _lists(towers: range, item_item: list[int], popular: list[int]) -> dict[str, np.ndarray]:
    return {
        TWO_TOWER: np.array(list(towers), dtype=np.int64),
        ITEM_ITEM: np.array(item_item, dtype=np.int64),
        POPULAR: np.array(popular, dtype=np.int64),
    }


def test_each_source_gets_its_share_and_the_towers_the_rest() -> None:
    depth = 100
    items, masks = merge(
        _lists(range(1000), list(range(5000, 5100)), list(range(6000, 6100))), depth
    )
    assert len(items) == depth
    assert len(np.unique(items)) == depth
    assert ((masks & ITEM_BIT) > 0).sum() == round(depth * SHARES[ITEM_ITEM])
    assert ((masks & POPULAR_BIT) > 0).sum() == round(depth * SHARES[POPULAR])
    assert ((masks & TOWER_BIT) > 0).sum() == quotas(depth, {ITEM_ITEM: 100, POPULAR: 100})[
        TWO_TOWER
    ]


def test_the_head_holds_every_sources_best_in_turn() -> None:
    items, masks = merge(_lists(range(100), [500, 501], [600]), 20)
    assert items[:4].tolist() == [0, 500, 600, 1]
    assert masks[:4].tolist() == [TOWER_BIT, ITEM_BIT, POPULAR_BIT, TOWER_BIT]


def test_an_item_two_sources_found_is_listed_once_with_both_bits() -> None:
    items, masks = merge(_lists(range(50), [0, 700], [1]), 20)
    assert items.tolist().count(0) == 1
    assert masks[items.tolist().index(0)] == TOWER_BIT | ITEM_BIT
    assert masks[items.tolist().index(1)] == TOWER_BIT | POPULAR_BIT
    assert 700 in items  # the item-item source's slot went to its next item


def test_a_dry_source_leaves_its_slots_to_the_others() -> None:
    items, _masks = merge(_lists(range(3), [], [-1, 900]), 10)
    # 3 tower items, 1 popular, then the sources are exhausted: fewer than depth, never -1.
    assert sorted(items.tolist()) == [0, 1, 2, 900]
    items, _ = merge({TWO_TOWER: np.arange(100)}, 10)
    assert items.tolist() == list(range(10))


@pytest.mark.parametrize("depth", [1, 7, 200])
def test_merge_never_exceeds_depth_nor_repeats(depth: int) -> None:
    rng = np.random.default_rng(depth)
    lists = {name: rng.permutation(300)[:150] for name in SOURCES}
    items, masks = merge(lists, depth)
    assert len(items) == depth
    assert len(set(items.tolist())) == depth
    assert (masks > 0).all()
    for bit, name in enumerate(SOURCES):  # every bit is true: the source proposed the item
        flagged = items[(masks & (1 << bit)) > 0]
        assert np.isin(flagged, lists[name]).all()


def one_read_at_a_time(lists: Mapping[str, IntArray], depth: int) -> tuple[IntArray, IntArray]:
    """The merge rule read literally: one item per turn (the reference)."""
    clean = {name: _valid_reference(lists[name]) for name in SOURCES if name in lists}
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


def _valid_reference(items: IntArray) -> IntArray:
    items = np.asarray(items, dtype=np.int64).reshape(-1)
    items = items[items >= 0]
    _, first = np.unique(items, return_index=True)
    return items[np.sort(first)]


def test_merge_reads_runs_at_once_exactly_as_one_item_per_turn() -> None:
    """The request path's merge reads several turns at once; on random, overlapping lists
    (sources missing, dry, padded, longer and shorter than their quotas) it must give what
    reading one item per turn gives."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n_items = int(rng.integers(5, 400))
        depth = int(rng.integers(1, 300))
        lists: dict[str, IntArray] = {}
        for name in SOURCES:
            if rng.random() < 0.85:
                k = int(rng.integers(0, min(n_items, 3 * depth) + 1))
                lists[name] = rng.choice(n_items, size=k, replace=False).astype(np.int64)
                if k and rng.random() < 0.1:
                    lists[name][0] = -1
        items, masks = merge(lists, depth)
        expected_items, expected_masks = one_read_at_a_time(lists, depth)
        np.testing.assert_array_equal(items, expected_items)
        np.testing.assert_array_equal(masks, expected_masks)
