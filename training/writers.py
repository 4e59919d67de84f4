"""Tables written as the TSV files ``cascade build --interactions/--items/--users`` reads
(:mod:`training.readers`): the synthetic generator's output and benchmark hold-outs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

import numpy as np

from training.tables import Interactions, Items, Users

INTERACTIONS_HEADER = "user_id\titem_id\trating\ttimestamp"
ITEMS_HEADER = "item_id\ttitle\tyear\tgenres"
USERS_HEADER = "user_id\tage\tgender\toccupation\tzip_code"
_ITEM_WRITE_ROWS = 100_000


def write_interactions(
    out: TextIO, events: Interactions, user_ids: Sequence[str], item_ids: Sequence[str]
) -> None:
    """Events as rows, with the tables' raw ids (indices mapped through ``*_ids``)."""
    rows = map(
        "{}\t{}\t{:g}\t{}".format,
        [user_ids[u] for u in events.user.tolist()],
        [item_ids[i] for i in events.item.tolist()],
        events.rating.tolist(),
        events.timestamp.tolist(),
    )
    for row in rows:
        out.write(row + "\n")


def write_users(out: TextIO, users: Users) -> None:
    if len(users) == 0:
        return
    rows = map(
        "{}\t{}\t{}\t{}\t{}".format,
        users.ids,
        users.age.tolist(),
        [users.gender_vocab[c] for c in users.gender.tolist()],
        [users.occupation_vocab[c] for c in users.occupation.tolist()],
        users.zip_code,
    )
    out.write("\n".join(rows))
    out.write("\n")


def write_items(out: TextIO, items: Items) -> None:
    vocab = items.genre_vocab
    for lo in range(0, len(items), _ITEM_WRITE_ROWS):
        hi = min(lo + _ITEM_WRITE_ROWS, len(items))
        genres = ["|".join(vocab[g] for g in np.flatnonzero(row)) for row in items.genres[lo:hi]]
        rows = map(
            "{}\t{}\t{}\t{}".format,
            items.ids[lo:hi],
            items.title[lo:hi],
            items.year[lo:hi].tolist(),
            genres,
        )
        out.write("\n".join(rows))
        out.write("\n")
