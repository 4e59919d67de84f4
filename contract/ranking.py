"""The ranking stage as one model (``ranking``): what the build writes and the graph sends.

A request's user features travel once and every candidate names its row (``owner``); item
features are looked up inside the model from the version's own item table, so a call carries
item ids, not item rows. The model runs both rankers and the combiner in one graph, built from
the same ONNX files the separate models serve (:mod:`training.fused`), so its scores equal
theirs and the separate models stay the path for a canary of one of them.

The pre-ranker (``preranker.json`` beside the combiner) cuts the merged candidates to a head
before ranking: a logistic blend of the two scores retrieval already computed (the towers'
and the item-item score), fit on the validation split, with the head size the build's quality
gate chose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from contract.arrays import FloatArray, IntArray
from contract.features import HISTORY_LENGTH
from contract.names import MODELS
from contract.repository import RepositoryReader
from contract.signature import Signature, TensorSpec

#: The one-call ranking model: rankers and combiner in one graph.
RANKING: Final = "ranking"
#: Beside the combiner's ``model.onnx``: the pre-ranker's weights and head size.
PRERANKER_FILE: Final = "preranker.json"


def graph_models(repo: RepositoryReader) -> list[str]:
    """The models a runtime loads for the graph: the four it needs, and the one-call ranking
    model when the repository has it (builds before it do not)."""
    return [*MODELS, *([RANKING] if repo.versions(RANKING) else [])]


def ranking_signature(user_dim: int, *, item_item: bool) -> Signature:
    """Inputs with their whole shapes (the model does not batch along one axis: users and
    candidates have their own lengths). ``item_item``: whether the combiner blends the
    item-item score (combiner versions before it blend three scores)."""
    inputs = [
        TensorSpec("user_id", "INT64", (-1, 1)),
        TensorSpec("user_dense", "FP32", (-1, user_dim)),
        TensorSpec("history", "INT64", (-1, HISTORY_LENGTH)),
        TensorSpec("item_id", "INT64", (-1, 1)),
        TensorSpec("owner", "INT64", (-1,)),
        TensorSpec("retrieval", "FP32", (-1, 1)),
    ]
    if item_item:
        inputs.append(TensorSpec("item_item", "FP32", (-1, 1)))
    return Signature(inputs=tuple(inputs), outputs=(TensorSpec("score", "FP32", (-1, 1)),))


def feed_bytes(n_users: int, n_candidates: int, user_dim: int, *, item_item: bool) -> int:
    """Bytes of one call's inputs (for the before/after figure)."""
    per_user = 8 + 4 * user_dim + 8 * HISTORY_LENGTH
    per_candidate = 8 + 8 + 4 + (4 if item_item else 0)
    return n_users * per_user + n_candidates * per_candidate


@dataclass(frozen=True)
class Preranker:
    """score = w_retrieval * towers' score + w_item_item * item-item score + bias; the ``head``
    best go on to the rankers (0: all)."""

    w_retrieval: float
    w_item_item: float
    bias: float
    head: int

    def scores(self, retrieval: FloatArray, item_item: FloatArray | None) -> FloatArray:
        out = self.w_retrieval * np.asarray(retrieval, dtype=np.float32) + self.bias
        if item_item is not None:
            out = out + self.w_item_item * np.nan_to_num(np.asarray(item_item, np.float32))
        return np.asarray(out, dtype=np.float32)

    def select(self, retrieval: FloatArray, item_item: FloatArray | None, head: int) -> IntArray:
        """Positions of the ``head`` best candidates, best first (all, in order, when ``head``
        is 0 or covers them)."""
        n = len(retrieval)
        if head <= 0 or head >= n:
            return np.arange(n, dtype=np.int64)
        scores = self.scores(retrieval, item_item)
        top = np.argpartition(-scores, head - 1)[:head]
        return top[np.argsort(-scores[top], kind="stable")].astype(np.int64)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Preranker:
        data = json.loads(path.read_text())
        try:
            return cls(
                float(data["w_retrieval"]),
                float(data["w_item_item"]),
                float(data["bias"]),
                int(data["head"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a pre-ranker ({exc!r})") from exc
