"""The candidate merge both the build and the graph run: quotas, order, de-duplication."""

from __future__ import annotations

import numpy as np
import pytest

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
