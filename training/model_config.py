"""Triton ``config.pbtxt`` for the canonical repository: built, parsed and checked.

Pure functions over Triton's own model-config protobuf (shipped in tritonclient), so a config
that Cascade writes is one Triton can parse, and a config that disagrees with its ONNX graph
(names, dtypes, dims, a static batch axis) is caught before Triton ever sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import onnx
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2

from contract.errors import RepositoryError
from contract.model_config import (
    MODEL_FILENAME,
    PLATFORM,
    validate_model_name,
)
from contract.signature import Signature, TensorSpec

# ONNX element types -> Triton DataType names; only FP32/INT64 are written, the rest make the
# mismatch message readable.
_ONNX_TO_TRITON: Final[dict[int, str]] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.STRING: "TYPE_STRING",
}


# --------------------------------------------------------------------------------------------
# config.pbtxt: pure building/parsing/checking
# --------------------------------------------------------------------------------------------


def _empty_parameters() -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class ModelConfigSpec:
    """Everything that goes into one model's ``config.pbtxt`` (platform ``onnxruntime_onnx``).

    ``max_batch_size`` > 0 means the signature dims exclude the batch axis (Triton's
    convention, shared with :class:`~training.signature.TensorSpec`); with 0 the dims are the
    full tensor shape and dynamic batching is not emitted, since Triton cannot batch such a
    model. ``serve_latest`` becomes ``version_policy { latest { num_versions } }`` and bounds
    what retention may delete. ``parameters`` are backend parameters such as onnxruntime's
    ``intra_op_thread_count``.
    """

    name: str
    signature: Signature
    max_batch_size: int = 1024
    dynamic_batching: bool = True
    preferred_batch_sizes: tuple[int, ...] = (64, 256)
    # A lone request waits this long for company; 500 µs measured +0.5 ms p50 at batch 1 here.
    max_queue_delay_microseconds: int = 100
    instance_count: int = 1
    serve_latest: int = 2
    parameters: Mapping[str, str] = field(default_factory=_empty_parameters)

    def __post_init__(self) -> None:
        validate_model_name(self.name)
        if self.max_batch_size < 0:
            raise RepositoryError(f"{self.name}: max_batch_size must be >= 0")
        if self.instance_count < 1 or self.serve_latest < 1:
            raise RepositoryError(f"{self.name}: instance_count and serve_latest must be >= 1")
        if self.max_queue_delay_microseconds < 0:
            raise RepositoryError(f"{self.name}: max_queue_delay_microseconds must be >= 0")
        bad = [b for b in self.preferred_batch_sizes if b < 1 or b > self.max_batch_size]
        if self.batching and bad:
            raise RepositoryError(
                f"{self.name}: preferred_batch_sizes {bad} not in 1..{self.max_batch_size}"
            )
        _check_signature(self.name, self.signature)

    @property
    def batching(self) -> bool:
        """Whether the config enables Triton's dynamic batcher."""
        return self.dynamic_batching and self.max_batch_size > 0


