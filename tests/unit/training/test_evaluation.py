"""Evaluation helpers: merging candidate sources."""

from __future__ import annotations

import numpy as np

from training.evaluation import merge_sources


def test_merged_sources_keep_the_primary_head_and_add_the_secondary_best() -> None:
    primary = np.array([[1, 2, 3, 4, 5], [7, 8, -1, -1, -1]])
    secondary = np.array([[2, 9, 8, 1, 0], [8, 9, -1, -1, -1]])
    merged = merge_sources(primary, secondary, 2)
    assert merged[0].tolist() == [1, 2, 3, 9, 8]  # 2 is already in the head
    assert merged[1].tolist() == [7, 8, 9, -1, -1]
