"""Input tensors of Open Inference Protocol requests, decoded from the wire and checked.

Both front ends meet the same tensors in different clothes: REST as JSON ``data`` or as
binary data after the JSON header, gRPC as ``raw_input_contents`` or typed ``contents``.
This module turns any of them into :class:`Tensor` s, checking each input's name, datatype,
shape and data against the model's inputs (:data:`Inputs`); what the values mean is
:mod:`~inference.protocol.oip`'s business. Pure, no I/O: every mistake is a
:class:`~inference.errors.BadRequest` whose message starts with the input
(``inputs[1] (k): ...``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from tritonclient.grpc import service_pb2

from inference.errors import BadRequest

#: A model's inputs: accepted wire datatypes per input, the first the one metadata advertises.
Inputs = Mapping[str, tuple[str, ...]]

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


@dataclass(frozen=True)
class Tensor:
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


def type_name(value: object) -> str:
    return type(value).__name__


def _label(index: int, name: str) -> str:
    return f"inputs[{index}] ({name})"


def _check_header(
    index: int,
    name: object,
    datatype: object,
    shape: object,
    seen: dict[str, int],
    model_inputs: Inputs,
) -> tuple[str, str, tuple[int, ...]]:
    """Name, datatype and shape of ``inputs[index]``, checked before its data is decoded."""
    if not isinstance(name, str):
        raise BadRequest(f"inputs[{index}]: name must be a string, got {type_name(name)}")
    label = _label(index, name)
    if name not in model_inputs:
        raise BadRequest(f"{label}: unknown input; model inputs are {', '.join(model_inputs)}")
    if name in seen:
        raise BadRequest(f"{label}: duplicate input, also sent as inputs[{seen[name]}]")
    seen[name] = index
    allowed = model_inputs[name]
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


def _from_raw(label: str, name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> Tensor:
    """An input sent as raw bytes (gRPC ``raw_input_contents`` or REST binary data)."""
    if datatype == "BYTES":
        strings = tuple(_utf8(label, i, b) for i, b in enumerate(_split_bytes(label, raw)))
        return _sized(Tensor(label, name, datatype, shape, strings=strings))
    width = np.dtype(_INT_LAYOUT[datatype]).itemsize
    if len(raw) % width:
        raise BadRequest(
            f"{label}: raw {datatype} data has {len(raw)} bytes, not a multiple of {width}"
        )
    ints = tuple(int(v) for v in np.frombuffer(raw, dtype=_INT_LAYOUT[datatype]).tolist())
    return _sized(Tensor(label, name, datatype, shape, ints=ints))


def _sized(tensor: Tensor) -> Tensor:
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


def _from_json(label: str, name: str, datatype: str, shape: tuple[int, ...], data: Any) -> Tensor:
    """An input sent as JSON ``data``: strings for BYTES, integers for INT32/INT64."""
    if not isinstance(data, list):
        raise BadRequest(f"{label}: data must be a list, got {type_name(data)}")
    values = list(_flatten(data))
    if datatype == "BYTES":
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise BadRequest(f"{label}: element {i} is a {type_name(value)}, not a string")
        return _sized(Tensor(label, name, datatype, shape, strings=tuple(values)))
    low, high = _INT_BOUNDS[datatype]
    for i, value in enumerate(values):
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest(f"{label}: element {i} is a {type_name(value)}, not an integer")
        if not low <= value <= high:
            raise BadRequest(f"{label}: element {i} ({value}) does not fit {datatype}")
    return _sized(Tensor(label, name, datatype, shape, ints=tuple(values)))


def _typed_contents(label: str, datatype: str, tensor: Any) -> tuple[str, ...] | tuple[int, ...]:
    """Values from ``InferTensorContents``: only the field matching the datatype counts."""
    field = _TYPED_FIELD[datatype]
    values = getattr(tensor.contents, field)
    if not values and tensor.contents.ByteSize():
        raise BadRequest(f"{label}: {datatype} data must be in contents.{field}")
    if datatype == "BYTES":
        return tuple(_utf8(label, i, bytes(b)) for i, b in enumerate(values))
    return tuple(int(v) for v in values)


def rest_tensors(body: Mapping[str, Any], binary: bytes, model_inputs: Inputs) -> list[Tensor]:
    """The decoded inputs of a REST body, checked against ``model_inputs``."""
    if not isinstance(body, Mapping):
        raise BadRequest(f"body: expected a JSON object, got {type_name(body)}")
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise BadRequest(f"inputs: expected a list of tensors, got {type_name(inputs)}")
    seen: dict[str, int] = {}
    tensors: list[Tensor] = []
    offset = 0
    for index, raw in enumerate(inputs):
        if not isinstance(raw, Mapping):
            raise BadRequest(f"inputs[{index}]: expected an object, got {type_name(raw)}")
        label, datatype, shape = _check_header(
            index, raw.get("name"), raw.get("datatype"), raw.get("shape"), seen, model_inputs
        )
        name = str(raw["name"])
        params = raw.get("parameters", {})
        if not isinstance(params, Mapping):
            raise BadRequest(f"{label}: parameters must be an object, got {type_name(params)}")
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
    return tensors


def grpc_tensors(request: service_pb2.ModelInferRequest, model_inputs: Inputs) -> list[Tensor]:
    """The decoded inputs of a ``ModelInferRequest``, checked against ``model_inputs``."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input or none"
        )
    seen: dict[str, int] = {}
    tensors: list[Tensor] = []
    for index, tensor in enumerate(request.inputs):
        label, datatype, shape = _check_header(
            index, tensor.name, tensor.datatype, list(tensor.shape), seen, model_inputs
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
            tensors.append(_sized(Tensor(label, tensor.name, datatype, shape, strings=strings)))
        else:
            ints = tuple(int(v) for v in values)
            tensors.append(_sized(Tensor(label, tensor.name, datatype, shape, ints=ints)))
    return tensors
