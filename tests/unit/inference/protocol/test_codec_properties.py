"""Property tests of the protocol codecs: whatever a client sends, the parsers answer with a
request or a ``BadRequest`` naming a field, never another exception (what a server turns
into a 500), and what they accept round-trips."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from inference.errors import BadRequest
from inference.graph.types import RecommendRequest
from inference.protocol import json_api, oip

T = TypeVar("T")

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=16,
)
TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["user_id", "k", "x"]),
        "datatype": st.sampled_from(["BYTES", "INT64", "INT32", "FP32", "BOOL", "UINT8"]) | JSON,
        "shape": st.lists(st.integers(-2, 70), max_size=3) | JSON,
        "data": st.lists(st.integers(-(2**70), 2**70) | st.text(max_size=140), max_size=8) | JSON,
    },
    optional={"parameters": st.dictionaries(st.sampled_from(["binary_data_size"]), JSON)},
)
BODY = st.fixed_dictionaries(
    {"inputs": st.lists(TENSOR, max_size=3) | JSON},
    optional={
        "parameters": st.dictionaries(
            st.sampled_from(["age", "gender", "occupation", "id", "other"]), JSON
        ),
        "outputs": JSON,
        "id": JSON,
    },
)
PROPERTIES = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


def outcome(parse: Callable[[], T]) -> T | BadRequest:
    """What ``parse`` returns, or the ``BadRequest`` it raised (anything else propagates)."""
    try:
        return parse()
    except BadRequest as exc:
        return exc


@PROPERTIES
@given(body=BODY)
def test_rest_bodies_parse_or_name_the_problem(body: dict[str, Any]) -> None:
    def parse() -> list[RecommendRequest]:
        parsed, binary = oip.split_rest_body(json.dumps(body).encode())
        return oip.parse_rest_request(parsed, default_k=10, max_k=100, max_batch=64, binary=binary)

    result = outcome(parse)
    if isinstance(result, BadRequest):
        assert str(result)
        return
    for request in result:
        assert 1 <= request.k <= 100
        request.user_id.encode("utf-8")  # renders
        assert set(request.context) <= {"age", "gender", "occupation"}


GRPC_TENSOR = st.builds(
    lambda name, datatype, shape, contents: {
        "name": name,
        "datatype": datatype,
        "shape": shape,
        "contents": contents,
    },
    st.sampled_from(["user_id", "k", "x"]),
    st.sampled_from(["BYTES", "INT64", "INT32", "FP32", "BOOL"]),
    st.lists(st.integers(-2, 70), max_size=3),
    st.one_of(
        st.lists(st.binary(max_size=140), max_size=6).map(
            lambda values: {"bytes_contents": [base64.b64encode(v).decode() for v in values]}
        ),
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6).map(
            lambda values: {"int64_contents": [str(v) for v in values]}
        ),
        st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6).map(
            lambda values: {"int_contents": values}
        ),
    ),
)
GRPC_PARAMETER = st.one_of(
    st.text(max_size=30).map(lambda v: {"string_param": v}),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: {"int64_param": str(v)}),
    st.booleans().map(lambda v: {"bool_param": v}),
)


@PROPERTIES
@given(
    inputs=st.lists(GRPC_TENSOR, max_size=3),
    parameters=st.dictionaries(st.sampled_from(["age", "gender", "id", "other"]), GRPC_PARAMETER),
)
def test_grpc_requests_parse_or_name_the_problem(
    inputs: list[dict[str, Any]], parameters: dict[str, Any]
) -> None:
    message = {"model_name": "recommender", "inputs": inputs, "parameters": parameters}
    request = json_format.ParseDict(message, service_pb2.ModelInferRequest())
    result = outcome(lambda: oip.parse_grpc_request(request, default_k=10, max_k=100, max_batch=64))
    if isinstance(result, BadRequest):
        assert str(result)
        return
    assert all(1 <= r.k <= 100 for r in result)


@PROPERTIES
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "user_id": JSON | st.text(max_size=200),
            "k": JSON,
            "context": st.dictionaries(st.sampled_from(["age", "gender", "mood"]), JSON) | JSON,
        },
    )
    | JSON
)
def test_json_api_bodies_parse_or_name_the_problem(body: Any) -> None:
    result = outcome(lambda: json_api.parse(json.dumps(body).encode(), default_k=10, max_k=100))
    if isinstance(result, BadRequest):
        assert ":" in str(result)  # "<field>: <what is wrong>"
        return
    assert isinstance(body, dict)
    assert result.user_id == str(body["user_id"])
    assert 1 <= result.k <= 100
