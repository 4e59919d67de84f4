"""Open Inference Protocol (KServe v2) codec for the recommendation graph served as models.

The graph is exposed as two models, the recommender (``recommender`` by default) and the
similar items (``similar_items``), so that ``tritonclient`` and other v2 clients call it
unchanged. This module only translates: OIP messages (REST JSON bodies and gRPC
``service_pb2`` messages) to :class:`RecommendRequest` (:class:`SimilarRequest`) lists and
responses back to OIP. It does no I/O, so both front ends share one set of checks and
messages, and tests can drive it with tritonclient's own encoders and decoders.

Signature of the model:

* input ``user_id``: ``BYTES`` (UTF-8 catalog ids) or ``INT64``, shape ``[N]`` or ``[N, 1]``,
  ``1 <= N <= max_batch``; one request per row.
* input ``k`` (optional): ``INT32`` or ``INT64``, shape ``[1]`` (one k for every row), ``[N]``
  or ``[N, 1]``; each value in ``1..max_k``; ``default_k`` when absent.
* request ``parameters`` (optional): string values ``age``, ``gender``, ``occupation`` become
  every row's ``context`` (demographics for users the store does not know). The request id is
  the message's ``id``, or a string parameter ``id`` when that is empty.
* outputs ``item_ids`` (``BYTES``) and ``scores`` (``FP32``), shape ``[N, k]`` with ``k`` the
  largest requested; a row with fewer items is padded with ``""`` and ``0.0``, so clients spot
  padding by the empty id (a real score may be anything, NaN would poison sums).
* response ``parameters``: ``fallbacks`` and ``stages`` (comma-joined), ``model_versions`` and
  ``assignment`` (JSON objects as strings), ``known_user`` (bool), ``score_source`` (what the
  scores are: ``combiner``, a ranker, ``two_tower`` or ``popularity``). For ``N > 1`` each is a JSON
  string holding one entry per row, since v2 parameter values cannot be lists.

Signature of ``similar_items`` (:func:`parse_similar_rest_request`,
:func:`parse_similar_grpc_request`), the same but for:

* input ``item_id``: ``BYTES`` or ``INT64``, shape ``[N]`` or ``[N, 1]``; one request per row.
* input ``user_id`` (optional): ``BYTES`` or ``INT64``, shape ``[1]`` (every row) or ``[N]``
  / ``[N, 1]``; each row leaves out the items that user has seen (``""``: no user).
* request ``parameters``: only ``id`` is read.
* response ``parameters``: ``fallbacks``, ``stages``, ``model_versions`` and ``known_item``.

Every malformed request raises :class:`~inference.errors.BadRequest` whose message starts with
the offending field (``inputs[1] (k): 0 is outside 1..100``), answered as :func:`error_body`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
from tritonclient.grpc import service_pb2

from contract.names import SIMILAR_ITEMS
from inference.errors import BadRequest
from inference.graph.types import (
    RecommendRequest,
    RecommendResponse,
    SimilarRequest,
    SimilarResponse,
)
from inference.protocol import limits
from inference.protocol.oip_tensors import Inputs, Tensor, grpc_tensors, rest_tensors
from inference.protocol.oip_tensors import type_name as _kind

__all__ = [
    "CONTEXT_PARAMETERS",
    "DEFAULT_MAX_BATCH",
    "INPUT_ITEM_ID",
    "INPUT_K",
    "INPUT_USER_ID",
    "MODEL_NAME",
    "OUTPUTS",
    "OUTPUT_ITEM_IDS",
    "OUTPUT_SCORES",
    "PLATFORM",
    "RECOMMENDER_INPUTS",
    "SIMILAR_INPUTS",
    "SIMILAR_MODEL_NAME",
    "Inputs",
    "error_body",
    "grpc_model_config",
    "grpc_model_metadata",
    "grpc_response",
    "model_config",
    "model_metadata",
    "parse_grpc_request",
    "parse_rest_request",
    "parse_similar_grpc_request",
    "parse_similar_rest_request",
    "rest_requested_outputs",
    "rest_response",
    "split_rest_body",
]

MODEL_NAME: Final = "recommender"
SIMILAR_MODEL_NAME: Final = SIMILAR_ITEMS
PLATFORM: Final = "cascade_graph"
DEFAULT_MAX_BATCH: Final = 64
INPUT_USER_ID: Final = "user_id"
INPUT_ITEM_ID: Final = "item_id"
INPUT_K: Final = "k"
OUTPUT_ITEM_IDS: Final = "item_ids"
OUTPUT_SCORES: Final = "scores"
OUTPUTS: Final = (OUTPUT_ITEM_IDS, OUTPUT_SCORES)
CONTEXT_PARAMETERS: Final = ("age", "gender", "occupation")

RECOMMENDER_INPUTS: Final[Inputs] = {
    INPUT_USER_ID: ("BYTES", "INT64"),
    INPUT_K: ("INT64", "INT32"),
}
SIMILAR_INPUTS: Final[Inputs] = {
    INPUT_ITEM_ID: ("BYTES", "INT64"),
    INPUT_K: ("INT64", "INT32"),
    INPUT_USER_ID: ("BYTES", "INT64"),
}
_OUTPUT_TYPES: Final[dict[str, str]] = {OUTPUT_ITEM_IDS: "BYTES", OUTPUT_SCORES: "FP32"}


def error_body(message: str) -> dict[str, str]:
    """The v2 error shape (``{"error": message}``) that tritonclient turns into its exception."""
    return {"error": message}


# --------------------------------------------------------------------------- model metadata


def _batch_dim(max_batch: int) -> int:
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    return -1 if max_batch > 1 else 1


def _tensor_metadata(
    max_batch: int, model_inputs: Inputs
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    batch = _batch_dim(max_batch)
    inputs = [
        {"name": name, "datatype": types[0], "shape": [batch]}
        for name, types in model_inputs.items()
    ]
    outputs = [
        {"name": name, "datatype": datatype, "shape": [batch, -1]}
        for name, datatype in _OUTPUT_TYPES.items()
    ]
    return inputs, outputs


def model_metadata(
    name: str = MODEL_NAME,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    version: str = "1",
    inputs: Inputs = RECOMMENDER_INPUTS,
) -> dict[str, Any]:
    """REST model metadata of the model with ``inputs`` (the recommender's by default). Only
    the preferred datatypes are listed (``user_id`` BYTES, ``k`` INT64); INT64 ids, INT32 k
    and ``[N, 1]`` shapes are accepted too. The batch dim is ``-1``, or ``1`` when
    ``max_batch`` is 1, the only place metadata can express the limit."""
    described, outputs = _tensor_metadata(max_batch, inputs)
    return {
        "name": name,
        "versions": [version],
        "platform": PLATFORM,
        "inputs": described,
        "outputs": outputs,
    }


def grpc_model_metadata(
    name: str = MODEL_NAME,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    version: str = "1",
    inputs: Inputs = RECOMMENDER_INPUTS,
) -> service_pb2.ModelMetadataResponse:
    """:func:`model_metadata` as the gRPC ``ModelMetadataResponse``."""
    described, outputs = _tensor_metadata(max_batch, inputs)
    Metadata = service_pb2.ModelMetadataResponse.TensorMetadata
    return service_pb2.ModelMetadataResponse(
        name=name,
        versions=[version],
        platform=PLATFORM,
        inputs=[Metadata(**t) for t in described],
        outputs=[Metadata(**t) for t in outputs],
    )


#: OIP datatypes -> Triton model-config data types.
_CONFIG_TYPES: Final = {
    "BYTES": "TYPE_STRING",
    "INT64": "TYPE_INT64",
    "INT32": "TYPE_INT32",
    "FP32": "TYPE_FP32",
}


def model_config(
    name: str = MODEL_NAME,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    inputs: Inputs = RECOMMENDER_INPUTS,
) -> dict[str, Any]:
    """Triton's model configuration (``GET /v2/models/{name}/config``) for a graph model:
    what tritonclient's ``get_model_config`` reads; dims leave out the batch dimension."""
    described, outputs = _tensor_metadata(max_batch, inputs)

    def entries(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "name": t["name"],
                "data_type": _CONFIG_TYPES[t["datatype"]],
                "dims": [int(d) for d in t["shape"][1:]],
            }
            for t in tensors
        ]

    return {
        "name": name,
        "platform": PLATFORM,
        "max_batch_size": max_batch,
        "version_policy": {"specific": {"versions": [1]}},
        "input": entries(described),
        "output": entries(outputs),
    }


