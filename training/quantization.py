"""Static INT8 quantization of exported rankers, the gate that decides whether INT8 ships, and a
latency probe to compare the two.

Settings, chosen by measurement on this project's CPU target (x86-64 with AVX-512 VNNI,
onnxruntime 1.32, ``CPUExecutionProvider``) rather than taken from defaults:

* **QDQ format, QUInt8 activations, QInt8 per-channel weights.** ORT fuses
  ``DQ -> Gemm -> Q`` into ``QGemm`` (VNNI ``u8 x s8`` kernels). Asymmetric activations also let
  the quantizer fold ``Relu`` into the following QuantizeLinear's range, so an MLP becomes one
  unbroken ``Q -> QGemm -> QGemm -> QGemm`` chain (the last with float output, see below).
  Symmetric QInt8 activations keep each Relu as ``DQ -> Relu -> Q`` between the layers and
  measured 15-25% slower at batch 1000; asymmetric QInt8 measured within noise of QUInt8, so
  the type ORT recommends for x86 wins.
* **Default op types: MatMul, Gemm, Relu.** Listing Relu lets the quantizer fold it into the
  u8 range. Quantizing *everything* (ORT's default) also turns Mul/Concat/Sigmoid into QLinear
  ops: slower at batch 1000 on a ranker with embeddings and less accurate (correlation to FP32
  0.9964 vs 0.9995), and a quantized Sigmoid rounds the score itself to 256 levels.
  **Gather stays float:** int8 embedding tables are 4x smaller, but ORT does not fuse
  ``DQ -> Gather``, so every call dequantizes the whole table: batch-1 latency went from 0.024 to
  0.18 ms on a 20k x 32 table, and batch 1000 got slower too. Opt in via ``op_types`` only when
  model size matters more than latency.
* **Only the layers a network names are quantized** (``layers``: weight-name prefixes, from
  :data:`training.networks.QUANTIZED_LAYERS`). Score heads stay FP32, so scores keep FP32's
  resolution: a quantized head rounds the score to 256 levels (91 distinct scores out of 1,000
  candidates on the DCN ranker, ties inside the top 10). Removing the head's output Q/DQ pair
  after the fact instead was measured to bias the DCN's logits by -0.8 (ORT fuses the
  remaining graph differently), so the head is simply left out.
* **Extra options left at their defaults.** ``DedicatedQDQPair`` and
  ``QDQKeepRemovableActivations=True`` measured within noise on MLP rankers;
  ``ActivationSymmetric`` is the slow case above; ``MatMulConstBOnly`` is *ignored* by the QDQ
  quantizer in onnxruntime 1.32 (a two-tower ``u @ i`` MatMul was quantized either way).
  ``WeightSymmetric`` stays True (ORT's default; zero-point 0 is what the s8 kernels want).
* **Per-channel weights** (the default) cost nothing measurable at batch 1000 and protect layers
  whose output channels have very different weight ranges; ``per_channel=False`` is a few
  microseconds faster at batch 1.

Measured (p50, ``time_session``, same box, same run) at batch 1000, FP32 -> INT8:

* 256 -> 512 -> 256 -> 1 ReLU MLP: 4.8 -> 1.45 ms with 1 thread (3.3x), 2.47 -> 0.76 ms with 2
  (3.2x).
* the same MLP behind user/item/history embeddings (masked mean, concat, sigmoid): 4.8 -> 2.1 ms
  with 1 thread (2.25x), 2.5 -> 1.14 ms with 2 (2.2x); the float embedding part does not shrink.

Batch 1 is dispatch-bound (0.015-0.03 ms either way) and gains little.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from training.errors import ExportError
from training.onnx_export import session
from training.quiet import captured

logger = logging.getLogger("cascade.training")

Feed = Mapping[str, npt.NDArray[Any]]
CalibrationMethodName = Literal["minmax", "percentile", "entropy"]

#: Op types quantized by default; see the module docstring for the measurements behind it.
DEFAULT_OP_TYPES: tuple[str, ...] = ("MatMul", "Gemm", "Relu")
#: Activation type: QUInt8 (asymmetric) fuses into QGemm chains with Relu folded away.
ACTIVATION_TYPE = QuantType.QUInt8
#: Weight type: QInt8 (symmetric), as the VNNI ``u8 x s8`` kernels want.
WEIGHT_TYPE = QuantType.QInt8

_METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
#: Slack on the gate's comparison so a loss of exactly ``tolerance`` passes despite rounding in
#: ``(fp32 - int8) / fp32`` (e.g. (1.0 - 0.99) / 1.0 == 0.010000000000000009).
_GATE_EPS = 1e-12


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration: Iterable[Feed],
    *,
    per_channel: bool = True,
    op_types: Sequence[str] | None = None,
    method: CalibrationMethodName = "minmax",
    layers: Sequence[str] | None = None,
) -> None:
    """Statically quantize ``fp32_path`` to ``int8_path`` (QDQ, u8 activations, s8 weights).

    ``calibration`` yields feeds (input name -> batch array) that look like serving traffic; it is
    consumed once, so a generator is fine. Activation ranges come from it, so calibrating on the
    wrong distribution silently produces a bad model; that is what :func:`int8_gate` is for.

    The model is first run through ORT's ``quant_pre_process`` (symbolic shape inference and
    graph cleanup, so the quantizer sees every tensor's shape), then ``quantize_static``. The
    result is checked (ONNX checker, loads in onnxruntime, contains QDQ nodes) before it is
    moved into place atomically.

    ``layers``, when given, limits quantization to the MatMul/Gemm nodes whose weight
    initializer name starts with one of these prefixes (torch parameter names survive the
    export, e.g. ``deep.0.weight``); every other MatMul/Gemm stays FP32.

    Raises:
        ExportError: the FP32 model is missing, the calibration set is empty or does not fit the
            model, nothing was quantized, or ORT's quantizer failed (chained as the cause).
        ValueError: ``method`` is not one of minmax/percentile/entropy, or ``op_types`` is empty.
    """
    fp32_path = Path(fp32_path)
    int8_path = Path(int8_path)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    if not fp32_path.is_file():
        raise ExportError(f"FP32 model {fp32_path} does not exist")
    ops = list(DEFAULT_OP_TYPES if op_types is None else op_types)
    if not ops:
        raise ValueError("op_types must name at least one op type (or be None for the default)")

    reader = _FeedReader(calibration)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{int8_path.name}.", suffix=".tmp", dir=int8_path.parent
    )
    os.close(fd)
    tmp_out = Path(tmp_name)
    try:
        with tempfile.TemporaryDirectory(prefix="cascade-quant-") as work:
            pre = Path(work) / "preprocessed.onnx"
            try:
                with captured("quantizer", ("onnxruntime",), _QUANTIZER_PATH):
                    _pre_process(fp32_path, pre)
                    exclude = [] if layers is None else _nodes_outside(pre, tuple(layers))
                    quantize_static(
                        str(pre),
                        str(tmp_out),
                        reader,
                        quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=ops,
                        per_channel=per_channel,
                        reduce_range=False,  # VNNI accumulates u8 x s8 without saturation
                        activation_type=ACTIVATION_TYPE,
                        weight_type=WEIGHT_TYPE,
                        calibrate_method=_METHODS[method],
                        use_external_data_format=False,
                        nodes_to_exclude=exclude,
                    )
            except Exception as e:
                if reader.error is not None:  # our own message about a malformed batch
                    raise reader.error  # noqa: B904 - already chained to its cause
                if reader.count == 0:
                    raise ExportError(
                        "calibration set is empty: nothing to take ranges from"
                    ) from e
                raise ExportError(
                    f"INT8 quantization of {fp32_path} failed ({type(e).__name__}): {e}"
                ) from e
        if reader.count == 0:
            raise ExportError("calibration set is empty: nothing to take ranges from")
        _finalize_quantized(tmp_out, ops)
        tmp_out.chmod(0o644)  # mkstemp makes it 0600; the serving container may be another user
        os.replace(tmp_out, int8_path)
    finally:
        tmp_out.unlink(missing_ok=True)
    logger.debug(
        "quantized %s -> %s (%s calibration, %d batches, op types %s, per-channel %s)",
        fp32_path.name,
        int8_path,
        method,
        reader.count,
        ",".join(ops),
        per_channel,
    )


@dataclass(frozen=True)
class GateResult:
    """The INT8-vs-FP32 decision and everything needed to explain it in a build log."""

    metric: str
    fp32: float
    int8: float
    rel_delta: float  # (fp32 - int8) / |fp32|: a loss is positive, an improvement negative
    tolerance: float
    passed: bool
    shipped: Literal["int8", "fp32"]
    reason: str
    agreement: float | None = None  # correlation of INT8's outputs with FP32's


#: Where ORT's quantizer lives; it logs through the root logger.
_QUANTIZER_PATH = "onnxruntime/quantization"

#: Least correlation between INT8 and FP32 outputs for INT8 to count as the same model.
MIN_AGREEMENT = 0.99


#: The CPU features onnxruntime's INT8 kernels use, best first: which one a machine has
#: changes INT8 arithmetic (VNNI's dot products accumulate without AVX2's intermediate
#: saturation), so the INT8 figures, and at the margin the gate's decision, are per machine.
INT8_INSTRUCTIONS = ("avx512_vnni", "avx_vnni", "avx512bw", "avx2", "neon")


def machine() -> dict[str, str]:
    """What the gate ran on: the architecture, the best INT8 instruction set, onnxruntime."""
    import platform

    import onnxruntime

    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass  # not Linux: the architecture alone is recorded
    best = next((f for f in INT8_INSTRUCTIONS if f in flags), "unknown")
    return {
        "arch": platform.machine(),
        "int8_instructions": best,
        "onnxruntime": onnxruntime.__version__,
    }


def agreement(fp32: npt.NDArray[Any], int8: npt.NDArray[Any]) -> float:
    """Pearson correlation of two models' outputs on the same inputs (1.0 when identical)."""
    a = np.asarray(fp32, dtype=np.float64).ravel()
    b = np.asarray(int8, dtype=np.float64).ravel()
    if np.array_equal(a, b):
        return 1.0
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def int8_gate(
    fp32: float,
    int8: float,
    tolerance: float = 0.01,
    metric: str = "ndcg10",
    *,
    agreement: float | None = None,
    min_agreement: float = MIN_AGREEMENT,
) -> GateResult:
    """Ship INT8 only if it loses at most ``tolerance`` (relative) of the FP32 metric.

    ``agreement`` is the correlation of INT8's outputs with FP32's on the same inputs. Below
    ``min_agreement`` the gate fails whatever the metric says: a badly calibrated model is a
    *different* model, and on a small evaluation set a different model can score as well or
    better by chance (seen: +30% NDCG@10 from a model calibrated on inputs 1000x too large).

    The metric is "higher is better". ``rel_delta = (fp32 - int8) / |fp32|``: the absolute value
    only matters for negative metrics, where it keeps "worse" positive. An INT8 improvement
    passes. A loss of exactly ``tolerance`` passes.

    ``fp32 == 0``: there is no relative scale, so INT8 passes when it is not below zero either
    (``rel_delta`` 0.0) and fails otherwise (``rel_delta`` inf). A NaN or infinite metric fails
    the gate (``rel_delta`` NaN), because an evaluation that broke proves nothing about INT8.

    Raises:
        ValueError: ``tolerance`` is negative or not finite.
    """
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    tol = f"{tolerance:.1%}"
    head = f"int8 {metric} {_num(int8)}"
    if not (math.isfinite(fp32) and math.isfinite(int8)):
        rel_delta = math.nan
        passed = False
        reason = f"{head} vs fp32 {_num(fp32)}: a metric is not finite, so the gate cannot pass"
    elif fp32 == 0:
        rel_delta = 0.0 if int8 >= 0 else math.inf
        passed = int8 >= 0
        reason = (
            f"{head} is not below fp32 {_num(fp32)} (no relative scale at zero)"
            if passed
            else f"{head} is below fp32 {_num(fp32)} (no relative scale at zero)"
        )
    else:
        rel_delta = (fp32 - int8) / abs(fp32)
        passed = rel_delta <= tolerance + _GATE_EPS
        if agreement is not None and not agreement >= min_agreement:
            passed = False
            reason = (
                f"{head} vs fp32 {_num(fp32)}, but its outputs correlate only "
                f"{agreement:.3f} with fp32's (below {min_agreement}): not the same model"
            )
        elif rel_delta <= 0:
            reason = f"{head} is not below fp32 {_num(fp32)} ({-rel_delta:+.2%})"
        elif passed:
            reason = f"{head} is within {tol} of fp32 {_num(fp32)} ({-rel_delta:+.2%})"
        else:
            reason = f"{head} lost {rel_delta:.1%} vs fp32 {_num(fp32)}, above the {tol} tolerance"
    shipped: Literal["int8", "fp32"] = "int8" if passed else "fp32"
    reason += f": shipping {shipped}"
    return GateResult(
        metric=metric,
        fp32=fp32,
        int8=int8,
        rel_delta=rel_delta,
        tolerance=tolerance,
        passed=passed,
        shipped=shipped,
        reason=reason,
        agreement=agreement,
    )


