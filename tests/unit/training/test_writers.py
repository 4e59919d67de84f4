"""What the writers write, the build's readers read back unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.readers import read_dataset
from training.synthetic import SyntheticConfig, generate
from training.writers import (
    INTERACTIONS_HEADER,
    ITEMS_HEADER,
    USERS_HEADER,
    write_interactions,
    write_items,
    write_users,
)


def test_written_tables_read_back_as_they_were(tmp_path: Path) -> None:
    dataset = generate(SyntheticConfig(n_users=60, n_items=40, seed=3))
    events = dataset.interactions.take(np.arange(0, len(dataset.interactions), 2))
    paths = {role: tmp_path / f"{role}.tsv" for role in ("interactions", "items", "users")}
    with paths["interactions"].open("w") as out:
        out.write(INTERACTIONS_HEADER + "\n")
        write_interactions(out, events, dataset.users.ids, dataset.items.ids)
    with paths["items"].open("w") as out:
        out.write(ITEMS_HEADER + "\n")
        write_items(out, dataset.items)
    with paths["users"].open("w") as out:
        out.write(USERS_HEADER + "\n")
        write_users(out, dataset.users)
    back = read_dataset(paths["interactions"], paths["items"], paths["users"])
    assert back.users.ids == dataset.users.ids
    assert back.items.ids == dataset.items.ids
    got = sorted(
        zip(
            back.interactions.user.tolist(),
            back.interactions.item.tolist(),
            back.interactions.rating.tolist(),
            back.interactions.timestamp.tolist(),
            strict=True,
        )
    )
    want = sorted(
        zip(
            events.user.tolist(),
            events.item.tolist(),
            events.rating.tolist(),
            events.timestamp.tolist(),
            strict=True,
        )
    )
    assert got == want