def _check_signature(model: str, signature: Signature) -> None:
    """Refuse signatures Triton would reject at load time, naming the tensor."""
    if not signature.inputs or not signature.outputs:
        raise RepositoryError(f"{model}: a signature needs at least one input and one output")
    names = [t.name for t in (*signature.inputs, *signature.outputs)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RepositoryError(f"{model}: tensor names {dupes} are used more than once")
    for tensor in (*signature.inputs, *signature.outputs):
        if any(d == 0 or d < -1 for d in tensor.dims):
            raise RepositoryError(
                f"{model}: tensor {tensor.name!r} dims {tensor.dims} must be -1 or positive"
            )


def _tensor_config(tensor: TensorSpec, batching: bool, message: Any) -> None:
    """Fill a ModelInput/ModelOutput message from one TensorSpec.

    A per-example scalar (``dims == ()``) of a batching model is written as ``dims: [1]`` with
    ``reshape { shape: [] }`` - the form Triton requires for an ONNX tensor of shape [batch].
    """
    message.name = tensor.name
    message.data_type = model_config_pb2.DataType.Value(tensor.triton_dtype)
    if tensor.dims or not batching:
        message.dims.extend(tensor.dims)
    else:
        message.dims.append(1)
        message.reshape.SetInParent()


def build_config(spec: ModelConfigSpec) -> Any:
    """Build the ``model_config_pb2.ModelConfig`` message for ``spec``.

    Building the protobuf (rather than formatting text) guarantees the result parses and uses
    Triton's own field names and enum values.
    """
    config = model_config_pb2.ModelConfig()
    config.name = spec.name
    config.platform = PLATFORM
    config.max_batch_size = spec.max_batch_size
    config.default_model_filename = MODEL_FILENAME
    config.version_policy.latest.num_versions = spec.serve_latest
    batch_axis = spec.max_batch_size > 0
    for tensor in spec.signature.inputs:
        _tensor_config(tensor, batch_axis, config.input.add())
    for tensor in spec.signature.outputs:
        _tensor_config(tensor, batch_axis, config.output.add())
    if spec.batching:
        config.dynamic_batching.preferred_batch_size.extend(spec.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = spec.max_queue_delay_microseconds
    group = config.instance_group.add()
    group.count = spec.instance_count
    group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
    for key in sorted(spec.parameters):
        config.parameters[key].string_value = spec.parameters[key]
    return config


def render_config(spec: ModelConfigSpec) -> str:
    """The ``config.pbtxt`` text for ``spec``."""
    text: str = text_format.MessageToString(build_config(spec))
    return text


def _config_dims(tensor: Any) -> list[int]:
    """The shape Triton hands the backend: ``reshape.shape`` when present, else ``dims``."""
    if tensor.HasField("reshape"):
        return list(tensor.reshape.shape)
    return list(tensor.dims)


def _onnx_dims(value: onnx.ValueInfoProto) -> list[int] | None:
    """ONNX tensor dims with symbolic/unknown ones as -1; None when the rank is unknown."""
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]


def _onnx_dtype(value: onnx.ValueInfoProto) -> str:
    elem = value.type.tensor_type.elem_type
    return _ONNX_TO_TRITON.get(elem, f"ONNX {onnx.TensorProto.DataType.Name(elem)}")


def _check_tensor(kind: str, tensor: Any, value: onnx.ValueInfoProto, batching: bool) -> None:
    """Compare one config tensor with its ONNX value-info; raise naming the tensor."""
    label = f"{kind} {tensor.name!r}"
    want_dtype = model_config_pb2.DataType.Name(tensor.data_type)
    got_dtype = _onnx_dtype(value)
    if want_dtype != got_dtype:
        raise RepositoryError(f"{label}: config dtype {want_dtype}, ONNX dtype {got_dtype}")
    dims = _onnx_dims(value)
    if dims is None:
        raise RepositoryError(f"{label}: the ONNX graph declares no shape")
    if batching:
        if not dims or dims[0] != -1:
            raise RepositoryError(
                f"{label}: ONNX batch axis is {dims[:1]}, must be dynamic when max_batch_size > 0"
            )
        dims = dims[1:]
    want_dims = _config_dims(tensor)
    if dims != want_dims:
        raise RepositoryError(f"{label}: config dims {want_dims}, ONNX dims {dims}")


def _check_names(kind: str, config_names: Sequence[str], onnx_names: Sequence[str]) -> None:
    for name in config_names:
        if name not in onnx_names:
            raise RepositoryError(
                f"{kind} {name!r} is in config.pbtxt but not in the ONNX graph "
                f"(ONNX {kind}s: {list(onnx_names)})"
            )
    for name in onnx_names:
        if name not in config_names:
            raise RepositoryError(f"{kind} {name!r} is in the ONNX graph but not in config.pbtxt")


def _load_onnx(onnx_path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(onnx_path), load_external_data=False)
    except (OSError, DecodeError) as exc:
        raise RepositoryError(f"{onnx_path}: cannot load ONNX model: {exc}") from exc


def check_config_matches_onnx(config: Any, onnx_path: Path) -> None:
    """Raise RepositoryError naming the first tensor where config and ONNX graph disagree.

    Triton only notices a drifted config when it loads the model (or, for dims, on the first
    request), so this runs before anything is published. Names must be equal as sets (order is
    free); dtypes must be equal; dims are compared after dropping the ONNX batch axis when
    ``max_batch_size`` > 0, with symbolic ONNX dims equal to -1 only. That batch axis must be
    dynamic, or Triton could not form batches.
    """
    graph = _load_onnx(onnx_path).graph
    initializers = {init.name for init in graph.initializer}
    onnx_inputs = {v.name: v for v in graph.input if v.name not in initializers}
    onnx_outputs = {v.name: v for v in graph.output}
    batching = config.max_batch_size > 0
    for kind, tensors, values in (
        ("input", config.input, onnx_inputs),
        ("output", config.output, onnx_outputs),
    ):
        _check_names(kind, [t.name for t in tensors], list(values))
        for tensor in tensors:
            _check_tensor(kind, tensor, values[tensor.name], batching)


# --------------------------------------------------------------------------------------------
# Version selection and retention: pure
# --------------------------------------------------------------------------------------------