def grpc_model_config(
    name: str = MODEL_NAME,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    inputs: Inputs = RECOMMENDER_INPUTS,
) -> service_pb2.ModelConfigResponse:
    """:func:`model_config` as the gRPC ``ModelConfigResponse``."""
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    config = json_format.ParseDict(
        model_config(name, max_batch=max_batch, inputs=inputs), model_config_pb2.ModelConfig()
    )
    return service_pb2.ModelConfigResponse(config=config)


# --------------------------------------------------------------------------- requests


def _rows(tensor: Tensor | None, name: str, noun: str, max_batch: int) -> int:
    """The batch size, from the tensor of the required per-row input ``name``."""
    if tensor is None:
        raise BadRequest(f"inputs: missing required input {name!r}")
    rows = tensor.shape[0]
    if rows < 1:
        raise BadRequest(f"{tensor.label}: batch size is 0; send 1..{max_batch} {noun}")
    if rows > max_batch:
        raise BadRequest(f"{tensor.label}: batch size {rows} exceeds max_batch {max_batch}")
    return rows


def _ids(tensor: Tensor, *, allow_empty: bool = False) -> list[str]:
    """Catalog ids, one per element: BYTES checked as text (``""`` kept when
    ``allow_empty``), integers as their decimal form."""
    if tensor.datatype != "BYTES":
        return [str(v) for v in tensor.ints]
    return [
        value
        if allow_empty and value == ""
        else limits.check_text(f"{tensor.label}: element {i}", value, limits.MAX_ID_CHARS)
        for i, value in enumerate(tensor.strings)
    ]


