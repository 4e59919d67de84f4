"""The item-item score the combiner blends: for a user and a candidate, the sum of the
weights from each item the user has interacted with to the candidate (EASE, Steck 2019, or
item-kNN for large catalogues; fit by the build on every interaction it was given).

The weights live beside the combiner's ``model.onnx`` (:data:`contract.names.ITEM_ITEM_FILE`),
so a combiner version and the scores it was fit on travel together; a combiner version built
before them has no file and blends three scores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import sparse

from contract.arrays import FloatArray, IntArray
from contract.names import ITEM_ITEM_FILE


class ItemItemScores:
    """Scores of candidates from a user's items, over an items x items CSR matrix."""

    def __init__(self, weights: sparse.csr_matrix) -> None:
        matrix = sparse.csr_matrix(weights, dtype=np.float32)
        self.n_items = int(matrix.shape[0])
        # EASE's weights are dense: as an array, summing a user's rows is six times faster
        # than slicing CSR, for the same memory; item-kNN's (sparse) stay CSR.
        self._row_sum: Callable[[IntArray], FloatArray]
        if matrix.nnz > 0.5 * self.n_items**2:
            dense = matrix.toarray()
            self._row_sum = lambda rows: dense[rows].sum(axis=0, dtype=np.float32)
        else:
            self._row_sum = lambda rows: np.asarray(
                matrix[rows].sum(axis=0), dtype=np.float32
            ).ravel()

    @classmethod
    def load(cls, directory: Path) -> ItemItemScores | None:
        """The weights in a combiner version directory; None when it has none."""
        path = directory / ITEM_ITEM_FILE
        if not path.is_file():
            return None
        return cls(sparse.load_npz(path))

    def row(self, seen: IntArray) -> FloatArray:
        """Every item's score for a user who has interacted with ``seen`` (zeros for a user
        with no items the weights know)."""
        known = seen[(seen >= 0) & (seen < self.n_items)]
        if len(known) == 0:
            return np.zeros(self.n_items, dtype=np.float32)
        return self._row_sum(known)

    def best(self, row: FloatArray, seen: IntArray, n: int) -> IntArray:
        """The ``n`` best items of a user's :meth:`row`, best first, none of ``seen`` and none
        scored 0 or less (nothing links them to the user)."""
        row = row.copy()
        row[seen[(seen >= 0) & (seen < self.n_items)]] = -np.inf
        n = min(n, self.n_items)
        top = np.argpartition(-row, n - 1)[:n] if n < self.n_items else np.arange(self.n_items)
        top = top[np.argsort(-row[top], kind="stable")]
        best: IntArray = top[row[top] > 0].astype(np.int64)
        return best

    def pick(self, row: FloatArray, items: IntArray) -> FloatArray:
        """``items``' scores in a user's :meth:`row`; an item the weights do not know
        (another catalogue) scores 0, as for a user with no items."""
        out = np.zeros(len(items), dtype=np.float32)
        inside = (items >= 0) & (items < self.n_items)
        out[inside] = row[items[inside]]
        return out

    def scores(self, seen: IntArray, items: IntArray) -> FloatArray:
        """Each of ``items``' score for a user who has interacted with ``seen``."""
        return self.pick(self.row(seen), items)
