"""Open Inference Protocol (KServe v2) codec for the recommendation graph served as one model.

The graph is exposed as a model (``recommender`` by default) so that ``tritonclient`` and other
v2 clients call it unchanged. This module only translates: OIP messages (REST JSON bodies and
gRPC ``service_pb2`` messages) to :class:`RecommendRequest` lists and
:class:`RecommendResponse` lists back to OIP. It does no I/O, so both front ends share one set
of checks and messages, and tests can drive it with tritonclient's own encoders and decoders.

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
  ``assignment`` (JSON objects as strings), ``known_user`` (bool). For ``N > 1`` each is a JSON
  string holding one entry per row, since v2 parameter values cannot be lists.

Every malformed request raises :class:`~inference.errors.BadRequest` whose message starts with
the offending field (``inputs[1] (k): 0 is outside 1..100``), answered as :func:`error_body`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from tritonclient.grpc import service_pb2

from inference.errors import BadRequest
from inference.graph.types import RecommendRequest, RecommendResponse
from inference.protocol import limits

__all__ = [
    "CONTEXT_PARAMETERS",
    "DEFAULT_MAX_BATCH",
    "INPUT_K",
    "INPUT_USER_ID",
    "MODEL_NAME",
    "OUTPUTS",
    "OUTPUT_ITEM_IDS",
    "OUTPUT_SCORES",
    "PLATFORM",
    "error_body",
    "grpc_model_metadata",
    "grpc_response",
    "model_metadata",
    "parse_grpc_request",
    "parse_rest_request",
    "rest_requested_outputs",
    "rest_response",
    "split_rest_body",
]

MODEL_NAME: Final = "recommender"
PLATFORM: Final = "cascade_graph"
DEFAULT_MAX_BATCH: Final = 64
INPUT_USER_ID: Final = "user_id"
INPUT_K: Final = "k"
OUTPUT_ITEM_IDS: Final = "item_ids"
OUTPUT_SCORES: Final = "scores"
OUTPUTS: Final = (OUTPUT_ITEM_IDS, OUTPUT_SCORES)
CONTEXT_PARAMETERS: Final = ("age", "gender", "occupation")

# Accepted wire datatypes per input; the first is the one model metadata advertises.
_INPUT_TYPES: Final[dict[str, tuple[str, ...]]] = {
    INPUT_USER_ID: ("BYTES", "INT64"),
    INPUT_K: ("INT64", "INT32"),
}
_OUTPUT_TYPES: Final[dict[str, str]] = {OUTPUT_ITEM_IDS: "BYTES", OUTPUT_SCORES: "FP32"}
_INT_BOUNDS: Final[dict[str, tuple[int, int]]] = {
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
}
_INT_LAYOUT: Final[dict[str, str]] = {"INT32": "<i4", "INT64": "<i8"}
_TYPED_FIELD: Final[dict[str, str]] = {
    "BYTES": "bytes_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
}


def error_body(message: str) -> dict[str, str]:
    """The v2 error shape (``{"error": message}``) that tritonclient turns into its exception."""
    return {"error": message}


# --------------------------------------------------------------------------- model metadata


def _batch_dim(max_batch: int) -> int:
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    return -1 if max_batch > 1 else 1


def _tensor_metadata(max_batch: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    batch = _batch_dim(max_batch)
    inputs = [
        {"name": name, "datatype": types[0], "shape": [batch]}
        for name, types in _INPUT_TYPES.items()
    ]
    outputs = [
        {"name": name, "datatype": datatype, "shape": [batch, -1]}
        for name, datatype in _OUTPUT_TYPES.items()
    ]
    return inputs, outputs


def model_metadata(
    name: str = MODEL_NAME, *, max_batch: int = DEFAULT_MAX_BATCH, version: str = "1"
) -> dict[str, Any]:
    """REST model metadata. Only the preferred datatypes are listed (``user_id`` BYTES, ``k``
    INT64); INT64 ids, INT32 k and ``[N, 1]`` shapes are accepted too. The batch dim is ``-1``,
    or ``1`` when ``max_batch`` is 1, the only place metadata can express the limit."""
    inputs, outputs = _tensor_metadata(max_batch)
    return {
        "name": name,
        "versions": [version],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
    }


def grpc_model_metadata(
    name: str = MODEL_NAME, *, max_batch: int = DEFAULT_MAX_BATCH, version: str = "1"
) -> service_pb2.ModelMetadataResponse:
    """:func:`model_metadata` as the gRPC ``ModelMetadataResponse``."""
    inputs, outputs = _tensor_metadata(max_batch)
    Tensor = service_pb2.ModelMetadataResponse.TensorMetadata
    return service_pb2.ModelMetadataResponse(
        name=name,
        versions=[version],
        platform=PLATFORM,
        inputs=[Tensor(**t) for t in inputs],
        outputs=[Tensor(**t) for t in outputs],
    )


#: OIP datatypes -> Triton model-config data types.
_CONFIG_TYPES: Final = {
    "BYTES": "TYPE_STRING",
    "INT64": "TYPE_INT64",
    "INT32": "TYPE_INT32",
    "FP32": "TYPE_FP32",
}


def model_config(name: str = MODEL_NAME, *, max_batch: int = DEFAULT_MAX_BATCH) -> dict[str, Any]:
    """Triton's model configuration (``GET /v2/models/{name}/config``) for the graph: what
    tritonclient's ``get_model_config`` reads; dims leave out the batch dimension."""
    inputs, outputs = _tensor_metadata(max_batch)

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
        "input": entries(inputs),
        "output": entries(outputs),
    }