def _per_row(tensor: Tensor, rows: int, noun: str) -> None:
    """Check that ``tensor`` holds one value for every row or one for all."""
    if tensor.shape[0] not in (1, rows):
        raise BadRequest(
            f"{tensor.label}: {tensor.shape[0]} values for {rows} {noun}; send 1 or {rows}"
        )


def _ks(tensor: Tensor | None, rows: int, noun: str, *, default_k: int, max_k: int) -> list[int]:
    """Each row's k: the input's (one for all rows, or one per row), else ``default_k``."""
    if tensor is None:
        return [default_k] * rows
    _per_row(tensor, rows, noun)
    for k_value in tensor.ints:
        if not 1 <= k_value <= max_k:
            raise BadRequest(f"{tensor.label}: {k_value} is outside 1..{max_k}")
    return list(tensor.ints) * (rows if tensor.shape[0] == 1 else 1)


def _request_id(request_id: str | None) -> str | None:
    if request_id is not None:
        limits.check_text("id", request_id, limits.MAX_REQUEST_ID_CHARS)
    return request_id


def _build(
    tensors: Sequence[Tensor],
    context: dict[str, str],
    request_id: str | None,
    *,
    default_k: int,
    max_k: int,
    max_batch: int,
) -> list[RecommendRequest]:
    """One RecommendRequest per ``user_id`` row, after the checks that span inputs."""
    by_name = {t.name: t for t in tensors}
    user = by_name.get(INPUT_USER_ID)
    rows = _rows(user, INPUT_USER_ID, "user ids", max_batch)
    assert user is not None
    user_ids = _ids(user)
    ks = _ks(by_name.get(INPUT_K), rows, "user ids", default_k=default_k, max_k=max_k)
    request_id = _request_id(request_id)
    return [
        RecommendRequest(user_id=u, k=k, context=dict(context), request_id=request_id)
        for u, k in zip(user_ids, ks, strict=True)
    ]


def _build_similar(
    tensors: Sequence[Tensor],
    request_id: str | None,
    *,
    default_k: int,
    max_k: int,
    max_batch: int,
) -> list[SimilarRequest]:
    """One SimilarRequest per ``item_id`` row, after the checks that span inputs."""
    by_name = {t.name: t for t in tensors}
    item = by_name.get(INPUT_ITEM_ID)
    rows = _rows(item, INPUT_ITEM_ID, "item ids", max_batch)
    assert item is not None
    item_ids = _ids(item)
    ks = _ks(by_name.get(INPUT_K), rows, "item ids", default_k=default_k, max_k=max_k)
    user = by_name.get(INPUT_USER_ID)
    users: list[str | None] = [None] * rows
    if user is not None:
        _per_row(user, rows, "item ids")
        given = _ids(user, allow_empty=True)
        users = [u or None for u in given * (rows if user.shape[0] == 1 else 1)]
    request_id = _request_id(request_id)
    return [
        SimilarRequest(item_id=i, k=k, user_id=u, request_id=request_id)
        for i, k, u in zip(item_ids, ks, users, strict=True)
    ]


