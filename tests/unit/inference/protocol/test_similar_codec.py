"""The ``similar_items`` surface's codecs: the ``/v1/similar`` JSON body and the OIP model,
the latter against tritonclient's own encoders and decoders as the recommender's tests do.
Every mistake is a ``BadRequest`` whose message starts with the field."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import json_format
from tritonclient.grpc import _utils as grpc_utils
from tritonclient.grpc import service_pb2

from inference.errors import BadRequest
from inference.graph.types import ScoredItem, SimilarRequest, SimilarResponse
from inference.protocol import json_api, oip
from tests.unit.inference.protocol.test_oip import (
    LIMITS,
    grpc_input,
    http_body,
    http_input,
    http_result,
    ids,
    rest_tensor,
)

# --------------------------------------------------------------------------- POST /v1/similar


def parse_json(body: object) -> SimilarRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return json_api.parse_similar(raw, default_k=10, max_k=100)


def test_a_json_body_with_every_field() -> None:
    request = parse_json({"item_id": "50", "k": 5, "user_id": "42"})
    assert request == SimilarRequest(item_id="50", k=5, user_id="42")


def test_a_json_body_with_defaults_and_integer_ids() -> None:
    assert parse_json({"item_id": 50}) == SimilarRequest(item_id="50", k=10)
    assert parse_json({"item_id": "7", "user_id": 42}).user_id == "42"
    assert parse_json({"item_id": "7", "user_id": None, "k": None}) == SimilarRequest("7", 10)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"k": 5}, "item_id: required"),
        ({"user_id": "1"}, "item_id: required"),
        ({"item_id": True}, "item_id: expected a string or an integer, got boolean"),
        ({"item_id": 5.5}, "item_id: expected a string or an integer, got number"),
        ({"item_id": ["1"]}, "item_id: expected a string or an integer, got array"),
        ({"item_id": ""}, "item_id: must not be empty"),
        ({"item_id": "x" * 200}, "item_id: 200 characters; at most 128"),
        ({"item_id": "1", "k": 0}, "k: 0 is outside 1..100"),
        ({"item_id": "1", "k": 101}, "k: 101 is outside 1..100"),
        ({"item_id": "1", "k": "5"}, "k: expected an integer, got string"),
        ({"item_id": "1", "k": True}, "k: expected an integer, got boolean"),
        ({"item_id": "1", "user_id": ""}, "user_id: must not be empty"),
        ({"item_id": "1", "user_id": {"id": 1}}, "user_id: expected a string or an integer"),
        ({"item_id": "1", "context": {}}, "context: unknown field; the fields are item_id, k"),
        (b'{"item_id": "\\ud800"}', "item_id: not valid Unicode"),
        (b"[" * 100 + b"]" * 100, "body: JSON nested deeper"),
        (b"{not json", "body: not valid JSON"),
        (["item_id"], "body: expected a JSON object, got array"),
    ],
)
def test_json_mistakes_name_the_field(body: object, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_json(body)
    assert info.value.status == 400
    assert str(info.value).startswith(message.split(";")[0])
    assert message in str(info.value)


def test_the_openapi_schema_describes_the_body() -> None:
    schema = json_api.openapi_body(json_api.SimilarBody)["requestBody"]["content"][
        "application/json"
    ]["schema"]
    assert schema["required"] == ["item_id"]
    assert set(schema["properties"]) == {"item_id", "k", "user_id"}
    assert schema["additionalProperties"] is False


# --------------------------------------------------------------------------- OIP requests


def parse_rest(body: Any, binary: bytes = b"", **limits: int) -> list[SimilarRequest]:
    return oip.parse_similar_rest_request(body, binary=binary, **{**LIMITS, **limits})


def grpc_request(
    inputs: list[Any], *, request_id: str = "", outputs: list[str] | None = None
) -> Any:
    requested = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs else None
    return grpc_utils._get_inference_request(
        "similar_items", inputs, "", request_id, requested, 0, False, False, 0, None, None
    )


def parse_grpc(request: Any, **limits: int) -> list[SimilarRequest]:
    return oip.parse_similar_grpc_request(request, **{**LIMITS, **limits})


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_rest_batch_with_k_users_and_an_id(binary: bool) -> None:
    inputs = [
        http_input("item_id", ids("50", "181", "1", column=True), "BYTES", binary=binary),
        http_input("k", np.array([5], dtype=np.int32), "INT32", binary=binary),
        http_input("user_id", ids("42", "", "7"), "BYTES", binary=binary),
    ]
    body, binary_data = http_body(inputs, request_id="s-1", parameters={"age": "999"})
    assert bool(binary_data) is binary
    # "" asks for no user on that row; the recommender's context parameters are not read.
    assert parse_rest(body, binary_data) == [
        SimilarRequest("50", 5, "42", "s-1"),
        SimilarRequest("181", 5, None, "s-1"),
        SimilarRequest("1", 5, "7", "s-1"),
    ]


def test_rest_int64_ids_default_k_and_one_user_for_every_row() -> None:
    body, binary = http_body(
        [
            http_input("item_id", np.array([50, 181], dtype=np.int64), "INT64", binary=False),
            http_input("user_id", np.array([42], dtype=np.int64), "INT64", binary=False),
        ]
    )
    assert parse_rest(body, binary) == [
        SimilarRequest("50", 10, "42"),
        SimilarRequest("181", 10, "42"),
    ]


def test_grpc_batch_from_tritonclient() -> None:
    request = grpc_request(
        [
            grpc_input("item_id", ids("50", "181"), "BYTES"),
            grpc_input("k", np.array([[3], [4]], dtype=np.int64), "INT64"),
            grpc_input("user_id", ids("42", column=True)[:1], "BYTES"),
        ],
        request_id="g-1",
    )
    assert parse_grpc(request) == [
        SimilarRequest("50", 3, "42", "g-1"),
        SimilarRequest("181", 4, "42", "g-1"),
    ]


def test_grpc_typed_contents() -> None:
    request = service_pb2.ModelInferRequest(model_name="similar_items")
    item = request.inputs.add(name="item_id", datatype="INT64", shape=[1])
    item.contents.int64_contents.append(50)
    assert parse_grpc(request) == [SimilarRequest("50", 10)]


def item(data: Any, shape: list[int] | None = None, datatype: str = "BYTES") -> dict[str, Any]:
    return rest_tensor("item_id", datatype, shape if shape is not None else [len(data)], data)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": []}, "inputs: missing required input 'item_id'"),
        (
            {"inputs": [rest_tensor("user_id", "BYTES", [1], ["42"])]},
            "inputs: missing required input 'item_id'",
        ),
        (
            {"inputs": [item(["1"]), rest_tensor("age", "BYTES", [1], ["30"])]},
            "inputs[1] (age): unknown input; model inputs are item_id, k, user_id",
        ),
        ({"inputs": [item([1.5], datatype="FP32")]}, "inputs[0] (item_id): datatype FP32 is not"),
        (
            {"inputs": [item([], shape=[0])]},
            "inputs[0] (item_id): batch size is 0; send 1..64 item",
        ),
        ({"inputs": [item([""])]}, "inputs[0] (item_id): element 0: must not be empty"),
        (
            {"inputs": [item(["1", "2"], shape=[3])]},
            "inputs[0] (item_id): shape [3] does not match",
        ),
        (
            {"inputs": [item(["1"]), rest_tensor("k", "INT64", [1], [0])]},
            "inputs[1] (k): 0 is outside 1..100",
        ),
        (
            {"inputs": [item(["1", "2", "3"]), rest_tensor("user_id", "BYTES", [2], ["a", "b"])]},
            "inputs[1] (user_id): 2 values for 3 item ids; send 1 or 3",
        ),
        (
            {"inputs": [item(["1"]), rest_tensor("user_id", "BYTES", [1], [7])]},
            "inputs[1] (user_id): element 0 is a int, not a string",
        ),
        (
            {"inputs": [item(["1"]), rest_tensor("user_id", "BYTES", [1], ["x" * 200])]},
            "inputs[1] (user_id): element 0: 200 characters",
        ),
        ({"inputs": [item(["1"])], "id": 5}, "id: expected a string, got int"),
        (
            {"inputs": [item(["1"])], "outputs": [{"name": "ranks"}]},
            "outputs[0] (ranks): unknown output",
        ),
    ],
)
def test_rest_mistakes_name_the_field(body: Any, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_rest(body)
    assert str(info.value).startswith(message), str(info.value)


def test_rest_batch_size_is_bounded() -> None:
    with pytest.raises(
        BadRequest, match=r"inputs\[0\] \(item_id\): batch size 3 exceeds max_batch 2"
    ):
        parse_rest({"inputs": [item(["1", "2", "3"])]}, max_batch=2)


def test_grpc_mistakes_name_the_field() -> None:
    bad_k = grpc_request(
        [
            grpc_input("item_id", ids("1"), "BYTES"),
            grpc_input("k", np.array([0], np.int32), "INT32"),
        ]
    )
    with pytest.raises(BadRequest, match=r"^inputs\[1\] \(k\): 0 is outside 1\.\.100"):
        parse_grpc(bad_k)
    recommender_input = grpc_request([grpc_input("user_id", ids("42"), "BYTES")])
    with pytest.raises(BadRequest, match=r"^inputs: missing required input 'item_id'"):
        parse_grpc(recommender_input)


def test_the_recommender_does_not_take_an_item_id() -> None:
    with pytest.raises(BadRequest, match=r"model inputs are user_id, k$"):
        oip.parse_rest_request({"inputs": [item(["1"])]}, default_k=10, max_k=100)


# --------------------------------------------------------------------------- OIP responses


def similar(item_id: str, n_items: int, **extra: Any) -> SimilarResponse:
    fields: dict[str, Any] = {
        "model_versions": {"user_tower": 1},
        "stages": ["similar", "rerank"],
        "fallbacks": [],
        "known_item": True,
    }
    fields.update(extra)
    items = [ScoredItem(f"{item_id}-s{j}", 1.0 / (j + 1)) for j in range(n_items)]
    return SimilarResponse(item_id=item_id, items=items, **fields)


def test_rest_response_pads_rows_and_says_how_each_was_made() -> None:
    responses = [similar("a", 3), similar("b", 1, known_item=False, stages=["cold_start"])]
    result = http_result(oip.rest_response("similar_items", "1", responses, "r", k=3))
    assert result.as_numpy("item_ids").tolist() == [["a-s0", "a-s1", "a-s2"], ["b-s0", "", ""]]
    assert result.as_numpy("scores").shape == (2, 3)
    params = result.get_response()["parameters"]
    assert set(params) == {"fallbacks", "stages", "model_versions", "known_item"}
    assert json.loads(params["known_item"]) == [True, False]
    assert json.loads(params["stages"]) == [["similar", "rerank"], ["cold_start"]]


def test_grpc_response_single_row_parameters_are_typed() -> None:
    request = grpc_request([grpc_input("item_id", ids("a"), "BYTES")], request_id="g")
    one = similar("a", 2, fallbacks=["similar:embeddings"])
    response = oip.grpc_response("similar_items", "1", [one], request, k=2)
    result = grpcclient.InferResult(response)
    assert result.as_numpy("item_ids").tolist() == [[b"a-s0", b"a-s1"]]
    np.testing.assert_array_equal(result.as_numpy("scores"), np.array([[1.0, 0.5]], np.float32))
    params = response.parameters
    assert params["known_item"].bool_param is True
    assert params["fallbacks"].string_param == "similar:embeddings"
    assert json.loads(params["model_versions"].string_param) == {"user_tower": 1}
    assert "known_user" not in params
    assert response.id == "g"


def test_metadata_and_config_list_the_similar_inputs() -> None:
    rest = oip.model_metadata("similar_items", inputs=oip.SIMILAR_INPUTS)
    shapes: dict[str, tuple[str, list[int]]] = {
        t["name"]: (t["datatype"], t["shape"]) for t in rest["inputs"]
    }
    assert shapes == {
        "item_id": ("BYTES", [-1]),
        "k": ("INT64", [-1]),
        "user_id": ("BYTES", [-1]),
    }
    grpc = json_format.MessageToDict(
        oip.grpc_model_metadata("similar_items", inputs=oip.SIMILAR_INPUTS)
    )
    for tensor in (*grpc["inputs"], *grpc["outputs"]):
        tensor["shape"] = [int(d) for d in tensor["shape"]]
    assert grpc == rest
    config = oip.model_config("similar_items", inputs=oip.SIMILAR_INPUTS)
    assert [i["name"] for i in config["input"]] == ["item_id", "k", "user_id"]
    grpc_config = oip.grpc_model_config("similar_items", inputs=oip.SIMILAR_INPUTS).config
    assert [i.name for i in grpc_config.input] == ["item_id", "k", "user_id"]
    # The recommender's are unchanged.
    assert [i["name"] for i in oip.model_metadata("recommender")["inputs"]] == ["user_id", "k"]
