"""The similar-items rule, shared by the build's offline evaluation and the served surface.

An item's similar items are its co-occurrence neighbours (asymmetric cosine, Aiolli 2013:
``|U_i & U_j| / (|U_i|^alpha |U_j|^(1-alpha))``; ``alpha`` 0.5 is plain cosine, larger values
favour neighbours popular enough to be consumed next), fit by the build. The item embeddings
order what the neighbours leave tied or unscored: a new or rare item with few neighbours still
gets an answer, and a version without neighbours serves from the embeddings alone.
"""

from __future__ import annotations

import numpy as np

from contract.arrays import FloatArray

#: How much the embedding cosine adds to a neighbour weight: small, so that any neighbour
#: (weights are in (0, 1]) outranks items found by the embeddings alone, and embeddings only
#: break ties among neighbours and order the rest.
EMBEDDING_WEIGHT = 0.01
#: How many neighbours per item the build keeps (memory grows as items x this).
NEIGHBOURS = 100


def similar_scores(neighbour_weight: FloatArray | None, cosine: FloatArray | None) -> FloatArray:
    """Scores of candidate items for one query item, higher is more similar.

    ``neighbour_weight``: each candidate's weight as a neighbour of the query (0 when it is
    not one); ``cosine``: the cosine of their embeddings. Either may be None (not available),
    not both.
    """
    if neighbour_weight is None and cosine is None:
        raise ValueError("similar_scores needs neighbour weights, embeddings or both")
    out: FloatArray
    if neighbour_weight is None:
        assert cosine is not None
        out = np.asarray(cosine, dtype=np.float32)
        return out
    out = np.asarray(neighbour_weight, dtype=np.float32)
    if cosine is not None:
        out = out + np.float32(EMBEDDING_WEIGHT) * (np.asarray(cosine, dtype=np.float32) + 1) / 2
    return out