def _check_outputs(names: Sequence[tuple[str, object, bool]]) -> list[str]:
    """Requested output names (all when none are named), given ``(label, name, classify)``."""
    if not names:
        return list(OUTPUTS)
    out: list[str] = []
    for label, name, classify in names:
        if not isinstance(name, str):
            raise BadRequest(f"{label}: name must be a string, got {_kind(name)}")
        if name not in OUTPUTS:
            raise BadRequest(
                f"{label} ({name}): unknown output; model outputs are {', '.join(OUTPUTS)}"
            )
        if classify:
            raise BadRequest(f"{label} ({name}): the classification extension is not supported")
        if name in out:
            raise BadRequest(f"{label} ({name}): output requested twice")
        out.append(name)
    return out


# --------------------------------------------------------------------------- REST


def split_rest_body(raw: bytes, header_length: int | None = None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and trailing binary data of a REST body.

    ``header_length`` is the ``Inference-Header-Content-Length`` header: tritonclient sends
    inputs as binary data after the JSON by default (``set_data_from_numpy(binary_data=True)``),
    so a server must split the body before :func:`parse_rest_request`.
    """
    if header_length is None:
        header, binary = raw, b""
    else:
        if not 0 <= header_length <= len(raw):
            raise BadRequest(
                f"Inference-Header-Content-Length: {header_length} is outside the body's "
                f"0..{len(raw)} bytes"
            )
        header, binary = raw[:header_length], raw[header_length:]
    limits.check_json_depth(header)
    try:
        body = json.loads(header)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadRequest(f"body: expected a JSON object, got {_kind(body)}")
    return body, bytes(binary)


def _rest_parameters(
    body: Mapping[str, Any], context_keys: Sequence[str] = CONTEXT_PARAMETERS
) -> tuple[dict[str, str], str | None]:
    """Context (the ``context_keys`` parameters) and request id from the body's ``id`` and
    ``parameters``."""
    params = body.get("parameters", {})
    if not isinstance(params, Mapping):
        raise BadRequest(f"parameters: expected a JSON object, got {_kind(params)}")
    context: dict[str, str] = {}
    for key in context_keys:
        if key in params:
            context[key] = limits.context_value(f"parameters[{key!r}]", key, params[key])
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"id: expected a string, got {_kind(request_id)}")
    if not request_id and "id" in params:
        value = params["id"]
        if not isinstance(value, str):
            raise BadRequest(f"parameters['id']: expected a string, got {_kind(value)}")
        request_id = value
    return context, request_id or None


def rest_requested_outputs(body: Mapping[str, Any]) -> list[str]:
    """Output names a REST body asks for, in its order (all outputs when it names none).

    ``binary_data`` output parameters are accepted but answered as JSON, which tritonclient
    decodes as well.
    """
    requested = body.get("outputs")
    if requested is None:
        return list(OUTPUTS)
    if not isinstance(requested, list):
        raise BadRequest(f"outputs: expected a list, got {_kind(requested)}")
    names: list[tuple[str, object, bool]] = []
    for i, output in enumerate(requested):
        if not isinstance(output, Mapping):
            raise BadRequest(f"outputs[{i}]: expected an object, got {_kind(output)}")
        params = output.get("parameters", {})
        if not isinstance(params, Mapping):
            raise BadRequest(f"outputs[{i}]: parameters must be an object")
        names.append((f"outputs[{i}]", output.get("name"), bool(params.get("classification"))))
    return _check_outputs(names)


def parse_rest_request(
    body: Mapping[str, Any],
    *,
    default_k: int = 10,
    max_k: int = 100,
    max_batch: int = DEFAULT_MAX_BATCH,
    binary: bytes = b"",
) -> list[RecommendRequest]:
    """The requests in a v2 REST inference body (one per ``user_id`` row).

    ``binary`` is what followed the JSON header (see :func:`split_rest_body`); inputs with a
    ``binary_data_size`` parameter take their data from it in input order, as Triton does.
    Requested outputs are checked too, so a bad name fails before the graph runs.
    """
    tensors = rest_tensors(body, binary, RECOMMENDER_INPUTS)
    rest_requested_outputs(body)
    context, request_id = _rest_parameters(body)
    return _build(
        tensors, context, request_id, default_k=default_k, max_k=max_k, max_batch=max_batch
    )


def parse_similar_rest_request(
    body: Mapping[str, Any],
    *,
    default_k: int = 10,
    max_k: int = 100,
    max_batch: int = DEFAULT_MAX_BATCH,
    binary: bytes = b"",
) -> list[SimilarRequest]:
    """The ``similar_items`` requests in a v2 REST inference body (one per ``item_id`` row),
    read as :func:`parse_rest_request` reads the recommender's."""
    tensors = rest_tensors(body, binary, SIMILAR_INPUTS)
    rest_requested_outputs(body)
    _, request_id = _rest_parameters(body, ())
    return _build_similar(
        tensors, request_id, default_k=default_k, max_k=max_k, max_batch=max_batch
    )


# --------------------------------------------------------------------------- responses


#: An answer of one of the graph's models.
Answer = RecommendResponse | SimilarResponse


def _matrix(responses: Sequence[Answer], k: int | None) -> tuple[int, list[str], list[float]]:
    """Columns, then row-major ids and scores padded with ``""``/``0.0`` (cut at ``k``)."""
    width = k if k is not None else max((len(r.items) for r in responses), default=0)
    ids: list[str] = []
    scores: list[float] = []
    for response in responses:
        items = response.items[:width]
        ids.extend(i.item_id for i in items)
        scores.extend(i.score for i in items)
        pad = width - len(items)
        ids.extend([""] * pad)
        scores.extend([0.0] * pad)
    return width, ids, scores


_Provenance = list[str] | dict[str, Any] | bool | str


def _provenance(response: Answer) -> dict[str, _Provenance]:
    """How one answer was made, in the order the response parameters list it."""
    out: dict[str, _Provenance] = {
        "fallbacks": response.fallbacks,
        "stages": response.stages,
        "model_versions": response.model_versions,
    }
    if isinstance(response, SimilarResponse):
        out["known_item"] = response.known_item
    else:
        out["known_user"] = response.known_user
        out["assignment"] = response.assignment
        out["score_source"] = response.score_source
    return out


def _response_parameters(responses: Sequence[Answer]) -> dict[str, str | bool]:
    """Graph provenance per response: lists comma-joined, objects as JSON, flags as bools;
    JSON lists (one entry per row) when N != 1."""
    rows = [_provenance(r) for r in responses]
    if len(rows) == 1:
        return {key: _parameter(value) for key, value in rows[0].items()}
    keys = rows[0] if rows else {}
    return {key: json.dumps([row[key] for row in rows], sort_keys=True) for key in keys}


def _parameter(value: _Provenance) -> str | bool:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, list):
        return ",".join(value)
    return json.dumps(value, sort_keys=True)


