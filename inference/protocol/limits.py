"""What a request may carry, checked the same way whichever protocol carried it.

Pure functions that raise :class:`~inference.errors.BadRequest` naming the field. They run
before anything deeper sees the value: an age of 10^20 would overflow numpy in the catalog,
a lone surrogate in an id would fail only when the answer is rendered, and a body nested
thousands deep would exhaust the parser's recursion, each a 500 instead of a 400.

Unknown keys: the JSON API refuses them at the top level and in ``context`` alike, naming
the keys it knows. OIP ``parameters`` are the protocol's open map (clients put their own
settings there), so only the context keys and ``id`` are read from it and checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from inference.errors import BadRequest

#: Longest user or item id, in characters (the catalog's ids are a few characters; 128 leaves room
#: for UUIDs and hashed ids while keeping every cache entry small).
MAX_ID_CHARS: Final = 128
#: Longest ``gender``/``occupation`` value, in characters.
MAX_CONTEXT_CHARS: Final = 64
#: Oldest age accepted (years); the catalog buckets ages, anything above is a typo.
MAX_AGE: Final = 150
#: Deepest nesting of JSON arrays and objects a body may have (OIP's deepest legal body,
#: ``data`` as a nested array of a 2-D tensor inside ``inputs``, is 5 deep).
MAX_JSON_DEPTH: Final = 32
#: Longest request id, in characters.
MAX_REQUEST_ID_CHARS: Final = 256
#: What ``context`` (and OIP ``parameters``) may say about a user the store does not know.
CONTEXT_KEYS: Final = ("age", "gender", "occupation")


def kind(value: object) -> str:
    """A JSON-ish name for a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def check_text(label: str, value: str, max_chars: int) -> str:
    """``value`` if it is non-empty, at most ``max_chars`` long and encodable as UTF-8."""
    if not value:
        raise BadRequest(f"{label}: must not be empty")
    if len(value) > max_chars:
        raise BadRequest(f"{label}: {len(value)} characters; at most {max_chars} are allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(
            f"{label}: not valid Unicode (a lone surrogate at character {exc.start})"
        ) from None
    return value


def user_id(label: str, value: object) -> str:
    """A user id: a string, or an integer (catalog ids are numbers in the source data)."""
    return catalog_id(label, value)


def item_id(label: str, value: object) -> str:
    """An item id, as a user id (:func:`user_id`)."""
    return catalog_id(label, value)


def catalog_id(label: str, value: object) -> str:
    """A user or item id: a string or an integer, at most :data:`MAX_ID_CHARS` long."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"{label}: expected a string or an integer, got {kind(value)}")
    return check_text(label, str(value), MAX_ID_CHARS)


def context_value(label: str, key: str, value: object) -> str:
    """One context entry as the catalog reads it: ``age`` a whole number of years (given as
    a number or a numeric string), ``gender``/``occupation`` short strings."""
    if key not in CONTEXT_KEYS:
        raise BadRequest(f"{label}: unknown key {key!r}; known keys are {', '.join(CONTEXT_KEYS)}")
    if key == "age":
        digits = value.strip() if isinstance(value, str) else ""
        # ASCII only: str.isdigit() also accepts "¹" or "٣", which int() then refuses.
        if digits.isascii() and digits.isdigit() and len(digits) <= 4:
            value = int(digits)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{label}: expected a whole number of years, got {kind(value)}")
        if not 0 <= value <= MAX_AGE:
            raise BadRequest(f"{label}: {value} is outside 0..{MAX_AGE}")
        return str(value)
    if not isinstance(value, str):
        raise BadRequest(f"{label}: expected a string, got {kind(value)}")
    return check_text(label, value, MAX_CONTEXT_CHARS)


def context(label: str, values: object) -> dict[str, str]:
    """A whole ``context`` object (see :func:`context_value`)."""
    if not isinstance(values, Mapping):
        raise BadRequest(f"{label}: expected a JSON object, got {kind(values)}")
    return {
        str(key): context_value(f"{label}.{key}", str(key), value) for key, value in values.items()
    }


def k_value(label: str, value: object, max_k: int) -> int:
    """How many items: an integer in 1..max_k (``true`` and ``"5"`` are not integers)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{label}: expected an integer, got {kind(value)}")
    if not 1 <= value <= max_k:
        raise BadRequest(f"{label}: {value} is outside 1..{max_k}")
    return value


def check_json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse a JSON text nested deeper than ``limit`` before a recursive parser sees it.

    Brackets inside strings do not count. The scan runs only when the body holds more
    brackets than the limit, so an ordinary request costs two ``bytes.count`` calls.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                raise BadRequest(f"body: JSON nested deeper than {limit} levels")
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
