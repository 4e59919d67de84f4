"""Training of the two rankers and the combiner that blends them.

Rankers learn P(positive | user, item) with binary cross-entropy on the training split: the
positives (rating at or above the threshold) against uniformly sampled unseen items, which is
what a ranker meets among retrieval candidates. Low-rated items are not used as negatives:
they are items the user chose to watch, and treating them as "unwanted" teaches the ranker to
demote exactly the popular items that held-out positives are drawn from. The combiner is fit on
the validation split's retrieval candidates, so it learns how far to trust each stage on data
none of them was trained on, in the distribution it will score in serving.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from contract.arrays import BoolArray, FloatArray, IntArray
from contract.features import FeatureTables
from training.feeds import ranker_feed
from training.networks import Combiner, ranker_signature
from training.progress import Progress
from training.split import POSITIVE_RATING, sample_negatives
from training.tables import Interactions


@dataclass(frozen=True)
class RankingConfig:
    epochs: int = 3
    batch_size: int = 1024
    learning_rate: float = 2e-3
    weight_decay: float = 1e-6
    negatives_per_positive: int = 8
    #: The share of negatives drawn from the user's own retrieval candidates (the items
    #: serving asks the ranker to order), the rest uniformly from unseen items.
    candidate_negatives: float = 0.5


@dataclass(frozen=True)
class LabelledPairs:
    user: IntArray
    item: IntArray
    label: BoolArray

    def __len__(self) -> int:
        return len(self.user)


#: A user's merged retrieval candidates for each of ``users`` (rows -1 padded).
Pools = Callable[[IntArray], IntArray]


def labelled_pairs(
    part: Interactions,
    seen: Interactions,
    n_items: int,
    rng: np.random.Generator,
    negatives_per_positive: int,
    *,
    pools: Pools | None = None,
    pool_share: float = 0.0,
) -> LabelledPairs:
    """Positive pairs, each with ``negatives_per_positive`` items its user never touched:
    ``pool_share`` of them from the user's retrieval candidates (``pools``), the rest
    uniformly from the catalogue."""
    positive = part.take(part.rating >= POSITIVE_RATING)
    from_pools = round(negatives_per_positive * pool_share) if pools is not None else 0
    uniform_users = np.repeat(positive.user, negatives_per_positive - from_pools)
    neg_users = [uniform_users]
    neg_items = [sample_negatives(uniform_users, seen, n_items, rng)]
    if pools is not None and from_pools > 0:
        pool_users = np.repeat(positive.user, from_pools)
        neg_users.append(pool_users)
        neg_items.append(sample_from_pools(pool_users, pools, rng))
    users, items = np.concatenate(neg_users), np.concatenate(neg_items)
    keep = items >= 0  # a user whose pool is empty gets fewer negatives
    return LabelledPairs(
        user=np.concatenate([positive.user, users[keep]]),
        item=np.concatenate([positive.item, items[keep]]),
        label=np.concatenate(
            [np.ones(len(positive), dtype=np.bool_), np.zeros(int(keep.sum()), dtype=np.bool_)]
        ),
    )


def sample_from_pools(
    users: IntArray, pools: Pools, rng: np.random.Generator, block: int = 2048
) -> IntArray:
    """One item per entry of ``users``, uniformly from that user's pool (-1 if it is empty);
    pools are asked for ``block`` users at a time, so memory stays bounded."""
    unique, inverse = np.unique(users, return_inverse=True)
    out = np.full(len(users), -1, dtype=np.int64)
    for start in range(0, len(unique), block):
        rows = pools(unique[start : start + block])
        sizes = (rows >= 0).sum(axis=1)
        mine = np.flatnonzero((inverse >= start) & (inverse < start + block))
        local = inverse[mine] - start
        has = sizes[local] > 0
        # Pools are -1 padded at the end, so a draw below the size is a real item.
        picks = (rng.random(len(mine)) * np.maximum(sizes[local], 1)).astype(np.int64)
        out[mine[has]] = rows[local[has], picks[has]]
    return out


def train_ranker(
    name: str,
    model: nn.Module,
    pairs: LabelledPairs,
    features: FeatureTables,
    *,
    seed: int,
    config: RankingConfig | None = None,
    progress: bool = True,
) -> nn.Module:
    config = config or RankingConfig()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    names = [spec.name for spec in ranker_signature(features.layout).inputs]
    steps = max(1, len(pairs) // config.batch_size)
    bar = Progress(config.epochs * steps, name, "step", enabled=progress)
    model.train()
    for _ in range(config.epochs):
        order = rng.permutation(len(pairs))
        for step in range(steps):
            rows = order[step * config.batch_size : (step + 1) * config.batch_size]
            feed = ranker_feed(features, pairs.user[rows], pairs.item[rows])
            logit = model(*(torch.from_numpy(feed[n]) for n in names))
            target = torch.from_numpy(pairs.label[rows].astype(np.float32))[:, None]
            loss = F.binary_cross_entropy_with_logits(logit, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return model


def fit_combiner(scores: FloatArray, labels: BoolArray, *, seed: int) -> Combiner:
    """Logistic regression on the stage scores (L-BFGS: convex, so it converges exactly)."""
    torch.manual_seed(seed)
    combiner = Combiner(scores.shape[1])
    x = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
    y = torch.from_numpy(labels.astype(np.float32))[:, None]
    optimizer = torch.optim.LBFGS(
        combiner.parameters(), max_iter=200, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(combiner.blend(x), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    combiner.eval()
    return combiner
