"""Readers for delimited interaction, item and user files.

One reader serves both MovieLens (RecBole's atomic files: tab-separated, ``name:type`` headers,
space-separated genres) and bring-your-own data (CSV or TSV with a plain header, ``|``-separated
genres). Every problem stops the build with a :class:`DataError` naming the file, line and field:
a recommender trained on silently dropped rows is worse than no recommender.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.features import UNKNOWN
from training.errors import DataError
from training.tables import Dataset, Interactions, Items, Users

log = logging.getLogger("cascade.training")

#: Column names accepted for each canonical field (RecBole's names are aliases).
_ALIASES = {
    "movie_title": "title",
    "release_year": "year",
    "class": "genres",
    "zip": "zip_code",
}

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
ITEM_COLUMNS = ("item_id", "title", "year", "genres")
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip_code")

#: Values read as "not given" in optional numeric columns. RecBole's ML-100k spells one
#: missing release year "unkonwn"; treating it as missing beats rejecting the real dataset.
MISSING_MARKERS = frozenset({"", "unknown", "unkonwn", "na", "n/a", "nan", "null", "none"})

#: Label used for implicit logs without a rating column: every event counts as a positive.
IMPLICIT_RATING = 5.0


@dataclass(frozen=True)
class _Table:
    path: Path
    columns: dict[str, int]  # canonical name -> column position
    types: dict[str, str]  # canonical name -> RecBole type suffix ("" when absent)
    rows: list[tuple[int, list[str]]]  # (1-based line number, fields)


def _delimiter(path: Path, header: str) -> str:
    if path.suffix.lower() == ".csv":
        return ","
    if path.suffix.lower() in (".tsv", ".inter", ".item", ".user"):
        return "\t"
    return "\t" if "\t" in header else ","


def _read(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> _Table:
    if not path.is_file():
        raise DataError("file not found", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = text_line_of(path.read_bytes(), e.start)
        raise DataError(f"not valid UTF-8 text ({e.reason})", path=path, line=line) from e
    if not text.strip():
        raise DataError("file is empty (expected a header line)", path=path, line=1)
    if not text.endswith("\n"):
        # A writer killed mid-line leaves no trailing newline; its last row may be cut short.
        last = text.count("\n") + 1
        raise DataError("file is truncated (last line has no newline)", path=path, line=last)
    lines = text.splitlines()
    delimiter = _delimiter(path, lines[0])
    reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, strict=True)
    try:
        header = next(reader)
    except csv.Error as e:
        raise DataError(f"malformed header: {e}", path=path, line=1) from e
    columns: dict[str, int] = {}
    types: dict[str, str] = {}
    for position, raw in enumerate(header):
        name, _, kind = raw.strip().partition(":")
        name = _ALIASES.get(name.lower(), name.lower())
        if name in columns:
            raise DataError("duplicate column", path=path, line=1, field=name)
        columns[name] = position
        types[name] = kind
    for name in required:
        if name not in columns:
            raise DataError(
                f"required column missing (header has {', '.join(header)})",
                path=path,
                line=1,
                field=name,
            )
    width = len(header)
    rows: list[tuple[int, list[str]]] = []
    try:
        for number, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != width:
                raise DataError(
                    f"expected {width} fields, found {len(fields)}", path=path, line=number
                )
            rows.append((number, fields))
    except csv.Error as e:
        raise DataError(f"malformed row: {e}", path=path, line=reader.line_num) from e
    known = set(required) | set(optional)
    return _Table(path, {k: v for k, v in columns.items() if k in known}, types, rows)


def text_line_of(data: bytes, offset: int) -> int:
    """The 1-based line number of a byte offset."""
    return data.count(b"\n", 0, offset) + 1


def _int(table: _Table, line: int, fields: list[str], name: str, *, default: int = 0) -> int:
    if name not in table.columns:
        return default
    raw = fields[table.columns[name]].strip()
    if raw.lower() in MISSING_MARKERS:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"not a number: {raw!r}", path=table.path, line=line, field=name) from None
    if not np.isfinite(value) or value != int(value):
        raise DataError(f"not an integer: {raw!r}", path=table.path, line=line, field=name)
    return int(value)


def _float(table: _Table, line: int, fields: list[str], name: str) -> float:
    raw = fields[table.columns[name]].strip()
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"not a number: {raw!r}", path=table.path, line=line, field=name) from None
    if not np.isfinite(value):
        raise DataError(f"not a finite number: {raw!r}", path=table.path, line=line, field=name)
    return value


def _text(table: _Table, fields: list[str], name: str, default: str = "") -> str:
    return fields[table.columns[name]].strip() if name in table.columns else default


def _id(table: _Table, line: int, fields: list[str], name: str) -> str:
    value = _text(table, fields, name)
    if not value:
        raise DataError("empty id", path=table.path, line=line, field=name)
    return value


def _unique_index(table: _Table, name: str) -> dict[str, int]:
    index: dict[str, int] = {}
    for line, fields in table.rows:
        key = _id(table, line, fields, name)
        if key in index:
            raise DataError(f"duplicate id {key!r}", path=table.path, line=line, field=name)
        index[key] = len(index)
    return index


def _vocab(values: Iterator[str]) -> tuple[list[str], dict[str, int]]:
    vocab = [UNKNOWN, *sorted({v for v in values if v and v != UNKNOWN})]
    return vocab, {v: i for i, v in enumerate(vocab)}


def read_items(path: Path, *, lenient_year: bool = False) -> Items:
    """Items with title, release year and genres (``|``- or space-separated).

    ``lenient_year`` reads an unparseable year as unknown, with a warning naming the line, instead
    of stopping: for curated datasets with known defects, never for a user's own files.
    """
    table = _read(path, required=("item_id",), optional=ITEM_COLUMNS)
    ids = list(_unique_index(table, "item_id"))
    space_separated = table.types.get("genres") == "token_seq"
    genre_lists: list[list[str]] = []
    for _, fields in table.rows:
        raw = _text(table, fields, "genres")
        parts = raw.split() if space_separated else raw.split("|")
        genre_lists.append([g.strip() for g in parts if g.strip()])
    genre_vocab = sorted({g for gs in genre_lists for g in gs}) or [UNKNOWN]
    position = {g: i for i, g in enumerate(genre_vocab)}
    genres = np.zeros((len(ids), len(genre_vocab)), dtype=np.bool_)
    for row, gs in enumerate(genre_lists):
        genres[row, [position[g] for g in gs]] = True
    years: list[int] = []
    for line, fields in table.rows:
        try:
            years.append(_int(table, line, fields, "year"))
        except DataError as e:
            if not lenient_year:
                raise
            log.warning("%s; reading it as unknown", e)
            years.append(0)
    year = np.array(years, dtype=np.int64)
    title = [_text(table, fields, "title") or ids[i] for i, (_, fields) in enumerate(table.rows)]
    return Items(ids=ids, title=title, year=year, genres=genres, genre_vocab=genre_vocab)


def read_users(path: Path) -> Users:
    """Users with age, gender, occupation and zip code (all but the id optional)."""
    table = _read(path, required=("user_id",), optional=USER_COLUMNS)
    ids = list(_unique_index(table, "user_id"))
    age = np.array([_int(table, ln, f, "age") for ln, f in table.rows], dtype=np.int64)
    for (line, _), value in zip(table.rows, age, strict=True):
        if not 0 <= value <= 150:
            raise DataError(f"age {value} out of range 0..150", path=path, line=line, field="age")
    genders = [_text(table, f, "gender", UNKNOWN) for _, f in table.rows]
    occupations = [_text(table, f, "occupation", UNKNOWN) for _, f in table.rows]
    gender_vocab, gender_code = _vocab(iter(genders))
    occupation_vocab, occupation_code = _vocab(iter(occupations))
    return Users(
        ids=ids,
        age=age,
        gender=np.array([gender_code.get(g, 0) for g in genders], dtype=np.int64),
        occupation=np.array([occupation_code.get(o, 0) for o in occupations], dtype=np.int64),
        zip_code=[_text(table, f, "zip_code") for _, f in table.rows],
        gender_vocab=gender_vocab,
        occupation_vocab=occupation_vocab,
    )


def _bare_items(ids: list[str]) -> Items:
    return Items(
        ids=ids,
        title=list(ids),
        year=np.zeros(len(ids), dtype=np.int64),
        genres=np.zeros((len(ids), 1), dtype=np.bool_),
        genre_vocab=[UNKNOWN],
    )


def _bare_users(ids: list[str]) -> Users:
    zeros = np.zeros(len(ids), dtype=np.int64)
    return Users(
        ids=ids, age=zeros, gender=zeros.copy(), occupation=zeros.copy(), zip_code=[""] * len(ids)
    )


def read_dataset(
    interactions: Path,
    items: Path | None = None,
    users: Path | None = None,
    *,
    name: str | None = None,
    lenient_year: bool = False,
) -> Dataset:
    """Read and cross-check one dataset.

    Without an items (users) file, items (users) are the distinct ids of the interactions, with no
    features. With one, an interaction naming an id the file does not list is an error: it means
    the files come from different snapshots.
    """
    item_table = read_items(items, lenient_year=lenient_year) if items is not None else None
    user_table = read_users(users) if users is not None else None
    table = _read(
        interactions, required=("user_id", "item_id", "timestamp"), optional=INTERACTION_COLUMNS
    )
    item_index = {k: i for i, k in enumerate(item_table.ids)} if item_table else {}
    user_index = {k: i for i, k in enumerate(user_table.ids)} if user_table else {}
    n = len(table.rows)
    user = np.empty(n, dtype=np.int64)
    item = np.empty(n, dtype=np.int64)
    rating = np.full(n, IMPLICIT_RATING, dtype=np.float32)
    timestamp = np.empty(n, dtype=np.int64)
    has_rating = "rating" in table.columns
    for row, (line, fields) in enumerate(table.rows):
        user[row] = _lookup(
            table, line, fields, "user_id", user_index, grow=user_table is None, source=users
        )
        item[row] = _lookup(
            table, line, fields, "item_id", item_index, grow=item_table is None, source=items
        )
        if has_rating:
            rating[row] = _float(table, line, fields, "rating")
        timestamp[row] = _int(table, line, fields, "timestamp", default=-1)
        if timestamp[row] < 0:
            raise DataError(
                "missing or negative timestamp", path=interactions, line=line, field="timestamp"
            )
    if n == 0:
        raise DataError("no interactions (only a header)", path=interactions, line=2)
    digest = hashlib.sha256()
    for path in (interactions, items, users):
        if path is not None:
            digest.update(path.read_bytes())
    return Dataset(
        name=name or interactions.stem,
        users=user_table or _bare_users(list(user_index)),
        items=item_table or _bare_items(list(item_index)),
        interactions=Interactions(user=user, item=item, rating=rating, timestamp=timestamp),
        sha256=digest.hexdigest(),
    )


def _lookup(
    table: _Table,
    line: int,
    fields: list[str],
    name: str,
    index: dict[str, int],
    *,
    grow: bool,
    source: Path | None,
) -> int:
    key = _id(table, line, fields, name)
    found = index.get(key)
    if found is not None:
        return found
    if not grow:
        raise DataError(
            f"unknown id {key!r} (not in {source})", path=table.path, line=line, field=name
        )
    index[key] = len(index)
    return index[key]