def time_session(
    path: Path,
    feed: Feed,
    repeats: int = 100,
    warmup: int = 10,
    *,
    threads: int | None = 1,
) -> dict[str, float]:
    """Latency of one ``run`` on ``feed``: ``p50_ms``, ``p90_ms``, ``mean_ms``, ``min_ms``.

    Single-threaded by default so FP32-vs-INT8 comparisons measure the kernels, not how many
    cores the benchmark box happened to have free; pass ``threads`` (or None for ORT's default)
    to measure the serving configuration. Warmup runs are discarded: the first runs pay for
    allocator growth and kernel prepacking. ``batch`` and ``threads`` (0 = ORT default) are
    echoed in the result so a printed row is self-describing.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    sess = session(Path(path), threads=threads)
    names = [i.name for i in sess.get_inputs()]
    run_feed = {name: np.ascontiguousarray(feed[name]) for name in names}
    for _ in range(warmup):
        sess.run(None, run_feed)
    times = np.empty(repeats, dtype=np.float64)
    for i in range(repeats):
        start = time.perf_counter()
        sess.run(None, run_feed)
        times[i] = time.perf_counter() - start
    times *= 1e3
    first = run_feed[names[0]] if names else np.empty(0)
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": float(times.mean()),
        "min_ms": float(times.min()),
        "batch": int(first.shape[0]) if first.ndim else 1,
        "threads": threads or 0,
    }


# --------------------------------------------------------------------------------------------
# Internals


def _pre_process(source: Path, target: Path) -> None:
    """ORT's pre-processing, with symbolic shape inference when it copes with the graph.

    ORT's symbolic shape inference fails on some exporter patterns (an ``Expand`` whose target
    shape it cannot evaluate, as in a masked mean over a padded history); ONNX's own shape
    inference still gives the quantizer what it needs, so fall back to it.
    """
    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
    except Exception as e:  # ORT raises bare TypeError/KeyError from its shape inference
        logger.debug("symbolic shape inference failed (%s); using ONNX shape inference", e)
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)


class _FeedReader(CalibrationDataReader):  # type: ignore[misc]  # ORT ships no stubs
    """Adapts any iterable of feeds to ORT's pull-style ``get_next`` protocol.

    Counts batches (an empty calibration set must fail loudly, not quantize with no ranges) and
    remembers a malformed feed so the caller gets that message rather than ORT's.
    """

    def __init__(self, feeds: Iterable[Feed]) -> None:
        self._it = iter(feeds)
        self.count = 0
        self.error: ExportError | None = None

    def get_next(self) -> dict[str, npt.NDArray[Any]] | None:
        feed = next(self._it, None)
        if feed is None:
            return None
        try:
            batch = {str(k): np.ascontiguousarray(v) for k, v in feed.items()}
        except (AttributeError, TypeError, ValueError) as e:
            self.error = ExportError(f"calibration batch {self.count} is not a feed: {e}")
            raise self.error from e
        self.count += 1
        return batch


def _finalize_quantized(path: Path, quantized_ops: Sequence[str]) -> None:
    """Tidy and verify the quantizer's output in place.

    * ``quant_pre_process`` stamps the model with every opset domain ORT knows (``ai.onnx.ml``
      5, ``ai.onnx.training``, ``com.microsoft.nchwc``...). Unused imports are dropped so an
      older onnxruntime (e.g. the one inside a Triton release) does not reject a domain version
      it does not know.
    * The quantizer reports success even when it quantized nothing; that is an error here.
    """
    model = onnx.load(str(path))
    used = {node.domain for node in model.graph.node} | {"", "ai.onnx"}
    used |= {f.domain for f in model.functions}
    kept = [o for o in model.opset_import if o.domain in used]
    if len(kept) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(kept)
        onnx.save_model(model, str(path))
    try:
        onnx.checker.check_model(str(path))
    except Exception as e:
        raise ExportError(f"quantized model fails the ONNX checker: {e}") from e
    ops = {node.op_type for node in model.graph.node}
    if not {"QuantizeLinear", "DequantizeLinear"} <= ops:
        raise ExportError(
            "quantization inserted no QuantizeLinear/DequantizeLinear pairs; do the op types "
            "match the graph's ops?"
        )
    session(path)  # loads, or raises ExportError naming the file


def _nodes_outside(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    """Names of MatMul/Gemm nodes whose weight is not under one of ``prefixes``.

    The weight is the node's constant operand, possibly behind a Transpose (torch exports a
    bias-free Linear as ``MatMul(x, Transpose(W))``).
    """
    graph = onnx.load(str(path)).graph
    initializers = {i.name for i in graph.initializer}
    transposed = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Transpose"}
    outside = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        weights = [transposed.get(name, name) for name in node.input[1:2]]
        named = [w for w in weights if w in initializers]
        if not any(w.startswith(prefixes) for w in named):
            outside.append(node.name)
    return outside


def _num(x: float) -> str:
    """4 decimals like the usual ranking metrics; significant digits for tiny/huge values."""
    return f"{x:.4f}" if x == 0 or 1e-3 <= abs(x) < 1e6 else f"{x:.4g}"
