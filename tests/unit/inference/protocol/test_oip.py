"""The OIP codec against tritonclient's own encoders and decoders.

Requests are built with ``tritonclient.{http,grpc}.InferInput`` and the private helpers the
clients call to assemble the body / ``ModelInferRequest``, and responses are read back with
tritonclient's ``InferResult``, so passing here means tritonclient works against the graph
unchanged. Error cases assert that the message names the offending field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.grpc import _utils as grpc_utils
from tritonclient.grpc import service_pb2
from tritonclient.http import _utils as http_utils

from inference.errors import BadRequest
from inference.graph.types import RecommendRequest, RecommendResponse, ScoredItem
from inference.protocol import oip

LIMITS: dict[str, int] = {"default_k": 10, "max_k": 100, "max_batch": 64}

Array = npt.NDArray[Any]


# --------------------------------------------------------------------------- helpers


def ids(*values: str | bytes, column: bool = False) -> Array:
    array = np.array(list(values), dtype=np.object_)
    return array.reshape(-1, 1) if column else array


def http_input(name: str, data: Array, datatype: str, *, binary: bool) -> Any:
    tensor = httpclient.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


def grpc_input(name: str, data: Array, datatype: str) -> Any:
    tensor = grpcclient.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return tensor


def http_body(
    inputs: Sequence[Any],
    *,
    outputs: Sequence[str] | None = None,
    request_id: str = "",
    parameters: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], bytes]:
    """What ``InferenceServerClient.infer`` would POST, split as a server would."""
    requested = [httpclient.InferRequestedOutput(n) for n in outputs] if outputs else None
    raw, header_length = http_utils._get_inference_request(
        inputs, request_id, requested, 0, False, False, 0, None, parameters
    )
    return oip.split_rest_body(raw, header_length)


def grpc_request(
    inputs: Sequence[Any],
    *,
    outputs: Sequence[str] | None = None,
    request_id: str = "",
    parameters: Mapping[str, Any] | None = None,
) -> Any:
    """The ``ModelInferRequest`` ``InferenceServerClient.infer`` would send."""
    requested = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs else None
    return grpc_utils._get_inference_request(
        "recommender", inputs, "", request_id, requested, 0, False, False, 0, None, parameters
    )


def parse_http(body: Mapping[str, Any], binary: bytes = b"", **limits: int) -> Any:
    return oip.parse_rest_request(body, binary=binary, **{**LIMITS, **limits})


def parse_grpc(request: Any, **limits: int) -> list[RecommendRequest]:
    return oip.parse_grpc_request(request, **{**LIMITS, **limits})


def rest_error(body: Any, binary: bytes = b"", **limits: int) -> str:
    with pytest.raises(BadRequest) as info:
        parse_http(body, binary, **limits)
    assert info.value.status == 400
    return str(info.value)


def grpc_error(request: Any, **limits: int) -> str:
    with pytest.raises(BadRequest) as info:
        parse_grpc(request, **limits)
    return str(info.value)


def answer(user_id: str, n_items: int, **extra: Any) -> RecommendResponse:
    items = [ScoredItem(f"{user_id}-i{j}", 1.0 / (j + 1)) for j in range(n_items)]
    fields: dict[str, Any] = {
        "model_versions": {"ranker": 2, "retrieval": 1},
        "stages": ["retrieval", "ranking"],
        "fallbacks": [],
        "known_user": True,
    }
    fields.update(extra)
    return RecommendResponse(user_id=user_id, items=items, **fields)


def http_result(body: Mapping[str, Any]) -> Any:
    return httpclient.InferResult.from_response_body(json.dumps(body).encode())


def rest_tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


# --------------------------------------------------------------------------- REST requests


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_rest_single_user_with_k_context_and_id(binary: bool) -> None:
    inputs = [
        http_input("user_id", ids("42"), "BYTES", binary=binary),
        http_input("k", np.array([5], dtype=np.int32), "INT32", binary=binary),
    ]
    params = {"age": "25", "gender": "F", "occupation": "writer", "other": 3}
    body, binary_data = http_body(inputs, request_id="req-1", parameters=params)
    assert bool(binary_data) is binary
    requests = parse_http(body, binary_data)
    context = {"age": "25", "gender": "F", "occupation": "writer"}
    assert requests == [RecommendRequest("42", 5, context, "req-1")]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_rest_batch_column_ids_and_per_row_k(binary: bool) -> None:
    inputs = [
        http_input("user_id", ids("1", "2", "é", column=True), "BYTES", binary=binary),
        http_input("k", np.array([[1], [2], [3]], dtype=np.int64), "INT64", binary=binary),
    ]
    body, binary_data = http_body(inputs)
    requests = parse_http(body, binary_data)
    assert [(r.user_id, r.k, r.request_id) for r in requests] == [
        ("1", 1, None),
        ("2", 2, None),
        ("é", 3, None),
    ]


def test_rest_default_k_and_int64_user_ids() -> None:
    inputs = [http_input("user_id", np.array([7, 8], dtype=np.int64), "INT64", binary=True)]
    body, binary_data = http_body(inputs)
    requests = parse_http(body, binary_data, default_k=4)
    assert [(r.user_id, r.k, r.context) for r in requests] == [("7", 4, {}), ("8", 4, {})]


def test_rest_one_k_applies_to_every_row() -> None:
    inputs = [
        http_input("user_id", ids("a", "b", "c"), "BYTES", binary=False),
        http_input("k", np.array([7], dtype=np.int32), "INT32", binary=False),
    ]
    assert [r.k for r in parse_http(http_body(inputs)[0])] == [7, 7, 7]


def test_rest_nested_and_flat_data_are_equivalent() -> None:
    nested = {"inputs": [rest_tensor("user_id", "BYTES", [2, 1], [["a"], ["b"]])]}
    flat = {"inputs": [rest_tensor("user_id", "BYTES", [2, 1], ["a", "b"])]}
    assert parse_http(nested) == parse_http(flat)
    assert [r.user_id for r in parse_http(nested)] == ["a", "b"]


def test_rest_id_parameter_is_a_fallback_for_the_request_id() -> None:
    inputs = [http_input("user_id", ids("a"), "BYTES", binary=False)]
    body, _ = http_body(inputs, parameters={"id": "from-param"})
    assert parse_http(body)[0].request_id == "from-param"
    body, _ = http_body(inputs, request_id="top", parameters={"id": "from-param"})
    assert parse_http(body)[0].request_id == "top"


def test_rest_requested_outputs_follow_the_client() -> None:
    inputs = [http_input("user_id", ids("a"), "BYTES", binary=False)]
    body, _ = http_body(inputs, outputs=["scores"])
    assert oip.rest_requested_outputs(body) == ["scores"]
    body, _ = http_body(inputs)
    assert oip.rest_requested_outputs(body) == ["item_ids", "scores"]


# --------------------------------------------------------------------------- gRPC requests


def test_grpc_raw_batch_with_context_and_id() -> None:
    inputs = [
        grpc_input("user_id", ids("u1", "u2", column=True), "BYTES"),
        grpc_input("k", np.array([3, 4], dtype=np.int64), "INT64"),
    ]
    request = grpc_request(inputs, request_id="r9", parameters={"gender": "M", "age": "35"})
    assert len(request.raw_input_contents) == 2
    assert parse_grpc(request) == [
        RecommendRequest("u1", 3, {"age": "35", "gender": "M"}, "r9"),
        RecommendRequest("u2", 4, {"age": "35", "gender": "M"}, "r9"),
    ]


def test_grpc_int64_ids_int32_k_and_default_k() -> None:
    inputs = [
        grpc_input("user_id", np.array([[5]], dtype=np.int64), "INT64"),
        grpc_input("k", np.array([2], dtype=np.int32), "INT32"),
    ]
    assert parse_grpc(grpc_request(inputs)) == [RecommendRequest("5", 2)]
    only_ids = grpc_request([grpc_input("user_id", ids(b"x"), "BYTES")])
    assert parse_grpc(only_ids, default_k=3) == [RecommendRequest("x", 3)]


def test_grpc_id_parameter_is_a_fallback_for_the_request_id() -> None:
    inputs = [grpc_input("user_id", ids("a"), "BYTES")]
    assert parse_grpc(grpc_request(inputs, parameters={"id": "p"}))[0].request_id == "p"


def typed_request() -> Any:
    request = service_pb2.ModelInferRequest(model_name="recommender")
    user = request.inputs.add(name="user_id", datatype="BYTES", shape=[2])
    user.contents.bytes_contents.extend([b"a", b"b"])
    k = request.inputs.add(name="k", datatype="INT64", shape=[1])
    k.contents.int64_contents.append(6)
    return request


def test_grpc_typed_contents() -> None:
    assert parse_grpc(typed_request()) == [RecommendRequest("a", 6), RecommendRequest("b", 6)]
    request = service_pb2.ModelInferRequest()
    user = request.inputs.add(name="user_id", datatype="INT64", shape=[1, 1])
    user.contents.int64_contents.append(11)
    k = request.inputs.add(name="k", datatype="INT32", shape=[1])
    k.contents.int_contents.append(2)
    assert parse_grpc(request) == [RecommendRequest("11", 2)]


# --------------------------------------------------------------------------- responses


def test_rest_response_decodes_with_tritonclient_and_pads_short_rows() -> None:
    responses = [answer("a", 3), answer("b", 1, known_user=False, fallbacks=["ranking"])]
    body = oip.rest_response("recommender", "1", responses, "r1", k=3)
    result = http_result(body)
    item_ids = result.as_numpy("item_ids")
    scores = result.as_numpy("scores")
    assert item_ids.shape == (2, 3)
    assert item_ids.tolist() == [["a-i0", "a-i1", "a-i2"], ["b-i0", "", ""]]
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(
        scores, np.array([[1.0, 0.5, 1 / 3], [1.0, 0.0, 0.0]], dtype=np.float32)
    )
    response = result.get_response()
    assert response["id"] == "r1"
    assert response["model_name"] == "recommender"
    params = response["parameters"]
    assert json.loads(params["fallbacks"]) == [[], ["ranking"]]
    assert json.loads(params["known_user"]) == [True, False]
    assert json.loads(params["stages"]) == [["retrieval", "ranking"]] * 2
    assert json.loads(params["model_versions"]) == [{"ranker": 2, "retrieval": 1}] * 2


def test_rest_response_single_user_parameters_and_subset() -> None:
    one = answer(
        "a",
        2,
        fallbacks=["retrieval", "ranking"],
        assignment={"exp": "B"},
        score_source="two_tower",
    )
    body = oip.rest_response("recommender", "1", [one], None, outputs=["item_ids"])
    assert "id" not in body
    result = http_result(body)
    assert result.as_numpy("scores") is None
    assert result.as_numpy("item_ids").tolist() == [["a-i0", "a-i1"]]
    params = result.get_response()["parameters"]
    assert params["fallbacks"] == "retrieval,ranking"
    assert params["stages"] == "retrieval,ranking"
    assert params["known_user"] is True
    assert params["score_source"] == "two_tower"
    assert json.loads(params["model_versions"]) == {"ranker": 2, "retrieval": 1}
    assert json.loads(params["assignment"]) == {"exp": "B"}


def test_rest_response_rejects_unknown_output() -> None:
    with pytest.raises(BadRequest, match=r"outputs\[1\] \(ranks\): unknown output"):
        oip.rest_response("recommender", "1", [answer("a", 1)], None, outputs=["scores", "ranks"])


def test_grpc_response_decodes_with_tritonclient() -> None:
    inputs = [grpc_input("user_id", ids("a", "b"), "BYTES")]
    request = grpc_request(inputs, request_id="g1")
    responses = [answer("a", 2), answer("b", 0, known_user=False)]
    result = grpcclient.InferResult(oip.grpc_response("recommender", "1", responses, request, k=2))
    item_ids = result.as_numpy("item_ids")
    assert item_ids.dtype == np.object_
    assert item_ids.tolist() == [[b"a-i0", b"a-i1"], [b"", b""]]
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float32
    assert scores.tolist() == [[1.0, 0.5], [0.0, 0.0]]
    response = result.get_response()
    assert response.id == "g1"
    assert response.model_version == "1"
    assert json.loads(response.parameters["known_user"].string_param) == [True, False]


def test_grpc_response_single_user_parameters_are_typed() -> None:
    request = grpc_request([grpc_input("user_id", ids("a"), "BYTES")])
    response = oip.grpc_response("recommender", "1", [answer("a", 1, fallbacks=["cache"])], request)
    assert response.parameters["known_user"].bool_param is True
    assert response.parameters["fallbacks"].string_param == "cache"
    assert response.parameters["stages"].string_param == "retrieval,ranking"
    assert json.loads(response.parameters["model_versions"].string_param) == {
        "ranker": 2,
        "retrieval": 1,
    }
    assert not response.id


def test_grpc_response_honors_requested_output_subset() -> None:
    inputs = [grpc_input("user_id", ids("a"), "BYTES")]
    request = grpc_request(inputs, outputs=["scores"])
    assert parse_grpc(request) == [RecommendRequest("a", 10)]
    response = oip.grpc_response("recommender", "1", [answer("a", 2)], request)
    assert [o.name for o in response.outputs] == ["scores"]
    assert len(response.raw_output_contents) == 1
    result = grpcclient.InferResult(response)
    assert result.as_numpy("item_ids") is None
    assert result.as_numpy("scores").tolist() == [[1.0, 0.5]]


def test_grpc_unknown_output_is_rejected_at_parse_and_response() -> None:
    request = grpc_request([grpc_input("user_id", ids("a"), "BYTES")], outputs=["ranks"])
    assert "outputs[0] (ranks): unknown output" in grpc_error(request)
    with pytest.raises(BadRequest, match=r"outputs\[0\] \(ranks\)"):
        oip.grpc_response("recommender", "1", [answer("a", 1)], request)


def test_response_width_defaults_to_longest_answer_and_truncates_to_k() -> None:
    body = oip.rest_response("m", "1", [answer("a", 1), answer("b", 3)], None)
    assert body["outputs"][0]["shape"] == [2, 3]
    body = oip.rest_response("m", "1", [answer("a", 5)], None, k=2)
    assert body["outputs"][0]["data"] == ["a-i0", "a-i1"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_http_round_trip_through_tritonclient(binary: bool) -> None:
    inputs = [
        http_input("user_id", ids("u1", "u2"), "BYTES", binary=binary),
        http_input("k", np.array([2], dtype=np.int64), "INT64", binary=binary),
    ]
    body, binary_data = http_body(inputs, request_id="rt", outputs=["item_ids", "scores"])
    requests = parse_http(body, binary_data)
    responses = [answer(r.user_id, r.k) for r in requests]
    reply = oip.rest_response(
        "recommender",
        "1",
        responses,
        requests[0].request_id,
        k=max(r.k for r in requests),
        outputs=oip.rest_requested_outputs(body),
    )
    result = http_result(reply)
    assert result.as_numpy("item_ids").tolist() == [["u1-i0", "u1-i1"], ["u2-i0", "u2-i1"]]
    assert result.get_response()["id"] == "rt"


# --------------------------------------------------------------------------- metadata, errors


def test_model_metadata_rest_and_grpc_agree() -> None:
    rest = oip.model_metadata("recommender", max_batch=64)
    assert rest["platform"] == "cascade_graph"
    assert rest["versions"] == ["1"]
    assert {t["name"]: (t["datatype"], t["shape"]) for t in rest["inputs"]} == {
        "user_id": ("BYTES", [-1]),
        "k": ("INT64", [-1]),
    }
    assert {t["name"]: (t["datatype"], t["shape"]) for t in rest["outputs"]} == {
        "item_ids": ("BYTES", [-1, -1]),
        "scores": ("FP32", [-1, -1]),
    }
    grpc = oip.grpc_model_metadata("recommender", max_batch=64)
    as_dict = json_format.MessageToDict(grpc)
    for tensor in (*as_dict["inputs"], *as_dict["outputs"]):
        tensor["shape"] = [int(d) for d in tensor["shape"]]
    assert as_dict == rest
    assert oip.model_metadata("solo", max_batch=1)["inputs"][0]["shape"] == [1]
    with pytest.raises(ValueError, match="max_batch"):
        oip.model_metadata(max_batch=0)


def test_error_body_is_the_v2_error_shape() -> None:
    assert oip.error_body("inputs: bad") == {"error": "inputs: bad"}


def user(data: Any, shape: list[Any] | None = None, datatype: str = "BYTES") -> dict[str, Any]:
    return rest_tensor("user_id", datatype, shape if shape is not None else [len(data)], data)


def k_input(data: Any, shape: list[int] | None = None, datatype: str = "INT64") -> dict[str, Any]:
    return rest_tensor("k", datatype, shape if shape is not None else [len(data)], data)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body: expected a JSON object"),
        ({}, "inputs: expected a list of tensors"),
        ({"inputs": ["x"]}, "inputs[0]: expected an object"),
        ({"inputs": [{"shape": [1]}]}, "inputs[0]: name must be a string"),
        ({"inputs": []}, "inputs: missing required input 'user_id'"),
        ({"inputs": [k_input([3])]}, "inputs: missing required input 'user_id'"),
        (
            {"inputs": [user(["a"]), rest_tensor("history", "INT64", [1], [1])]},
            "inputs[1] (history): unknown input; model inputs are user_id, k",
        ),
        (
            {"inputs": [user(["a"]), user(["b"])]},
            "inputs[1] (user_id): duplicate input, also sent as inputs[0]",
        ),
        (
            {"inputs": [user([1.0], datatype="FP32")]},
            "inputs[0] (user_id): datatype FP32 is not BYTES or INT64",
        ),
        (
            {"inputs": [user(["a"]), k_input([1], datatype="FP32")]},
            "inputs[1] (k): datatype FP32 is not INT32 or INT64",
        ),
        ({"inputs": [user(["a"], shape=[1.0])]}, "inputs[0] (user_id): shape must be a list"),
        (
            {"inputs": [user(["a", "b", "c", "d"], shape=[2, 2])]},
            "inputs[0] (user_id): shape [2, 2] is not [N] or [N, 1]",
        ),
        ({"inputs": [user([], shape=[])]}, "inputs[0] (user_id): shape [] is not [N] or [N, 1]"),
        (
            {"inputs": [user(["a", "b", "c"], shape=[2])]},
            "inputs[0] (user_id): shape [2] does not match 3 data elements",
        ),
        (
            {"inputs": [user(["a"]), k_input([1, 2], shape=[1])]},
            "inputs[1] (k): shape [1] does not match 2 data elements",
        ),
        ({"inputs": [user("a")]}, "inputs[0] (user_id): data must be a list, got str"),
        (
            {"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [1]}]},
            "inputs[0] (user_id): data is missing",
        ),
        ({"inputs": [user(["a", 1])]}, "inputs[0] (user_id): element 1 is a int, not a string"),
        ({"inputs": [user(["a", ""])]}, "inputs[0] (user_id): element 1: must not be empty"),
        (
            {"inputs": [user([1, True], datatype="INT64")]},
            "inputs[0] (user_id): element 1 is a bool, not an integer",
        ),
        (
            {"inputs": [user(["a"]), k_input([2.5])]},
            "inputs[1] (k): element 0 is a float, not an integer",
        ),
        (
            {"inputs": [user(["a"]), k_input([2**40], datatype="INT32")]},
            "inputs[1] (k): element 0 (1099511627776) does not fit INT32",
        ),
        ({"inputs": [user(["a"]), k_input([0])]}, "inputs[1] (k): 0 is outside 1..100"),
        ({"inputs": [user(["a"]), k_input([101])]}, "inputs[1] (k): 101 is outside 1..100"),
        (
            {"inputs": [user(["a", "b", "c"]), k_input([1, 2])]},
            "inputs[1] (k): 2 values for 3 user ids; send 1 or 3",
        ),
        ({"inputs": [user([], shape=[0])]}, "inputs[0] (user_id): batch size is 0"),
        (
            {"inputs": [user([str(i) for i in range(65)])]},
            "inputs[0] (user_id): batch size 65 exceeds max_batch 64",
        ),
        (
            {"inputs": [user(["a"])], "parameters": ["age", "30"]},
            "parameters: expected a JSON object, got list",
        ),
        (
            {"inputs": [user(["a"])], "parameters": {"age": 300}},
            "parameters['age']: 300 is outside 0..150",
        ),
        (
            {"inputs": [user(["a"])], "parameters": {"occupation": None}},
            "parameters['occupation']: expected a string, got null",
        ),
        ({"inputs": [user(["a"])], "id": 5}, "id: expected a string, got int"),
        (
            {"inputs": [user(["a"])], "parameters": {"id": 5}},
            "parameters['id']: expected a string, got int",
        ),
        (
            {"inputs": [{**user(["a"]), "parameters": {"shared_memory_region": "r"}}]},
            "inputs[0] (user_id): shared memory is not supported",
        ),
        (
            {"inputs": [{**user(["a"]), "parameters": "x"}]},
            "inputs[0] (user_id): parameters must be an object",
        ),
        (
            {"inputs": [user(["a"])], "outputs": [{"name": "ranks"}]},
            "outputs[0] (ranks): unknown output; model outputs are item_ids, scores",
        ),
        ({"inputs": [user(["a"])], "outputs": {"name": "scores"}}, "outputs: expected a list"),
        (
            {
                "inputs": [user(["a"])],
                "outputs": [{"name": "scores", "parameters": {"classification": 2}}],
            },
            "outputs[0] (scores): the classification extension is not supported",
        ),
        (
            {"inputs": [user(["a"])], "outputs": [{"name": "scores"}, {"name": "scores"}]},
            "outputs[1] (scores): output requested twice",
        ),
    ],
)
def test_rest_errors_name_the_field(body: Any, message: str) -> None:
    assert rest_error(body).startswith(message)


def test_rest_max_batch_is_configurable() -> None:
    body = {"inputs": [user(["a", "b", "c"])]}
    assert rest_error(body, max_batch=2).startswith(
        "inputs[0] (user_id): batch size 3 exceeds max_batch 2"
    )
    body = {"inputs": [user(["a"]), k_input([6])]}
    assert rest_error(body, max_k=5).startswith("inputs[1] (k): 6 is outside 1..5")


def test_rest_binary_errors() -> None:
    inputs = [http_input("user_id", ids(b"\xff\xfe"), "BYTES", binary=True)]
    body, binary = http_body(inputs)
    assert rest_error(body, binary) == "inputs[0] (user_id): element 0 is not valid UTF-8"
    inputs = [http_input("user_id", ids("abc"), "BYTES", binary=True)]
    body, binary = http_body(inputs)
    assert rest_error(body, binary + b"xx").startswith(
        "body: 9 bytes of binary data follow the JSON header, inputs declare 7"
    )
    assert rest_error(body, binary[:5]).startswith(
        "inputs[0] (user_id): binary_data_size 7 runs past the 5 bytes"
    )
    body["inputs"][0]["parameters"]["binary_data_size"] = 5
    assert rest_error(body, binary[:5]).startswith(
        "inputs[0] (user_id): raw BYTES element 0 declares 3 bytes, 1 remain"
    )
    body["inputs"][0]["parameters"]["binary_data_size"] = 2
    assert rest_error(body, binary[:2]).startswith(
        "inputs[0] (user_id): raw BYTES data ends inside the length prefix of element 0"
    )
    body["inputs"][0]["parameters"]["binary_data_size"] = -1
    assert rest_error(body, b"").startswith(
        "inputs[0] (user_id): binary_data_size must be a non-negative integer"
    )
    body["inputs"][0]["parameters"]["binary_data_size"] = 7
    body["inputs"][0]["data"] = ["abc"]
    assert rest_error(body, binary).startswith(
        "inputs[0] (user_id): both data and binary_data_size are set"
    )
    k = http_input("k", np.array([3], dtype=np.int64), "INT64", binary=True)
    body, binary = http_body([http_input("user_id", ids("a"), "BYTES", binary=False), k])
    body["inputs"][1]["parameters"]["binary_data_size"] = 7
    assert rest_error(body, binary[:7]).startswith(
        "inputs[1] (k): raw INT64 data has 7 bytes, not a multiple of 8"
    )


def test_rest_context_from_tritonclient_takes_an_age_as_a_number() -> None:
    inputs = [http_input("user_id", ids("a"), "BYTES", binary=False)]
    body, _ = http_body(inputs, parameters={"age": 25})
    (request,) = oip.parse_rest_request(body, default_k=10, max_k=100, max_batch=64)
    assert request.context == {"age": "25"}
    body, _ = http_body(inputs, parameters={"age": 25.5})
    assert rest_error(body) == "parameters['age']: expected a whole number of years, got number"


def test_split_rest_body_errors() -> None:
    with pytest.raises(BadRequest, match=r"^body: not valid JSON"):
        oip.split_rest_body(b"{nope")
    with pytest.raises(BadRequest, match=r"^body: not valid JSON"):
        oip.split_rest_body(b'{"a": "\xff"}')
    with pytest.raises(BadRequest, match=r"^body: expected a JSON object, got list"):
        oip.split_rest_body(b"[1]")
    with pytest.raises(BadRequest, match=r"^Inference-Header-Content-Length: 9 is outside"):
        oip.split_rest_body(b"{}", 9)
    assert oip.split_rest_body(b"{}xyz", 2) == ({}, b"xyz")


def test_grpc_errors_from_tritonclient_inputs() -> None:
    fp32 = grpc_input("user_id", np.array([1.0], dtype=np.float32), "FP32")
    assert grpc_error(grpc_request([fp32])) == (
        "inputs[0] (user_id): datatype FP32 is not BYTES or INT64"
    )
    k_only = grpc_input("k", np.array([3], dtype=np.int64), "INT64")
    assert grpc_error(grpc_request([k_only])) == "inputs: missing required input 'user_id'"
    bad_utf8 = grpc_input("user_id", ids(b"ok", b"\xc3\x28"), "BYTES")
    assert grpc_error(grpc_request([bad_utf8])) == (
        "inputs[0] (user_id): element 1 is not valid UTF-8"
    )
    empty = grpc_input("user_id", ids(""), "BYTES")
    assert grpc_error(grpc_request([empty])) == "inputs[0] (user_id): element 0: must not be empty"
    many = grpc_input("user_id", ids(*[f"u{i}" for i in range(65)]), "BYTES")
    assert grpc_error(grpc_request([many])).startswith(
        "inputs[0] (user_id): batch size 65 exceeds max_batch 64"
    )
    users = grpc_input("user_id", ids("a", "b"), "BYTES")
    zero = grpc_input("k", np.array([0], dtype=np.int32), "INT32")
    assert grpc_error(grpc_request([users, zero])) == "inputs[1] (k): 0 is outside 1..100"
    three = grpc_input("k", np.array([1, 2, 3], dtype=np.int64), "INT64")
    assert grpc_error(grpc_request([users, three])) == (
        "inputs[1] (k): 3 values for 2 user ids; send 1 or 2"
    )
    unknown = grpc_input("history", np.array([1], dtype=np.int64), "INT64")
    assert grpc_error(grpc_request([users, unknown])).startswith(
        "inputs[1] (history): unknown input"
    )
    assert grpc_error(grpc_request([users], parameters={"age": 10**19 // 2})) == (
        "parameters['age']: 5000000000000000000 is outside 0..150"
    )
    assert grpc_error(grpc_request([users], parameters={"age": "99999999999999999999"})) == (
        "parameters['age']: expected a whole number of years, got string"
    )
    assert grpc_error(grpc_request([users], parameters={"gender": True})) == (
        "parameters['gender']: expected a string, got bool_param"
    )


def test_grpc_errors_in_hand_made_messages() -> None:
    request = grpc_request(
        [
            grpc_input("user_id", ids("a", "b", "c"), "BYTES"),
            grpc_input("k", np.array([2], dtype=np.int64), "INT64"),
        ]
    )
    short = service_pb2.ModelInferRequest()
    short.CopyFrom(request)
    del short.raw_input_contents[1]
    assert grpc_error(short).startswith("raw_input_contents: 1 entries for 2 inputs")

    shape = service_pb2.ModelInferRequest()
    shape.CopyFrom(request)
    shape.inputs[0].shape[:] = [2]
    assert grpc_error(shape) == "inputs[0] (user_id): shape [2] does not match 3 data elements"

    column = service_pb2.ModelInferRequest()
    column.CopyFrom(request)
    column.inputs[0].shape[:] = [1, 3]
    assert grpc_error(column) == "inputs[0] (user_id): shape [1, 3] is not [N] or [N, 1]"

    negative = service_pb2.ModelInferRequest()
    negative.CopyFrom(request)
    negative.inputs[0].shape[:] = [-3]
    assert grpc_error(negative) == "inputs[0] (user_id): shape [-3] is not [N] or [N, 1]"

    both = service_pb2.ModelInferRequest()
    both.CopyFrom(request)
    both.inputs[1].contents.int64_contents.append(2)
    assert grpc_error(both) == "inputs[1] (k): both contents and raw_input_contents are set"

    truncated = service_pb2.ModelInferRequest()
    truncated.CopyFrom(request)
    truncated.raw_input_contents[1] = b"\x02\x00\x00"
    assert grpc_error(truncated) == (
        "inputs[1] (k): raw INT64 data has 3 bytes, not a multiple of 8"
    )

    shared = service_pb2.ModelInferRequest()
    shared.CopyFrom(request)
    shared.inputs[0].parameters["shared_memory_region"].string_param = "r"
    assert grpc_error(shared).startswith("inputs[0] (user_id): shared memory is not supported")

    classify = grpc_request([grpc_input("user_id", ids("a"), "BYTES")], outputs=["scores"])
    classify.outputs[0].parameters["classification"].int64_param = 3
    assert grpc_error(classify) == (
        "outputs[0] (scores): the classification extension is not supported"
    )


def test_grpc_typed_contents_errors() -> None:
    wrong_field = typed_request()
    wrong_field.inputs[1].contents.ClearField("int64_contents")
    wrong_field.inputs[1].contents.int_contents.append(6)
    assert grpc_error(wrong_field) == "inputs[1] (k): INT64 data must be in contents.int64_contents"

    missing = typed_request()
    missing.inputs[0].contents.ClearField("bytes_contents")
    assert grpc_error(missing) == "inputs[0] (user_id): shape [2] does not match 0 data elements"

    too_big = typed_request()
    too_big.inputs[1].contents.int64_contents[0] = 1000
    assert grpc_error(too_big) == "inputs[1] (k): 1000 is outside 1..100"

    bad_utf8 = typed_request()
    bad_utf8.inputs[0].contents.bytes_contents[1] = b"\xff"
    assert grpc_error(bad_utf8) == "inputs[0] (user_id): element 1 is not valid UTF-8"

    zero_rows = service_pb2.ModelInferRequest()
    zero_rows.inputs.add(name="user_id", datatype="BYTES", shape=[0])
    assert grpc_error(zero_rows).startswith("inputs[0] (user_id): batch size is 0")


def test_bad_request_is_a_400() -> None:
    with pytest.raises(BadRequest) as info:
        parse_http({"inputs": []})
    assert info.value.status == 400
    assert oip.error_body(str(info.value)) == {"error": "inputs: missing required input 'user_id'"}
