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


@dataclass(frozen=True)
class LabelledPairs:
    user: IntArray
    item: IntArray
    label: BoolArray

    def __len__(self) -> int:
        return len(self.user)


def labelled_pairs(
    part: Interactions,
    seen: Interactions,
    n_items: int,
    rng: np.random.Generator,
    negatives_per_positive: int,
) -> LabelledPairs:
    """Positive pairs, each with ``negatives_per_positive`` items its user never touched."""
    positive = part.take(part.rating >= POSITIVE_RATING)
    neg_users = np.repeat(positive.user, negatives_per_positive)
    neg_items = sample_negatives(neg_users, seen, n_items, rng)
    return LabelledPairs(
        user=np.concatenate([positive.user, neg_users]),
        item=np.concatenate([positive.item, neg_items]),
        label=np.concatenate(
            [np.ones(len(positive), dtype=np.bool_), np.zeros(len(neg_users), dtype=np.bool_)]
        ),
    )


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
