"""Request limits and the JSON API's parser: every mistake a BadRequest naming the field,
including the inputs that used to reach deeper code and fail there as a 500."""

from __future__ import annotations

import json

import pytest

from inference.errors import BadRequest
from inference.protocol import json_api, limits


def parse(body: object) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return json_api.parse(raw, default_k=10, max_k=100)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"k": 5}, "user_id: required"),
        ({"user_id": True}, "user_id: expected a string or an integer, got boolean"),
        ({"user_id": 1.5}, "user_id: expected a string or an integer, got number"),
        ({"user_id": ""}, "user_id: must not be empty"),
        ({"user_id": "x" * 129}, "user_id: 129 characters; at most 128"),
        ({"user_id": "1", "k": True}, "k: expected an integer, got boolean"),
        ({"user_id": "1", "k": "5"}, "k: expected an integer, got string"),
        ({"user_id": "1", "k": 0}, "k: 0 is outside 1..100"),
        ({"user_id": "1", "k": 10**30}, "k: 1000000000000000000000000000000 is outside"),
        ({"user_id": "1", "colour": "red"}, "colour: unknown field; the fields are"),
        ({"user_id": "1", "context": []}, "context: expected a JSON object, got array"),
        ({"user_id": "1", "context": {"mood": "x"}}, "context.mood: unknown key 'mood'"),
        ({"user_id": "1", "context": {"age": "99999999999999999999"}}, "context.age: expected"),
        ({"user_id": "1", "context": {"age": 151}}, "context.age: 151 is outside 0..150"),
        ({"user_id": "1", "context": {"age": "\u00b9"}}, "context.age: expected a whole number"),
        ({"user_id": "1", "context": {"age": -1}}, "context.age: -1 is outside"),
        ({"user_id": "1", "context": {"age": True}}, "context.age: expected a whole number"),
        ({"user_id": "1", "context": {"gender": 3}}, "context.gender: expected a string"),
        ([1, 2], "body: expected a JSON object, got array"),
        (b"{not json", "body: not valid JSON"),
        (b"\xff\xfe", "body: not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "body: JSON nested deeper than 32 levels"),
    ],
)
def test_bad_bodies_name_the_field(body: object, field: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse(body)
    assert field in str(info.value)


def test_a_lone_surrogate_is_refused_before_anything_renders_it() -> None:
    with pytest.raises(BadRequest, match="user_id: not valid Unicode"):
        parse(b'{"user_id": "\\ud800"}')
    with pytest.raises(BadRequest, match=r"context\.gender: not valid Unicode"):
        parse(b'{"user_id": "1", "context": {"gender": "\\udfff"}}')


def test_what_users_send_is_accepted() -> None:
    request = parse({"user_id": 42, "context": {"age": 30, "gender": "F"}})
    assert request.user_id == "42"  # type: ignore[attr-defined]
    assert request.k == 10  # type: ignore[attr-defined]
    assert request.context == {"age": "30", "gender": "F"}  # type: ignore[attr-defined]
    assert parse({"user_id": "7", "k": 3, "context": {"age": " 25 "}}).context == {"age": "25"}  # type: ignore[attr-defined]
    assert parse({"user_id": "\u00e9t\u00e9 \U0001f600"}).user_id == "\u00e9t\u00e9 \U0001f600"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',  # brackets inside a string
        b'{"a": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',  # after an escaped quote
        b"[" * 32 + b"]" * 32,
        b"[" + b"[1]," * 300 + b"[1]]",  # many brackets, shallow
    ],
)
def test_depth_check_counts_only_real_nesting(raw: bytes) -> None:
    limits.check_json_depth(raw)


def test_depth_limit_is_exact() -> None:
    with pytest.raises(BadRequest):
        limits.check_json_depth(b"[" * 33 + b"]" * 33)


def test_openapi_schema_states_the_limits() -> None:
    schema = json_api.openapi_body()["requestBody"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["user_id"]
    text = json.dumps(schema)
    assert '"maxLength": 128' in text
