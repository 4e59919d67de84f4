"""The names both sides of the repository spell: the models the build writes and the graph
calls, and the artifact files the build writes beside the user tower's ``model.onnx`` (and one
beside the combiner's)."""

from __future__ import annotations

from typing import Final

USER_TOWER: Final = "user_tower"
RANKER_DCN: Final = "ranker_dcn"
RANKER_MLP: Final = "ranker_mlp"
RANKERS: Final = (RANKER_DCN, RANKER_MLP)
COMBINER: Final = "combiner"
#: Every model of one build, in the order the graph calls them.
MODELS: Final = (USER_TOWER, *RANKERS, COMBINER)

#: The approximate-nearest-neighbour index of item embeddings (faiss).
ITEM_INDEX_FILE: Final = "item_index.faiss"
#: :class:`~contract.features.FeatureTables`, as ``FeatureTables.save`` writes them.
FEATURES_FILE: Final = "features.npz"
#: The raw user and item ids, in dense-index order.
IDS_FILE: Final = "ids.json"
#: Titles, genre names and demographic vocabularies (optional for older builds).
CATALOG_FILE: Final = "catalog.json"
#: Each user's seen items, CSR (optional for older builds).
SEEN_FILE: Final = "seen.npz"
#: The item-item weights whose scores are the combiner's fourth input, CSR (``scipy.sparse``),
#: beside the combiner's ``model.onnx``; a combiner version without it blends three scores.
ITEM_ITEM_FILE: Final = "item_item.npz"
#: The similar-items neighbours (each item's most similar items by asymmetric cosine of their
#: co-occurrence, CSR ``scipy.sparse``, items x items), beside the user tower's ``model.onnx``
#: with the item embeddings they are served with; a version without it serves similar items
#: from the embeddings alone.
SIMILAR_FILE: Final = "similar_items.npz"
#: The Open Inference Protocol model of the similar-items surface (the graph's second model).
SIMILAR_ITEMS: Final = "similar_items"
