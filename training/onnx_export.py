"""Export a torch model to one self-contained ONNX file, and prove the file computes the same thing.

The served artifact is the ONNX file, not the torch module, so everything Triton and the
benchmarks rely on is checked here, once, at build time:

* names, dtypes and the dynamic ``batch`` axis come from the :class:`~training.signature.Signature`
  (the same object that writes ``config.pbtxt``), and the exported graph is verified against it;
* the module is exported in eval mode under ``torch.no_grad()``, and the graph is rejected if it
  still holds training-only or random ops, so two runs on the same input give the same output;
* the file is written atomically (temp file in the same directory + ``os.replace``), so a crashed
  build never leaves a half-written model where the repository builder would pick it up;
* :func:`check_parity` runs torch and onnxruntime on the same feeds and fails loudly on drift.

The dynamo (``torch.export``) exporter is preferred: it is torch's maintained path and its
onnxscript optimiser folds BatchNorm into the preceding Gemm and drops Dropout. When it cannot
capture a module (data-dependent control flow, an op without a translation), the TorchScript
exporter is tried once and the fallback is logged, since the two produce different graphs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch

from contract.signature import DType, Signature, TensorSpec
from training.errors import ExportError
from training.quiet import captured

logger = logging.getLogger("cascade.training")

#: Opset the serving stack (Triton's onnxruntime backend) is pinned to.
OPSET = 18
#: Name of the leading dynamic axis on every input and output; Triton batches along it.
BATCH_AXIS = "batch"

Feed = Mapping[str, npt.NDArray[Any]]

_ONNX_ELEM_TYPE: dict[DType, int] = {
    "FP32": onnx.TensorProto.FLOAT,
    "INT64": onnx.TensorProto.INT64,
}
#: Ops that only make sense while training or that draw random numbers; an eval-mode export of
#: a ranking model must not contain any of them, or its scores would not be reproducible.
_NONDETERMINISTIC_OPS = frozenset(
    {
        "Dropout",
        "Bernoulli",
        "Multinomial",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
    }
)
#: Loggers the exporters report progress on; raised to ERROR while exporting.
_NOISY_LOGGERS = ("torch", "onnxscript", "onnx_ir")


def export_onnx(
    module: torch.nn.Module,
    signature: Signature,
    path: Path,
    example: Feed,
) -> None:
    """Export ``module`` to ``path`` as one opset-18 ONNX file with a dynamic ``batch`` axis.

    ``module.forward`` takes the signature's inputs positionally, in order, and returns one tensor
    or a tuple in the signature's output order. ``example`` is a feed (any batch size) used to
    trace the module; it is checked against the signature first, so a wrong example fails with a
    clear message rather than inside the exporter.

    The module is put in eval mode for the export and its previous per-submodule train/eval flags
    are restored afterwards, so exporting a checkpoint mid-training has no side effects.

    Raises:
        ExportError: the example does not match the signature, the module fails on it, both
            exporters fail, or the exported graph does not match the signature / is not valid.
    """
    path = Path(path)
    try:
        signature.check_feed(dict(example))
    except ValueError as e:
        raise ExportError(f"example feed does not match the signature: {e}") from e
    args = _example_args(signature, example)

    with _eval_mode(module), torch.no_grad():
        # Run eagerly first: a module that fails on its own example is a caller bug, and falling
        # back to the other exporter would only hide it behind a second, worse message.
        try:
            eager = _as_tuple(module(*args))
        except Exception as e:
            raise ExportError(f"module failed on the example feed: {e}") from e
        if len(eager) != len(signature.outputs):
            raise ExportError(
                f"module returned {len(eager)} output(s), the signature declares "
                f"{len(signature.outputs)}: {[o.name for o in signature.outputs]}"
            )

        try:
            proto = _export_dynamo(module, signature, args)
        except Exception as dynamo_error:
            logger.warning(
                "dynamo ONNX exporter failed for %s (%s); falling back to the TorchScript exporter",
                type(module).__name__,
                _first_line(dynamo_error),
            )
            try:
                proto = _export_torchscript(module, signature, args)
            except Exception as e:
                raise ExportError(
                    f"ONNX export of {type(module).__name__} failed with both exporters; "
                    f"dynamo: {_first_line(dynamo_error)}; torchscript: {_first_line(e)}"
                ) from e

    _conform_to_signature(proto, signature)
    _reject_training_ops(proto)
    save_atomic(proto, path)
    logger.debug(
        "exported %s to %s (%d nodes, opset %d)",
        type(module).__name__,
        path,
        len(proto.graph.node),
        OPSET,
    )


def check_parity(
    module: torch.nn.Module,
    path: Path,
    feeds: Feed,
    atol: float = 1e-4,
) -> float:
    """Run torch and onnxruntime on ``feeds``; return the max abs error over all outputs.

    Call it with several batch sizes (at least 1 and a large one): a graph that baked the example
    batch size into a Reshape or Expand passes at the example's size and fails only at others.

    Raises:
        ExportError: a feed is missing, an output's shape differs, NaN/inf appear on one side
            only, or the max abs error of an output exceeds ``atol`` (the message names it).
    """
    sess = session(path)
    input_names = [i.name for i in sess.get_inputs()]
    output_names = [o.name for o in sess.get_outputs()]
    missing = [name for name in input_names if name not in feeds]
    if missing:
        raise ExportError(f"parity feed is missing input(s) {missing} of {path}")
    ort_feed = {name: np.ascontiguousarray(feeds[name]) for name in input_names}
    try:
        ort_out = sess.run(output_names, ort_feed)
    except Exception as e:
        raise ExportError(f"onnxruntime failed on {path}: {e}") from e

    with _eval_mode(module), torch.no_grad():
        try:
            raw = module(*(torch.from_numpy(ort_feed[n]) for n in input_names))
        except Exception as e:
            raise ExportError(f"module failed on the parity feed: {e}") from e
        torch_out = _as_tuple(raw)
    if len(torch_out) != len(output_names):
        raise ExportError(
            f"module returned {len(torch_out)} output(s), {path} has {len(output_names)}"
        )

    worst = 0.0
    for name, expected_t, got in zip(output_names, torch_out, ort_out, strict=True):
        expected = expected_t.detach().cpu().numpy()
        got = np.asarray(got)
        if expected.shape != got.shape:
            raise ExportError(
                f"output {name!r} has shape {got.shape} in onnxruntime, {expected.shape} in torch"
            )
        err = _max_abs_error(expected, got)
        if not err <= atol:  # also catches NaN
            raise ExportError(
                f"output {name!r} differs between torch and onnxruntime: max abs error "
                f"{err:.3g} > atol {atol:.3g} (batch {got.shape[0] if got.ndim else 1})"
            )
        worst = max(worst, err)
    return worst


def session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """Open ``path`` on the CPU provider with full graph optimisation and quiet logging.

    ``threads`` pins ``intra_op_num_threads`` (benchmarks compare 1 vs N); ``None`` keeps
    onnxruntime's default of one thread per physical core. Inter-op parallelism stays at 1:
    ranking graphs are one chain of MatMuls with nothing to run side by side.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: the build log should not carry ORT's warnings
    opts.inter_op_num_threads = 1
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load {path}: {e}") from e


