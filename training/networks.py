"""The torch networks of the recommender: two towers, two rankers and the combiner.

Every served network takes its inputs positionally in the order of its :class:`Signature`, so
the ONNX export, the Triton config and the graph's feeds agree by construction. Ids are the
dense index + 1; id 0 means unknown (user) or padding (history).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contract.features import HISTORY_LENGTH, FeatureLayout
from contract.signature import Signature, TensorSpec


def _mlp(width_in: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(width_in, width), nn.ReLU()]
        width_in = width
    return nn.Sequential(*layers)


#: Parameter-name prefixes of the layers worth INT8 in each network (the wide Linear layers);
#: the rest (embeddings, small or precision-critical layers, the score head) stay FP32.
QUANTIZED_LAYERS: dict[str, tuple[str, ...]] = {
    "UserTower": ("head.",),
    "DCNRanker": ("cross.", "deep."),
    "MLPRanker": ("first.", "deep."),
}


def user_tower_signature(layout: FeatureLayout, dim: int) -> Signature:
    return Signature(
        inputs=(
            TensorSpec("user_id", "INT64", (1,)),
            TensorSpec("user_dense", "FP32", (layout.user_dim,)),
            TensorSpec("history", "INT64", (HISTORY_LENGTH,)),
        ),
        outputs=(TensorSpec("user_embedding", "FP32", (dim,)),),
    )


def ranker_signature(layout: FeatureLayout) -> Signature:
    return Signature(
        inputs=(
            TensorSpec("user_id", "INT64", (1,)),
            TensorSpec("item_id", "INT64", (1,)),
            TensorSpec("user_dense", "FP32", (layout.user_dim,)),
            TensorSpec("item_dense", "FP32", (layout.item_dim,)),
            TensorSpec("history", "INT64", (HISTORY_LENGTH,)),
        ),
        outputs=(TensorSpec("logit", "FP32", (1,)),),
    )


#: The combiner blends, per candidate: ranker_dcn logit, ranker_mlp logit, retrieval score,
#: and the item-item score (EASE over the user's items; :mod:`training.baselines`).
COMBINER_INPUTS = ("ranker_dcn", "ranker_mlp", "retrieval", "item_item")
COMBINER_SIGNATURE = Signature(
    inputs=(TensorSpec("scores", "FP32", (len(COMBINER_INPUTS),)),),
    outputs=(TensorSpec("score", "FP32", (1,)),),
)


def _history_mean(table: nn.Embedding, history: Tensor) -> Tensor:
    """Mean embedding of the non-padding history slots (zero for an empty history).

    ``table`` has ``padding_idx=0``, whose row is zero and never trained, so a plain sum skips
    padding without a (batch, history, dim) mask multiply.
    """
    count = (history > 0).sum(dim=1, keepdim=True).clamp(min=1).to(torch.float32)
    mean: Tensor = table(history).sum(dim=1) / count
    return mean


class UserTower(nn.Module):
    """Id embedding + mean of recent positive items + demographics -> unit vector."""

    def __init__(self, n_users: int, n_items: int, layout: FeatureLayout, dim: int = 64) -> None:
        super().__init__()
        emb = 32
        self.user_emb = nn.Embedding(n_users + 1, emb)
        self.history_emb = nn.Embedding(n_items + 1, emb, padding_idx=0)
        self.dense = nn.Sequential(nn.Linear(layout.user_dim, emb), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(3 * emb, 128), nn.ReLU(), nn.Linear(128, dim))

    def forward(self, user_id: Tensor, user_dense: Tensor, history: Tensor) -> Tensor:
        user = self.user_emb(user_id[:, 0])
        seen = _history_mean(self.history_emb, history)
        x = torch.cat([user, seen, self.dense(user_dense)], dim=1)
        return F.normalize(self.head(x), dim=1)


class ItemTower(nn.Module):
    """Id embedding + item features -> unit vector. Not served: its outputs fill the ANN index."""

    def __init__(self, n_items: int, layout: FeatureLayout, dim: int = 64) -> None:
        super().__init__()
        emb = 32
        self.item_emb = nn.Embedding(n_items + 1, emb)
        self.dense = nn.Sequential(nn.Linear(layout.item_dim, emb), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * emb, 128), nn.ReLU(), nn.Linear(128, dim))

    def forward(self, item_id: Tensor, item_dense: Tensor) -> Tensor:
        x = torch.cat([self.item_emb(item_id), self.dense(item_dense)], dim=1)
        return F.normalize(self.head(x), dim=1)


class DCNRanker(nn.Module):
    """DCN-v2 (parallel): full-rank cross layers beside a deep MLP over the same input.

    The input joins user and item id embeddings, the mean embedding of the user's recent
    positives (sharing the item table, so history and candidate live in one space) and the
    dense features; the cross layers learn their feature interactions explicitly. The input is
    batch-normalized: besides steadier training, every column then has a similar range, so one
    INT8 activation scale fits all of them (without it, one-hot features and embedding values
    share a scale set by the widest column and the small ones round to nothing).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        layout: FeatureLayout,
        *,
        emb: int = 16,
        cross_layers: int = 3,
        deep: tuple[int, ...] = (512, 256),
    ) -> None:
        super().__init__()
        self.user_emb = nn.Embedding(n_users + 1, emb)
        self.item_emb = nn.Embedding(n_items + 1, emb, padding_idx=0)
        width = 3 * emb + layout.user_dim + layout.item_dim
        self.norm = nn.BatchNorm1d(width)
        self.cross = nn.ModuleList([nn.Linear(width, width) for _ in range(cross_layers)])
        self.deep = _mlp(width, deep)
        self.head = nn.Linear(width + deep[-1], 1)

    def forward(
        self,
        user_id: Tensor,
        item_id: Tensor,
        user_dense: Tensor,
        item_dense: Tensor,
        history: Tensor,
    ) -> Tensor:
        x0 = self.norm(
            torch.cat(
                [
                    self.user_emb(user_id[:, 0]),
                    self.item_emb(item_id[:, 0]),
                    _history_mean(self.item_emb, history),
                    user_dense,
                    item_dense,
                ],
                dim=1,
            )
        )
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        logit: Tensor = self.head(torch.cat([x, self.deep(x0)], dim=1))
        return logit


