"""Model input feeds built from feature tables, and runners that score them.

The same feed builders serve the torch models during evaluation, the ONNX sessions in the INT8
gate and parity checks, and (later) the serving graph, so every path sees identical tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from contract.arrays import FloatArray, IntArray
from contract.features import FeatureTables
from contract.signature import Signature
from training.networks import COMBINER_INPUTS

Feed = dict[str, npt.NDArray[np.generic]]
#: Scores a feed: returns the first output as float32 of shape (batch, ...).
Runner = Callable[[Feed], FloatArray]


def user_feed(features: FeatureTables, users: IntArray) -> Feed:
    return {
        "user_id": (users + 1).astype(np.int64)[:, None],
        "user_dense": features.user_dense[users],
        "history": features.history[users],
    }


def ranker_feed(features: FeatureTables, users: IntArray, items: IntArray) -> Feed:
    """Inputs of a ranker for (user, item) pairs.

    The candidate is blanked out of the user's history: in training a positive is usually in
    its own user's history, which would teach "in history => positive", a signal that never
    exists in serving (seen items are not candidates), where the blanking changes nothing.
    """
    return {
        "user_id": (users + 1).astype(np.int64)[:, None],
        "item_id": (items + 1).astype(np.int64)[:, None],
        "user_dense": features.user_dense[users],
        "item_dense": features.item_dense[items],
        "history": history_without(features.history[users], items),
    }


def history_without(history: IntArray, items: IntArray) -> IntArray:
    """History rows with the given item (one per row) replaced by padding."""
    return np.where(history == (items + 1)[:, None], 0, history)


def torch_runner(module: nn.Module, signature: Signature) -> Runner:
    """Run a network on a feed with the inputs in signature order, under no_grad."""
    names = [spec.name for spec in signature.inputs]

    def run(feed: Feed) -> FloatArray:
        module.eval()
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names))
        return np.asarray(out.numpy(), dtype=np.float32)

    return run


def onnx_runner(session: object) -> Runner:
    """Run an onnxruntime InferenceSession, returning its first output."""

    def run(feed: Feed) -> FloatArray:
        outputs = session.run(None, feed)  # type: ignore[attr-defined]
        return np.asarray(outputs[0], dtype=np.float32)

    return run


def run_chunked(run: Runner, feed: Mapping[str, npt.NDArray[np.generic]], chunk: int) -> FloatArray:
    """Score a large feed in chunks to bound memory."""
    n = len(next(iter(feed.values())))
    parts = [
        run({k: v[start : start + chunk] for k, v in feed.items()}) for start in range(0, n, chunk)
    ]
    return np.concatenate(parts, axis=0)


def random_feeds(
    features: FeatureTables, rng: np.random.Generator
) -> dict[str, Callable[[int], Feed]]:
    """Feeds of a given batch size with random users and items, per model kind.

    For parity checks and latency measurements, where realistic values matter but the choice
    of users does not. Keys: ``user_tower``, ``ranker``, ``combiner``.
    """
    n_users, n_items = features.user_dense.shape[0], features.item_dense.shape[0]

    def tower(batch: int) -> Feed:
        return user_feed(features, rng.integers(0, n_users, size=batch))

    def ranker(batch: int) -> Feed:
        users = rng.integers(0, n_users, size=batch)
        return ranker_feed(features, users, rng.integers(0, n_items, size=batch))

    def combiner(batch: int) -> Feed:
        return {"scores": rng.normal(size=(batch, len(COMBINER_INPUTS))).astype(np.float32)}

    return {"user_tower": tower, "ranker": ranker, "combiner": combiner}