def _output_names(outputs: Sequence[str] | None) -> list[str]:
    if outputs is None:
        return list(OUTPUTS)
    return _check_outputs([(f"outputs[{i}]", name, False) for i, name in enumerate(outputs)])


def rest_response(
    name: str,
    version: str,
    responses: Sequence[Answer],
    request_id: str | None,
    *,
    k: int | None = None,
    outputs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The v2 REST response body, outputs as JSON ``data`` (row-major, flat).

    ``k`` fixes the column count (pass the largest requested k so a short answer still has
    shape ``[N, k]``); by default it is the longest answer. ``outputs`` is
    :func:`rest_requested_outputs` of the request. Scores are rounded to float32 so REST and
    gRPC answers agree exactly.
    """
    width, ids, scores = _matrix(responses, k)
    shape = [len(responses), width]
    data: dict[str, list[Any]] = {
        OUTPUT_ITEM_IDS: ids,
        OUTPUT_SCORES: np.asarray(scores, dtype=np.float32).tolist(),
    }
    body: dict[str, Any] = {"model_name": name, "model_version": version}
    if request_id:
        body["id"] = request_id
    body["parameters"] = _response_parameters(responses)
    body["outputs"] = [
        {"name": out, "datatype": _OUTPUT_TYPES[out], "shape": shape, "data": data[out]}
        for out in _output_names(outputs)
    ]
    return body


# --------------------------------------------------------------------------- gRPC


def _grpc_string_param(label: str, param: Any) -> str:
    kind = param.WhichOneof("parameter_choice")
    if kind != "string_param":
        raise BadRequest(f"{label}: expected a string, got {kind}")
    return str(param.string_param)


def _grpc_context_param(label: str, param: Any) -> str | int:
    """A context parameter: a string, or a whole number (an age) as ``int64_param``."""
    if param.WhichOneof("parameter_choice") == "int64_param":
        return int(param.int64_param)
    return _grpc_string_param(label, param)


def _grpc_outputs(request: service_pb2.ModelInferRequest) -> list[str]:
    return _check_outputs(
        [
            (f"outputs[{i}]", out.name, "classification" in out.parameters)
            for i, out in enumerate(request.outputs)
        ]
    )


def parse_grpc_request(
    request: service_pb2.ModelInferRequest,
    *,
    default_k: int = 10,
    max_k: int = 100,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> list[RecommendRequest]:
    """The requests in a gRPC ``ModelInferRequest`` (one per ``user_id`` row).

    Data may come as ``raw_input_contents`` (one entry per input, what tritonclient sends) or
    typed ``contents``; requested outputs are checked here so a bad name fails early.
    """
    tensors = grpc_tensors(request, RECOMMENDER_INPUTS)
    _grpc_outputs(request)
    context, request_id = _grpc_parameters(request, CONTEXT_PARAMETERS)
    return _build(
        tensors, context, request_id, default_k=default_k, max_k=max_k, max_batch=max_batch
    )


def parse_similar_grpc_request(
    request: service_pb2.ModelInferRequest,
    *,
    default_k: int = 10,
    max_k: int = 100,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> list[SimilarRequest]:
    """The ``similar_items`` requests in a gRPC ``ModelInferRequest`` (one per ``item_id``
    row), read as :func:`parse_grpc_request` reads the recommender's."""
    tensors = grpc_tensors(request, SIMILAR_INPUTS)
    _grpc_outputs(request)
    _, request_id = _grpc_parameters(request, ())
    return _build_similar(
        tensors, request_id, default_k=default_k, max_k=max_k, max_batch=max_batch
    )


def _grpc_parameters(
    request: service_pb2.ModelInferRequest, context_keys: Sequence[str]
) -> tuple[dict[str, str], str | None]:
    """Context (the ``context_keys`` parameters) and request id, as :func:`_rest_parameters`."""
    params = request.parameters
    context = {
        key: limits.context_value(
            f"parameters[{key!r}]", key, _grpc_context_param(f"parameters[{key!r}]", params[key])
        )
        for key in context_keys
        if key in params
    }
    request_id: str | None = request.id or None
    if request_id is None and "id" in params:
        request_id = _grpc_string_param("parameters['id']", params["id"]) or None
    return context, request_id


def _serialize_bytes(values: Iterable[str]) -> bytes:
    """Triton's BYTES raw form (as :mod:`~inference.protocol.oip_tensors` reads it), what
    ``as_numpy`` decodes."""
    parts: list[bytes] = []
    for value in values:
        encoded = value.encode("utf-8")
        parts.append(struct.pack("<I", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def grpc_response(
    name: str,
    version: str,
    responses: Sequence[Answer],
    request: service_pb2.ModelInferRequest | None = None,
    *,
    k: int | None = None,
) -> service_pb2.ModelInferResponse:
    """The gRPC ``ModelInferResponse``, tensors in ``raw_output_contents`` as Triton sends them.

    ``request`` supplies the id and the requested outputs (all when it names none); ``k`` as
    in :func:`rest_response`. tritonclient pairs ``raw_output_contents[i]`` with
    ``outputs[i]``, so both are written in the same order.
    """
    names = list(OUTPUTS) if request is None else _grpc_outputs(request)
    width, ids, scores = _matrix(responses, k)
    raw = {
        OUTPUT_ITEM_IDS: _serialize_bytes(ids),
        OUTPUT_SCORES: np.asarray(scores, dtype="<f4").tobytes(),
    }
    response = service_pb2.ModelInferResponse(model_name=name, model_version=version)
    if request is not None and request.id:
        response.id = request.id
    for key, value in _response_parameters(responses).items():
        if isinstance(value, bool):
            response.parameters[key].bool_param = value
        else:
            response.parameters[key].string_param = value
    for out in names:
        response.outputs.add(name=out, datatype=_OUTPUT_TYPES[out], shape=[len(responses), width])
        response.raw_output_contents.append(raw[out])
    return response
