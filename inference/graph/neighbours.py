"""The similar-items neighbours of one user tower version, read from its directory.

The build writes each item's co-occurrence neighbours (:data:`contract.names.SIMILAR_FILE`,
CSR items x items, weights in (0, 1]) beside the item embeddings they are served with, so a
canary of the user tower brings its own. A version built before them has no file: the
similar-items surface then answers from the embeddings alone (``similar:embeddings``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from scipy import sparse

from contract.arrays import FloatArray, IntArray
from contract.names import SIMILAR_FILE

#: What reading a damaged ``.npz`` raises besides ``OSError``/``ValueError``.
_DAMAGED = (KeyError, EOFError, zipfile.BadZipFile)


class Neighbours:
    """Each item's neighbours, best first; immutable and shared by every request."""

    def __init__(self, weights: sparse.csr_matrix) -> None:
        matrix = sparse.csr_matrix(weights, dtype=np.float32)
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"neighbours must be items x items, got {matrix.shape}")
        if matrix.nnz and not np.all(np.isfinite(matrix.data)):
            raise ValueError("neighbour weights must be finite")
        matrix.sort_indices()
        self._matrix = matrix
        for array in (matrix.indptr, matrix.indices, matrix.data):
            array.setflags(write=False)

    @property
    def n_items(self) -> int:
        return int(self._matrix.shape[0])

    @classmethod
    def load(cls, directory: Path, n_items: int) -> Neighbours | None:
        """The neighbours in a user tower version directory whose catalog has ``n_items``
        items; None when it has none. A file that cannot be read, or that is not an
        ``n_items`` square matrix, raises ``ValueError`` naming it."""
        path = Path(directory) / SIMILAR_FILE
        if not path.is_file():
            return None
        try:
            neighbours = cls(sparse.load_npz(path))
        except (ValueError, *_DAMAGED) as exc:
            raise ValueError(f"{path}: not a sparse neighbour matrix ({exc})") from exc
        if neighbours.n_items != n_items:
            raise ValueError(
                f"{path}: neighbours of {neighbours.n_items} items, the catalog has {n_items}"
            )
        return neighbours

    def of(self, item: int) -> tuple[IntArray, FloatArray]:
        """``item``'s neighbours and their weights, heaviest first (ties: lower index first)."""
        if not 0 <= item < self.n_items:
            raise IndexError(f"item index {item} out of range 0..{self.n_items - 1}")
        start, end = self._matrix.indptr[item], self._matrix.indptr[item + 1]
        items = self._matrix.indices[start:end].astype(np.int64)
        weights = self._matrix.data[start:end].astype(np.float32)
        order = np.argsort(-weights, kind="stable")
        return items[order], weights[order]
