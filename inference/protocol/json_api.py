"""``POST /v1/recommend`` and ``POST /v1/similar``: the JSON bodies, parsed and checked by
hand so that every mistake is one ``400 {"error": "<field>: <what is wrong>"}`` (FastAPI's
validation answers 422 with a different shape), and with the same limits as the Open
Inference Protocol (:mod:`inference.protocol.limits`).

The body is parsed whatever its ``Content-Type`` says: ``curl -d`` sends JSON labelled as a
form, and refusing it helps no one.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field

from inference.errors import BadRequest
from inference.graph.types import RecommendRequest, SimilarRequest
from inference.protocol import limits

FIELDS: Final = ("user_id", "k", "context")
SIMILAR_FIELDS: Final = ("item_id", "k", "user_id")


class RecommendBody(BaseModel):
    """The body's schema, for ``/openapi.json`` and ``/docs`` (parsing is :func:`parse`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: Annotated[str, Field(min_length=1, max_length=limits.MAX_ID_CHARS)] | int = Field(
        description="The user's id in the catalog (as in the data)."
    )
    k: int | None = Field(
        None, ge=1, description="How many items (default and maximum from the graph config)."
    )
    context: dict[str, str | int] = Field(
        default_factory=dict,
        description="Demographics for users the store does not know: age (years, 0..150), "
        "gender, occupation. Other keys are refused.",
    )


class SimilarBody(BaseModel):
    """The ``/v1/similar`` body's schema, for ``/openapi.json`` (parsing is
    :func:`parse_similar`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    item_id: Annotated[str, Field(min_length=1, max_length=limits.MAX_ID_CHARS)] | int = Field(
        description="The item's id in the catalog (as in the data)."
    )
    k: int | None = Field(
        None, ge=1, description="How many items (default and maximum from the graph config)."
    )
    user_id: Annotated[str, Field(min_length=1, max_length=limits.MAX_ID_CHARS)] | int | None = (
        Field(None, description="A user whose seen items are left out (unknown users: none).")
    )


def openapi_body(schema: type[BaseModel] = RecommendBody) -> dict[str, Any]:
    """The ``requestBody`` for a route's OpenAPI entry (``/v1/recommend``'s by default)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema.model_json_schema()}},
        }
    }


def _object(raw: bytes, fields: tuple[str, ...]) -> dict[str, Any]:
    """The body as a JSON object with no fields but ``fields``."""
    limits.check_json_depth(raw)
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadRequest(f"body: expected a JSON object, got {limits.kind(body)}")
    for key in body:
        if key not in fields:
            raise BadRequest(f"{key}: unknown field; the fields are {', '.join(fields)}")
    return body


def parse(raw: bytes, *, default_k: int, max_k: int) -> RecommendRequest:
    """The graph request a body asks for, or ``BadRequest`` naming the first bad field."""
    body = _object(raw, FIELDS)
    if "user_id" not in body:
        raise BadRequest("user_id: required")
    k = body.get("k")
    return RecommendRequest(
        user_id=limits.user_id("user_id", body["user_id"]),
        k=default_k if k is None else limits.k_value("k", k, max_k),
        context=limits.context("context", body.get("context", {})),
    )


def parse_similar(raw: bytes, *, default_k: int, max_k: int) -> SimilarRequest:
    """The similar-items request a body asks for, or ``BadRequest`` naming the first bad
    field. A ``user_id`` of ``null`` is as good as none."""
    body = _object(raw, SIMILAR_FIELDS)
    if "item_id" not in body:
        raise BadRequest("item_id: required")
    k = body.get("k")
    user = body.get("user_id")
    return SimilarRequest(
        item_id=limits.item_id("item_id", body["item_id"]),
        k=default_k if k is None else limits.k_value("k", k, max_k),
        user_id=None if user is None else limits.user_id("user_id", user),
    )
