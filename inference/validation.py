"""Request and model checks shared by every runtime, so Triton and the in-process fallback
reject the same requests with the same messages.

Both runtimes describe a served model by its Triton ``ModelConfig`` (parsed from
``config.pbtxt`` locally, fetched from the server otherwise) and turn it into a
:class:`ModelSpec`. Checking a feed locally before it leaves the process gives the caller a
``BadRequest`` naming the field instead of a server round trip (or, in-process, an opaque
onnxruntime error); checking the spec against the graph's :class:`Signature` at startup turns a
drifted deployment into one readable list of problems.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from tritonclient.grpc import model_config_pb2

from contract.signature import Signature, TensorSpec
from inference.errors import BadRequest

__all__ = [
    "ModelSpec",
    "TensorMeta",
    "check_feed",
    "check_outputs",
    "signature_problems",
    "spec_from_config",
    "wire_dims",
]

# Triton wire datatypes (model metadata / inference protocol names) -> numpy dtypes.
_NUMPY: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}


@dataclass(frozen=True)
class TensorMeta:
    """One served tensor as a client sees it.

    ``datatype`` is the Triton wire name (``FP32``, ``INT64``...); ``dims`` are the config's
    ``dims`` (excluding the batch axis when the model batches), i.e. what a request must carry.
    ``model_dims`` is what the backend hands the graph: ``reshape.shape`` when the config has
    one (a per-example scalar is sent as ``[1]`` and reshaped to ``[]``), else ``dims``.
    """

    name: str
    datatype: str
    dims: tuple[int, ...]
    model_dims: tuple[int, ...]

    @property
    def numpy_dtype(self) -> np.dtype[Any] | None:
        """The numpy dtype a request must use; None for types checked by the server only."""
        return _NUMPY.get(self.datatype)


@dataclass(frozen=True)
class ModelSpec:
    """What a runtime needs to validate requests for one model (from its ``ModelConfig``)."""

    name: str
    max_batch_size: int
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]

    @property
    def batching(self) -> bool:
        """Whether requests carry a leading batch axis (Triton: ``max_batch_size`` > 0)."""
        return self.max_batch_size > 0

    def input(self, name: str) -> TensorMeta | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorMeta | None:
        return next((t for t in self.outputs if t.name == name), None)


def _tensor_meta(tensor: Any) -> TensorMeta:
    """A ``ModelInput``/``ModelOutput`` protobuf message as a TensorMeta."""
    datatype = str(model_config_pb2.DataType.Name(tensor.data_type)).removeprefix("TYPE_")
    dims = tuple(int(d) for d in tensor.dims)
    model_dims = tuple(int(d) for d in tensor.reshape.shape) if tensor.HasField("reshape") else dims
    return TensorMeta(tensor.name, datatype, dims, model_dims)


def spec_from_config(config: Any) -> ModelSpec:
    """The spec of a parsed ``model_config_pb2.ModelConfig`` (local file or from the server)."""
    return ModelSpec(
        name=config.name,
        max_batch_size=int(config.max_batch_size),
        inputs=tuple(_tensor_meta(t) for t in config.input),
        outputs=tuple(_tensor_meta(t) for t in config.output),
    )


def _dims_match(want: Sequence[int], got: Sequence[int]) -> bool:
    """Whether a shape fits declared dims, where -1 accepts any size."""
    return len(want) == len(got) and all(w in (-1, g) for w, g in zip(want, got, strict=True))


def _fmt(dims: Sequence[object]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def check_feed(spec: ModelSpec, inputs: Mapping[str, npt.NDArray[np.generic]]) -> int:
    """Raise ``BadRequest`` naming the first bad field of ``inputs``; return the batch size.

    Checks, in order: unknown input names, missing inputs, numpy arrays only, dtype, rank and
    per-example dims, one batch size across inputs, and ``1 <= batch <= max_batch_size``. For
    a model that does not batch (``max_batch_size`` 0) the dims are the whole shape and the
    returned batch size is 0.
    """
    model = spec.name
    known = [t.name for t in spec.inputs]
    for name in inputs:
        if name not in known:
            raise BadRequest(f"unknown input {name!r} (model inputs: {known})", model=model)
    batch: tuple[str, int] | None = None
    for tensor in spec.inputs:
        if tensor.name not in inputs:
            raise BadRequest(f"input {tensor.name!r} is missing", model=model)
        array = inputs[tensor.name]
        if not isinstance(array, np.ndarray):
            raise BadRequest(
                f"input {tensor.name!r} is a {type(array).__name__}, not a numpy array",
                model=model,
            )
        want_dtype = tensor.numpy_dtype
        if want_dtype is not None and array.dtype != want_dtype:
            raise BadRequest(
                f"input {tensor.name!r} has dtype {array.dtype}, model expects {tensor.datatype} "
                f"({want_dtype})",
                model=model,
            )
        if not spec.batching:
            if not _dims_match(tensor.dims, array.shape):
                raise BadRequest(
                    f"input {tensor.name!r} has shape {_fmt(array.shape)}, "
                    f"model expects {_fmt(tensor.dims)}",
                    model=model,
                )
            continue
        if array.ndim == 0:
            raise BadRequest(
                f"input {tensor.name!r} has no batch axis (shape []), "
                f"model expects {_fmt(('batch', *tensor.dims))}",
                model=model,
            )
        if not _dims_match(tensor.dims, array.shape[1:]):
            raise BadRequest(
                f"input {tensor.name!r} has dims {_fmt(array.shape[1:])}, "
                f"model expects {_fmt(tensor.dims)} (shape {_fmt(array.shape)} includes the "
                "batch axis)",
                model=model,
            )
        size = int(array.shape[0])
        if batch is not None and size != batch[1]:
            raise BadRequest(
                f"input {tensor.name!r} has batch size {size}, input {batch[0]!r} has {batch[1]}",
                model=model,
            )
        batch = (tensor.name, size)
    if batch is None:
        return 0
    size = batch[1]
    if size < 1:
        raise BadRequest("batch size is 0; send at least one example", model=model)
    if size > spec.max_batch_size:
        raise BadRequest(
            f"batch size {size} exceeds max_batch_size {spec.max_batch_size}", model=model
        )
    return size


def check_outputs(spec: ModelSpec, outputs: Sequence[str] | None) -> list[str]:
    """The output names to request (all when None); ``BadRequest`` names an unknown one."""
    known = [t.name for t in spec.outputs]
    if outputs is None:
        return known
    if isinstance(outputs, str):
        raise BadRequest(
            f"outputs must be a sequence of names, got the string {outputs!r}", model=spec.name
        )
    for name in outputs:
        if name not in known:
            raise BadRequest(f"unknown output {name!r} (model outputs: {known})", model=spec.name)
    return list(outputs)


def wire_dims(tensor: TensorSpec) -> tuple[int, ...]:
    """The config ``dims`` a batching model declares for a signature tensor.

    A per-example scalar (``dims == ()``) travels as ``[1]`` (and is reshaped to ``[]`` for the
    graph), the convention ``training.repository`` writes into ``config.pbtxt``.
    """
    return tensor.dims or (1,)


def _tensor_problems(kind: str, served: TensorMeta | None, want: TensorSpec) -> list[str]:
    if served is None:
        return [f"{kind} {want.name!r} is not served by the model"]
    problems = []
    if served.datatype != want.dtype:
        problems.append(
            f"{kind} {want.name!r} has dtype {served.datatype}, graph expects {want.dtype}"
        )
    expected = wire_dims(want)
    if not _dims_match(served.dims, expected):
        problems.append(
            f"{kind} {want.name!r} has dims {_fmt(served.dims)}, graph expects {_fmt(expected)}"
        )
    return problems


def signature_problems(spec: ModelSpec, signature: Signature) -> list[str]:
    """Every way the served model differs from the signature the graph calls it with.

    Problems are phrased from the served model's side ("input 'history' has dims [10], graph
    expects [20]") and do not include the model name. A served input the signature lacks is a
    problem (the graph would never send it); an extra served output is not (it is ignored).
    A served ``-1`` dim accepts the graph's size.
    """
    problems: list[str] = []
    if not spec.batching:
        problems.append("max_batch_size is 0, but the graph sends batches")
    for want in signature.inputs:
        problems.extend(_tensor_problems("input", spec.input(want.name), want))
    expected_inputs = {t.name for t in signature.inputs}
    for served in spec.inputs:
        if served.name not in expected_inputs:
            problems.append(f"input {served.name!r} is required by the model, graph never sends it")
    for want in signature.outputs:
        problems.extend(_tensor_problems("output", spec.output(want.name), want))
    return problems
