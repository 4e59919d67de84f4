"""Two-tower retrieval: training with in-batch sampled softmax and log-Q correction, the item
embedding table, and the ANN index over it.

In-batch negatives are drawn in proportion to item popularity, so without correction the model
learns to demote popular items; subtracting log q(item) from each logit (Yi et al., 2019)
removes that sampling bias.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from contract.arrays import FloatArray, IntArray
from contract.features import FeatureTables
from training.feeds import torch_runner, user_feed
from training.networks import ItemTower, UserTower, user_tower_signature
from training.progress import Progress
from training.split import POSITIVE_RATING
from training.tables import Interactions

log = logging.getLogger("cascade.training")


@dataclass(frozen=True)
class RetrievalConfig:
    dim: int = 64
    epochs: int = 30
    batch_size: int = 1024
    learning_rate: float = 3e-3
    temperature: float = 0.2
    user_id_dropout: float = 0.1  # trains the "unknown user" embedding (id 0) for cold start
    log_q_correction: bool = True


@dataclass
class RetrievalModel:
    user_tower: UserTower
    item_tower: ItemTower
    item_embeddings: FloatArray  # (n_items, dim), unit norm

    def user_embeddings(self, features: FeatureTables, users: IntArray) -> FloatArray:
        signature = user_tower_signature(features.layout, self.item_embeddings.shape[1])
        return torch_runner(self.user_tower, signature)(user_feed(features, users))


def train_retrieval(
    train: Interactions,
    features: FeatureTables,
    n_users: int,
    n_items: int,
    *,
    seed: int,
    config: RetrievalConfig | None = None,
    progress: bool = True,
) -> RetrievalModel:
    config = config or RetrievalConfig()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pos = train.take(train.rating >= POSITIVE_RATING)
    if len(pos) == 0:
        raise ValueError("no positive interactions to train retrieval on")
    user_tower = UserTower(n_users, n_items, features.layout, config.dim)
    item_tower = ItemTower(n_items, features.layout, config.dim)
    params = [*user_tower.parameters(), *item_tower.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    frequency = np.bincount(pos.item, minlength=n_items).astype(np.float64)
    log_q = torch.from_numpy(np.log(frequency / frequency.sum() + 1e-12).astype(np.float32))
    user_dense = torch.from_numpy(features.user_dense)
    item_dense = torch.from_numpy(features.item_dense)
    history = torch.from_numpy(features.history)
    steps = max(1, len(pos) // config.batch_size)
    bar = Progress(config.epochs * steps, "retrieval", "step", enabled=progress)
    user_tower.train()
    item_tower.train()
    for _ in range(config.epochs):
        order = rng.permutation(len(pos))
        for step in range(steps):
            rows = order[step * config.batch_size : (step + 1) * config.batch_size]
            users = torch.from_numpy(pos.user[rows])
            items = torch.from_numpy(pos.item[rows])
            ids = users + 1
            drop = torch.from_numpy(rng.random(len(rows)) < config.user_id_dropout)
            ids = torch.where(drop, torch.zeros_like(ids), ids)
            # The positive is blanked from its user's history (see feeds.ranker_feed).
            own = history[users]
            own = torch.where(own == (items + 1)[:, None], torch.zeros_like(own), own)
            u = user_tower(ids[:, None], user_dense[users], own)
            v = item_tower(items + 1, item_dense[items])
            logits = u @ v.T / config.temperature
            if config.log_q_correction:
                logits = logits - log_q[items][None, :]
            # Another row's positive that is the same item is not a negative.
            same = (items[None, :] == items[:, None]) & ~torch.eye(len(rows), dtype=torch.bool)
            logits = logits.masked_fill(same, float("-inf"))
            loss = F.cross_entropy(logits, torch.arange(len(rows)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    user_tower.eval()
    item_tower.eval()
    with torch.no_grad():
        all_items = torch.arange(n_items)
        embeddings = item_tower(all_items + 1, item_dense).numpy().astype(np.float32)
    return RetrievalModel(user_tower, item_tower, embeddings)


class ItemIndex:
    """Maximum-inner-product search over the item embeddings.

    HNSW is the served index; a flat (exact) index is the reference its recall is measured
    against. Both answer with the ``k`` best items per query after removing excluded items.
    """

    def __init__(self, embeddings: FloatArray, *, exact: bool = False, m: int = 32) -> None:
        dim = embeddings.shape[1]
        self.exact = exact
        self.hnsw: faiss.IndexHNSWFlat | None = None
        self.index: faiss.Index
        if exact:
            self.index = faiss.IndexFlatIP(dim)
        else:
            self.hnsw = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
            self.hnsw.hnsw.efConstruction = 200
            self.index = self.hnsw
        self.index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
        self.n_items = embeddings.shape[0]

    def search(
        self, queries: FloatArray, k: int, exclude: list[IntArray] | None = None
    ) -> IntArray:
        """Top-k item indices per query, best first, padded with -1."""
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        depth = min(self.n_items, k + extra)
        if self.hnsw is not None:
            self.hnsw.hnsw.efSearch = max(depth, 128)
        _, found = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), depth)
        out = np.full((len(queries), k), -1, dtype=np.int64)
        for row in range(len(queries)):
            items = found[row][found[row] >= 0]
            if exclude is not None and len(exclude[row]):
                items = items[~np.isin(items, exclude[row])]
            out[row, : min(k, len(items))] = items[:k]
        return out

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))