class MLPRanker(nn.Module):
    """A deep MLP over explicit cross features.

    Crosses: user genre taste x item genres, user x item and history x item embedding products.
    The input is batch-normalized, for training and for INT8 (see :class:`DCNRanker`).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        layout: FeatureLayout,
        *,
        emb: int = 32,
        deep: tuple[int, ...] = (512, 256, 128),
    ) -> None:
        super().__init__()
        self.layout = layout
        self.user_emb = nn.Embedding(n_users + 1, emb)
        self.item_emb = nn.Embedding(n_items + 1, emb, padding_idx=0)
        width = 4 * emb + layout.user_dim + layout.item_dim + layout.n_genres + 2
        self.norm = nn.BatchNorm1d(width)
        self.first = nn.Linear(width, deep[0])
        self.deep = _mlp(deep[0], deep[1:])
        self.head = nn.Linear(deep[-1], 1)

    def forward(
        self,
        user_id: Tensor,
        item_id: Tensor,
        user_dense: Tensor,
        item_dense: Tensor,
        history: Tensor,
    ) -> Tensor:
        lay = self.layout
        taste = user_dense[:, lay.user_genre_start : lay.user_genre_start + lay.n_genres]
        genres = item_dense[:, lay.item_genre_start : lay.item_genre_start + lay.n_genres]
        cross = taste * genres
        u, i = self.user_emb(user_id[:, 0]), self.item_emb(item_id[:, 0])
        h = _history_mean(self.item_emb, history)
        dots = torch.cat([(u * i).sum(1, keepdim=True), (h * i).sum(1, keepdim=True)], dim=1)
        x = torch.cat([u, i, h, h * i, user_dense, item_dense, cross, dots], dim=1)
        logit: Tensor = self.head(self.deep(torch.relu(self.first(self.norm(x)))))
        return logit


class Combiner(nn.Module):
    """A calibrated blend of the stage scores: sigmoid(w . scores + b), fit on validation.

    Output is a probability that the user likes the item, comparable across requests.
    """

    def __init__(self, n_inputs: int = len(COMBINER_INPUTS)) -> None:
        super().__init__()
        self.blend = nn.Linear(n_inputs, 1)

    def forward(self, scores: Tensor) -> Tensor:
        return torch.sigmoid(self.blend(scores))