# --------------------------------------------------------------------------------------------
# Export internals


def _example_args(signature: Signature, example: Feed) -> tuple[torch.Tensor, ...]:
    """Tensors in signature order, with at least 2 rows.

    ``torch.export`` specialises size-0/1 dims, so a batch-1 example could bake the batch size in;
    repeating the rows to 2 keeps the batch axis symbolic without changing what is traced.
    """
    arrays = [np.asarray(example[spec.name]) for spec in signature.inputs]
    batches = {a.shape[0] if a.ndim else 0 for a in arrays}
    if len(batches) != 1:
        raise ExportError(f"example inputs have different batch sizes: {sorted(batches)}")
    (batch,) = batches
    if batch == 0:
        raise ExportError("example feed has an empty batch")
    if batch < 2:
        arrays = [np.repeat(a, 2, axis=0) for a in arrays]
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def _export_dynamo(
    module: torch.nn.Module, signature: Signature, args: tuple[torch.Tensor, ...]
) -> onnx.ModelProto:
    batch = torch.export.Dim(BATCH_AXIS)
    dynamic_shapes = tuple(
        {
            0: batch,
            **{
                axis + 1: torch.export.Dim(_identifier(f"{spec.name}_{axis + 1}"))
                for axis, dim in enumerate(spec.dims)
                if dim == -1
            },
        }
        for spec in signature.inputs
    )
    with captured("exporter", _NOISY_LOGGERS):
        program = torch.onnx.export(
            module,
            args,
            None,
            dynamo=True,
            input_names=[s.name for s in signature.inputs],
            output_names=[s.name for s in signature.outputs],
            opset_version=OPSET,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            optimize=True,
            verbose=False,
            report=False,
        )
        if program is None:  # pragma: no cover - dynamo=True always returns a program
            raise RuntimeError("torch.onnx.export returned no program")
        proto: onnx.ModelProto = program.model_proto
    return proto


