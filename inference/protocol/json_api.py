"""``POST /v1/recommend``: the JSON body, parsed and checked by hand so that every mistake
is one ``400 {"error": "<field>: <what is wrong>"}`` (FastAPI's validation answers 422 with a
different shape), and with the same limits as the Open Inference Protocol
(:mod:`inference.protocol.limits`).

The body is parsed whatever its ``Content-Type`` says: ``curl -d`` sends JSON labelled as a
form, and refusing it helps no one.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field

from inference.errors import BadRequest
from inference.graph.types import RecommendRequest
from inference.protocol import limits

FIELDS: Final = ("user_id", "k", "context")


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


def openapi_body() -> dict[str, Any]:
    """The ``requestBody`` for the route's OpenAPI entry."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RecommendBody.model_json_schema()}},
        }
    }


def parse(raw: bytes, *, default_k: int, max_k: int) -> RecommendRequest:
    """The graph request a body asks for, or ``BadRequest`` naming the first bad field."""
    limits.check_json_depth(raw)
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadRequest(f"body: expected a JSON object, got {limits.kind(body)}")
    for key in body:
        if key not in FIELDS:
            raise BadRequest(f"{key}: unknown field; the fields are {', '.join(FIELDS)}")
    if "user_id" not in body:
        raise BadRequest("user_id: required")
    k = body.get("k")
    return RecommendRequest(
        user_id=limits.user_id("user_id", body["user_id"]),
        k=default_k if k is None else limits.k_value("k", k, max_k),
        context=limits.context("context", body.get("context", {})),
    )