def grpc_model_config(
    name: str = MODEL_NAME, *, max_batch: int = DEFAULT_MAX_BATCH
) -> service_pb2.ModelConfigResponse:
    """:func:`model_config` as the gRPC ``ModelConfigResponse``."""
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    config = json_format.ParseDict(
        model_config(name, max_batch=max_batch), model_config_pb2.ModelConfig()
    )
    return service_pb2.ModelConfigResponse(config=config)


# --------------------------------------------------------------------------- request decoding


@dataclass(frozen=True)
class _Tensor:
    """One decoded input: BYTES as ``strings`` (UTF-8 checked), integers as ``ints``."""

    label: str
    name: str
    datatype: str
    shape: tuple[int, ...]
    strings: tuple[str, ...] = ()
    ints: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return len(self.strings) if self.datatype == "BYTES" else len(self.ints)


def _fmt(dims: Iterable[object]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _kind(value: object) -> str:
    return type(value).__name__


def _label(index: int, name: str) -> str:
    return f"inputs[{index}] ({name})"


def _check_header(
    index: int, name: object, datatype: object, shape: object, seen: dict[str, int]
) -> tuple[str, str, tuple[int, ...]]:
    """Name, datatype and shape of ``inputs[index]``, checked before its data is decoded."""
    if not isinstance(name, str):
        raise BadRequest(f"inputs[{index}]: name must be a string, got {_kind(name)}")
    label = _label(index, name)
    if name not in _INPUT_TYPES:
        raise BadRequest(f"{label}: unknown input; model inputs are {', '.join(_INPUT_TYPES)}")
    if name in seen:
        raise BadRequest(f"{label}: duplicate input, also sent as inputs[{seen[name]}]")
    seen[name] = index
    allowed = _INPUT_TYPES[name]
    if datatype not in allowed:
        raise BadRequest(f"{label}: datatype {datatype} is not {' or '.join(sorted(allowed))}")
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise BadRequest(f"{label}: shape must be a list of integers")
    dims = tuple(int(d) for d in shape)
    if not (len(dims) == 1 or (len(dims) == 2 and dims[1] == 1)) or dims[0] < 0:
        raise BadRequest(f"{label}: shape {_fmt(dims)} is not [N] or [N, 1]")
    return label, str(datatype), dims


def _utf8(label: str, position: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{label}: element {position} is not valid UTF-8") from None


def _split_bytes(label: str, raw: bytes) -> list[bytes]:
    """Triton's BYTES wire form: per element a 4-byte little-endian length, then the bytes."""
    out: list[bytes] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise BadRequest(
                f"{label}: raw BYTES data ends inside the length prefix of element {len(out)}"
            )
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > len(raw):
            raise BadRequest(
                f"{label}: raw BYTES element {len(out)} declares {length} bytes, "
                f"{len(raw) - pos} remain"
            )
        out.append(bytes(raw[pos : pos + length]))
        pos += length
    return out


def _from_raw(label: str, name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> _Tensor:
    """An input sent as raw bytes (gRPC ``raw_input_contents`` or REST binary data)."""
    if datatype == "BYTES":
        strings = tuple(_utf8(label, i, b) for i, b in enumerate(_split_bytes(label, raw)))
        return _sized(_Tensor(label, name, datatype, shape, strings=strings))
    width = np.dtype(_INT_LAYOUT[datatype]).itemsize
    if len(raw) % width:
        raise BadRequest(
            f"{label}: raw {datatype} data has {len(raw)} bytes, not a multiple of {width}"
        )
    ints = tuple(int(v) for v in np.frombuffer(raw, dtype=_INT_LAYOUT[datatype]).tolist())
    return _sized(_Tensor(label, name, datatype, shape, ints=ints))


def _sized(tensor: _Tensor) -> _Tensor:
    """The tensor, once its element count matches its shape."""
    expected = math.prod(tensor.shape)
    if tensor.size != expected:
        raise BadRequest(
            f"{tensor.label}: shape {_fmt(tensor.shape)} does not match {tensor.size} data elements"
        )
    return tensor


def _flatten(data: list[Any]) -> Iterator[Any]:
    """Row-major leaves of possibly nested JSON lists (the v2 spec allows both forms)."""
    stack: list[Iterator[Any]] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            yield item
        else:
            stack.pop()


def _from_json(label: str, name: str, datatype: str, shape: tuple[int, ...], data: Any) -> _Tensor:
    """An input sent as JSON ``data``: strings for BYTES, integers for INT32/INT64."""
    if not isinstance(data, list):
        raise BadRequest(f"{label}: data must be a list, got {_kind(data)}")
    values = list(_flatten(data))
    if datatype == "BYTES":
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise BadRequest(f"{label}: element {i} is a {_kind(value)}, not a string")
        return _sized(_Tensor(label, name, datatype, shape, strings=tuple(values)))
    low, high = _INT_BOUNDS[datatype]
    for i, value in enumerate(values):
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest(f"{label}: element {i} is a {_kind(value)}, not an integer")
        if not low <= value <= high:
            raise BadRequest(f"{label}: element {i} ({value}) does not fit {datatype}")
    return _sized(_Tensor(label, name, datatype, shape, ints=tuple(values)))


def _build(
    tensors: Sequence[_Tensor],
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
    if user is None:
        raise BadRequest(f"inputs: missing required input {INPUT_USER_ID!r}")
    rows = user.shape[0]
    if rows < 1:
        raise BadRequest(f"{user.label}: batch size is 0; send 1..{max_batch} user ids")
    if rows > max_batch:
        raise BadRequest(f"{user.label}: batch size {rows} exceeds max_batch {max_batch}")
    if user.datatype == "BYTES":
        user_ids = [
            limits.check_text(f"{user.label}: element {i}", value, limits.MAX_ID_CHARS)
            for i, value in enumerate(user.strings)
        ]
    else:
        user_ids = [str(v) for v in user.ints]
    k_tensor = by_name.get(INPUT_K)
    if k_tensor is None:
        ks = [default_k] * rows
    else:
        if k_tensor.shape[0] not in (1, rows):
            raise BadRequest(
                f"{k_tensor.label}: {k_tensor.shape[0]} values for {rows} user ids; "
                f"send 1 or {rows}"
            )
        for k_value in k_tensor.ints:
            if not 1 <= k_value <= max_k:
                raise BadRequest(f"{k_tensor.label}: {k_value} is outside 1..{max_k}")
        ks = list(k_tensor.ints) * (rows if k_tensor.shape[0] == 1 else 1)
    if request_id is not None:
        limits.check_text("id", request_id, limits.MAX_REQUEST_ID_CHARS)
    return [
        RecommendRequest(user_id=u, k=k, context=dict(context), request_id=request_id)
        for u, k in zip(user_ids, ks, strict=True)
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


def _rest_parameters(body: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """Context and request id from the body's ``id`` and ``parameters``."""
    params = body.get("parameters", {})
    if not isinstance(params, Mapping):
        raise BadRequest(f"parameters: expected a JSON object, got {_kind(params)}")
    context: dict[str, str] = {}
    for key in CONTEXT_PARAMETERS:
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
    if not isinstance(body, Mapping):
        raise BadRequest(f"body: expected a JSON object, got {_kind(body)}")
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise BadRequest(f"inputs: expected a list of tensors, got {_kind(inputs)}")
    seen: dict[str, int] = {}
    tensors: list[_Tensor] = []
    offset = 0
    for index, raw in enumerate(inputs):
        if not isinstance(raw, Mapping):
            raise BadRequest(f"inputs[{index}]: expected an object, got {_kind(raw)}")
        label, datatype, shape = _check_header(
            index, raw.get("name"), raw.get("datatype"), raw.get("shape"), seen
        )
        name = str(raw["name"])
        params = raw.get("parameters", {})
        if not isinstance(params, Mapping):
            raise BadRequest(f"{label}: parameters must be an object, got {_kind(params)}")
        if "shared_memory_region" in params:
            raise BadRequest(f"{label}: shared memory is not supported; send the data inline")
        size = params.get("binary_data_size")
        if size is None:
            if "data" not in raw:
                raise BadRequest(f"{label}: data is missing")
            tensors.append(_from_json(label, name, datatype, shape, raw["data"]))
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"{label}: binary_data_size must be a non-negative integer")
        if "data" in raw:
            raise BadRequest(f"{label}: both data and binary_data_size are set")
        if offset + size > len(binary):
            raise BadRequest(
                f"{label}: binary_data_size {size} runs past the {len(binary)} bytes of "
                "binary data after the JSON header"
            )
        chunk = binary[offset : offset + size]
        offset += size
        tensors.append(_from_raw(label, name, datatype, shape, chunk))
    if offset != len(binary):
        raise BadRequest(
            f"body: {len(binary)} bytes of binary data follow the JSON header, "
            f"inputs declare {offset}"
        )
    rest_requested_outputs(body)
    context, request_id = _rest_parameters(body)
    return _build(
        tensors, context, request_id, default_k=default_k, max_k=max_k, max_batch=max_batch
    )


# --------------------------------------------------------------------------- responses


def _matrix(
    responses: Sequence[RecommendResponse], k: int | None
) -> tuple[int, list[str], list[float]]:
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


def _response_parameters(responses: Sequence[RecommendResponse]) -> dict[str, str | bool]:
    """Graph provenance per response; JSON lists (one entry per row) when N != 1."""
    if len(responses) == 1:
        (r,) = responses
        return {
            "fallbacks": ",".join(r.fallbacks),
            "stages": ",".join(r.stages),
            "model_versions": json.dumps(r.model_versions, sort_keys=True),
            "known_user": r.known_user,
            "assignment": json.dumps(r.assignment, sort_keys=True),
        }
    return {
        "fallbacks": json.dumps([r.fallbacks for r in responses]),
        "stages": json.dumps([r.stages for r in responses]),
        "model_versions": json.dumps([r.model_versions for r in responses], sort_keys=True),
        "known_user": json.dumps([r.known_user for r in responses]),
        "assignment": json.dumps([r.assignment for r in responses], sort_keys=True),
    }


def _output_names(outputs: Sequence[str] | None) -> list[str]:
    if outputs is None:
        return list(OUTPUTS)
    return _check_outputs([(f"outputs[{i}]", name, False) for i, name in enumerate(outputs)])


def rest_response(
    name: str,
    version: str,
    responses: Sequence[RecommendResponse],
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


def _typed_contents(label: str, datatype: str, tensor: Any) -> tuple[str, ...] | tuple[int, ...]:
    """Values from ``InferTensorContents``: only the field matching the datatype counts."""
    field = _TYPED_FIELD[datatype]
    values = getattr(tensor.contents, field)
    if not values and tensor.contents.ByteSize():
        raise BadRequest(f"{label}: {datatype} data must be in contents.{field}")
    if datatype == "BYTES":
        return tuple(_utf8(label, i, bytes(b)) for i, b in enumerate(values))
    return tuple(int(v) for v in values)


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
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input or none"
        )
    seen: dict[str, int] = {}
    tensors: list[_Tensor] = []
    for index, tensor in enumerate(request.inputs):
        label, datatype, shape = _check_header(
            index, tensor.name, tensor.datatype, list(tensor.shape), seen
        )
        if "shared_memory_region" in tensor.parameters:
            raise BadRequest(f"{label}: shared memory is not supported; send the data inline")
        if raw:
            if tensor.contents.ByteSize():
                raise BadRequest(f"{label}: both contents and raw_input_contents are set")
            tensors.append(_from_raw(label, tensor.name, datatype, shape, bytes(raw[index])))
            continue
        values = _typed_contents(label, datatype, tensor)
        if datatype == "BYTES":
            strings = tuple(str(v) for v in values)
            tensors.append(_sized(_Tensor(label, tensor.name, datatype, shape, strings=strings)))
        else:
            ints = tuple(int(v) for v in values)
            tensors.append(_sized(_Tensor(label, tensor.name, datatype, shape, ints=ints)))
    _grpc_outputs(request)
    params = request.parameters
    context = {
        key: limits.context_value(
            f"parameters[{key!r}]", key, _grpc_context_param(f"parameters[{key!r}]", params[key])
        )
        for key in CONTEXT_PARAMETERS
        if key in params
    }
    request_id: str | None = request.id or None
    if request_id is None and "id" in params:
        request_id = _grpc_string_param("parameters['id']", params["id"]) or None
    return _build(
        tensors, context, request_id, default_k=default_k, max_k=max_k, max_batch=max_batch
    )


def _serialize_bytes(values: Iterable[str]) -> bytes:
    """Triton's BYTES raw form (see :func:`_split_bytes`), what ``as_numpy`` decodes."""
    parts: list[bytes] = []
    for value in values:
        encoded = value.encode("utf-8")
        parts.append(struct.pack("<I", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def grpc_response(
    name: str,
    version: str,
    responses: Sequence[RecommendResponse],
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