def _export_torchscript(
    module: torch.nn.Module, signature: Signature, args: tuple[torch.Tensor, ...]
) -> onnx.ModelProto:
    dynamic_axes: dict[str, dict[int, str]] = {}
    for spec in (*signature.inputs, *signature.outputs):
        axes = {0: BATCH_AXIS}
        axes.update({i + 1: f"{spec.name}_{i + 1}" for i, d in enumerate(spec.dims) if d == -1})
        dynamic_axes[spec.name] = axes
    with tempfile.TemporaryDirectory(prefix="cascade-onnx-") as tmp:
        target = Path(tmp) / "model.onnx"
        with captured("exporter", _NOISY_LOGGERS):
            torch.onnx.export(
                module,
                args,
                str(target),
                dynamo=False,
                input_names=[s.name for s in signature.inputs],
                output_names=[s.name for s in signature.outputs],
                opset_version=OPSET,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                training=torch.onnx.TrainingMode.EVAL,
                verbose=False,
            )
        return onnx.load(str(target))


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode for the duration; restores each submodule's own flag, not just the root's."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _conform_to_signature(proto: onnx.ModelProto, signature: Signature) -> None:
    """Check names, dtypes and ranks against the signature; name the batch axis and fixed dims.

    Exporters name output dims after internal symbols (``Divn_dim_1``, ``s0``) or leave them
    blank. Triton and the client only need the batch axis to be symbolic and the rest to be what
    the signature says, so symbolic dims are rewritten to match it; a *concrete* dim that
    disagrees with the signature is a real mismatch and fails.
    """
    graph = proto.graph
    initializers = {init.name for init in graph.initializer}
    graph_inputs = [i for i in graph.input if i.name not in initializers]
    for kind, specs, values in (
        ("input", signature.inputs, graph_inputs),
        ("output", signature.outputs, list(graph.output)),
    ):
        got_names = [v.name for v in values]
        want_names = [s.name for s in specs]
        if got_names != want_names:
            raise ExportError(f"exported graph {kind}s are {got_names}, signature has {want_names}")
        for spec, value in zip(specs, values, strict=True):
            _conform_value(kind, spec, value)


def _conform_value(kind: str, spec: TensorSpec, value: onnx.ValueInfoProto) -> None:
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type != _ONNX_ELEM_TYPE[spec.dtype]:
        got = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
        raise ExportError(
            f"{kind} {spec.name!r} is {got} in the graph, signature says {spec.dtype}"
        )
    if not tensor_type.HasField("shape"):
        tensor_type.shape.SetInParent()
    dims = tensor_type.shape.dim
    if len(dims) == 0:
        for _ in range(1 + len(spec.dims)):
            dims.add()
    if len(dims) != 1 + len(spec.dims):
        raise ExportError(
            f"{kind} {spec.name!r} has rank {len(dims)} in the graph, signature says "
            f"{1 + len(spec.dims)} (batch + {spec.dims})"
        )
    if dims[0].HasField("dim_value"):
        raise ExportError(
            f"{kind} {spec.name!r} has a fixed batch size {dims[0].dim_value}; the module "
            "probably reshapes with a hard-coded batch size"
        )
    dims[0].dim_param = BATCH_AXIS
    for axis, (want, dim) in enumerate(zip(spec.dims, dims[1:], strict=True), start=1):
        if dim.HasField("dim_value"):
            if want != -1 and dim.dim_value != want:
                raise ExportError(
                    f"{kind} {spec.name!r} axis {axis} is {dim.dim_value} in the graph, "
                    f"signature says {want}"
                )
        elif want != -1:
            dim.dim_value = want  # replaces an exporter-internal symbolic name
        elif not dim.dim_param:
            dim.dim_param = f"{spec.name}_{axis}"


def _reject_training_ops(proto: onnx.ModelProto) -> None:
    """Fail on ops that make outputs vary between runs or only belong in a training graph."""
    bad: list[str] = []
    for graph in _graphs(proto.graph):
        for node in graph.node:
            if node.op_type in _NONDETERMINISTIC_OPS:
                bad.append(f"{node.op_type} ({node.name})")
            elif node.op_type == "BatchNormalization" and any(
                a.name == "training_mode" and a.i for a in node.attribute
            ):
                bad.append(f"BatchNormalization in training mode ({node.name})")
    if bad:
        raise ExportError(f"exported graph contains training-only/random ops: {', '.join(bad)}")


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph (If/Loop bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def save_atomic(proto: onnx.ModelProto, path: Path) -> None:
    """Validate and write ``proto`` to ``path`` via a temp file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            onnx.save_model(proto, str(tmp), save_as_external_data=False)
        except ValueError as e:  # protobuf refuses > 2 GiB
            raise ExportError(f"cannot serialise {path.name} as one file: {e}") from e
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as e:
            raise ExportError(f"exported model {path.name} fails the ONNX checker: {e}") from e
        tmp.chmod(0o644)  # mkstemp makes it 0600; the serving container may run as another user
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Small helpers


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, Sequence) and all(isinstance(t, torch.Tensor) for t in out):
        return tuple(out)
    raise ExportError(
        f"module must return a tensor or a tuple of tensors, got {type(out).__name__}"
    )


def _max_abs_error(expected: npt.NDArray[Any], got: npt.NDArray[Any]) -> float:
    if expected.size == 0:
        return 0.0
    if np.issubdtype(expected.dtype, np.floating) or np.issubdtype(got.dtype, np.floating):
        a = expected.astype(np.float64)
        b = got.astype(np.float64)
        same_nonfinite = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
        with np.errstate(invalid="ignore"):  # inf - inf; masked out just below
            diff = np.where(same_nonfinite, 0.0, np.abs(a - b))
        return float(np.max(diff)) if not np.isnan(diff).any() else float("nan")
    return float(np.max(np.abs(expected.astype(np.int64) - got.astype(np.int64))))


def _identifier(name: str) -> str:
    """``torch.export.Dim`` names must be Python identifiers."""
    cleaned = re.sub(r"\W", "_", name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"d_{cleaned}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(e: BaseException) -> str:
    """The gist of an exception for a one-line log: root cause, first line, no terminal colours.

    The dynamo exporter wraps the real reason (e.g. ``GuardOnDataDependentSymNode``) in a
    ``TorchExportError`` whose first line only says which of its steps failed.
    """
    while e.__cause__ is not None:
        e = e.__cause__
    text = f"{type(e).__name__}: {_ANSI.sub('', str(e)).strip()}"
    return (text.splitlines()[0] if text else type(e).__name__)[:500]
