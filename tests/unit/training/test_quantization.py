"""INT8 quantization, the INT8 quality gate (including bad calibration), and the latency probe."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
import torch
from torch import nn

from contract.signature import Signature, TensorSpec
from training.errors import ExportError
from training.onnx_export import export_onnx, session
from training.quantization import GateResult, agreement, int8_gate, quantize_int8, time_session

D_IN = 256
SIGNATURE = Signature(
    inputs=(TensorSpec("x", "FP32", (D_IN,)),), outputs=(TensorSpec("score", "FP32", (1,)),)
)
QUERIES, CANDIDATES = 40, 100

FloatArray = npt.NDArray[np.float32]


def features(rows: int, seed: int) -> FloatArray:
    """Ranker-like dense features: standardized, with a few heavier-tailed columns."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, D_IN)).astype(np.float32)
    x[:, :16] *= rng.uniform(1.0, 3.0, size=16).astype(np.float32)
    return x


def calibration(kind: str, batches: int = 4, rows: int = 256) -> Iterator[dict[str, FloatArray]]:
    """A generator on purpose: quantize_int8 must consume a one-shot iterable."""
    for b in range(batches):
        x = features(rows, seed=100 + b)
        if kind == "x1000":
            x = x * 1000.0
        elif kind == "zeros":
            x = np.zeros_like(x)
        yield {"x": x}


def ndcg_at_10(scores: FloatArray, reference: FloatArray) -> float:
    """Mean NDCG@10 of ``scores`` per query, graded by the FP32 ranking.

    The FP32 model's top 5 candidates get grade 3, the next 15 grade 2, the next 30 grade 1, so
    FP32 scores 1.0 and INT8 is measured by how much of the FP32 ranking it keeps.
    """
    discounts = 1.0 / np.log2(np.arange(2, 12))
    total = 0.0
    for s, r in zip(scores, reference, strict=True):
        grade = np.zeros(len(r))
        order = np.argsort(-r, kind="stable")
        grade[order[:5]], grade[order[5:20]], grade[order[20:50]] = 3, 2, 1
        gains = 2.0**grade - 1.0
        top = np.argsort(-s, kind="stable")[:10]
        ideal = np.sort(gains)[::-1][:10]
        total += float((gains[top] * discounts).sum() / (ideal * discounts).sum())
    return total / len(scores)


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(D_IN, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 1)
    )
    path = tmp_path_factory.mktemp("quant") / "fp32.onnx"
    export_onnx(mlp, SIGNATURE, path, {"x": features(8, seed=1)})
    return path


@pytest.fixture(scope="module")
def eval_set(fp32_model: Path) -> tuple[FloatArray, FloatArray]:
    x = features(QUERIES * CANDIDATES, seed=2)
    reference = session(fp32_model).run(None, {"x": x})[0].reshape(QUERIES, CANDIDATES)
    return x, reference


def scores_of(path: Path, x: FloatArray) -> FloatArray:
    out: FloatArray = session(path).run(None, {"x": x})[0]
    return out.reshape(QUERIES, CANDIDATES)


def test_quantized_model_is_qdq_and_close_to_fp32(
    fp32_model: Path,
    eval_set: tuple[FloatArray, FloatArray],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    int8 = tmp_path / "int8.onnx"
    root_handlers = list(logging.getLogger().handlers)
    with caplog.at_level(logging.INFO):
        # The Sequential's layers are "0", "2", "4"; leave the score head ("4") in FP32.
        quantize_int8(fp32_model, int8, calibration("good"), layers=("0.", "2."))
    # Clean build log: no third-party warnings, nothing printed, no implicit basicConfig.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert capfd.readouterr() == ("", "")
    assert logging.getLogger().handlers == root_handlers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]  # atomic, no temp left

    model = onnx.load(str(int8))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 3
    assert ops.count("DequantizeLinear") >= 3
    int8_weights = [
        i
        for i in model.graph.initializer
        if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2
    ]
    assert len(int8_weights) == 2  # one matrix per quantized Gemm; the head stays FP32
    assert [i.name for i in model.graph.input] == ["x"]
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 18)}  # no stray domains

    x, reference = eval_set
    got = scores_of(int8, x)
    assert np.corrcoef(reference.ravel(), got.ravel())[0, 1] > 0.99
    # The FP32 head keeps the scores' resolution (no Q/DQ pair before the output).
    assert model.graph.node[-1].op_type == "Gemm"
    assert model.graph.node[-1].input[1] == "4.weight"
    assert len(np.unique(got)) > 0.95 * got.size
    assert int8_gate(ndcg_at_10(reference, reference), ndcg_at_10(got, reference)).passed


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_other_calibration_methods(
    fp32_model: Path, eval_set: tuple[FloatArray, FloatArray], tmp_path: Path, method: str
) -> None:
    int8 = tmp_path / "int8.onnx"
    quantize_int8(fp32_model, int8, calibration("good"), method=method)  # type: ignore[arg-type]
    x, reference = eval_set
    assert np.corrcoef(reference.ravel(), scores_of(int8, x).ravel())[0, 1] > 0.99


@pytest.mark.parametrize(
    ("kind", "shipped"), [("good", "int8"), ("x1000", "fp32"), ("zeros", "fp32")]
)
def test_gate_catches_bad_calibration(
    fp32_model: Path,
    eval_set: tuple[FloatArray, FloatArray],
    tmp_path: Path,
    kind: str,
    shipped: str,
) -> None:
    """Calibrating on the wrong distribution quietly wrecks INT8; the ranking gate must see it."""
    int8 = tmp_path / f"{kind}.onnx"
    quantize_int8(fp32_model, int8, calibration(kind))
    x, reference = eval_set
    fp32_ndcg = ndcg_at_10(reference, reference)
    int8_ndcg = ndcg_at_10(scores_of(int8, x), reference)
    result = int8_gate(fp32_ndcg, int8_ndcg, tolerance=0.01)
    assert result.shipped == shipped, result.reason
    assert result.passed is (shipped == "int8")
    if shipped == "fp32":
        assert result.rel_delta > 0.2  # not a borderline call: the ranking is mostly lost


def test_per_tensor_and_custom_op_types(fp32_model: Path, tmp_path: Path) -> None:
    int8 = tmp_path / "int8.onnx"
    quantize_int8(
        fp32_model, int8, calibration("good"), per_channel=False, op_types=["Gemm", "MatMul"]
    )
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Relu"} <= ops  # Relu left in float


def test_nothing_to_quantize_is_an_error(fp32_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no QuantizeLinear"):
        quantize_int8(fp32_model, tmp_path / "int8.onnx", calibration("good"), op_types=["Conv"])
    assert not list(tmp_path.iterdir())


def test_empty_calibration_is_an_error(fp32_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="calibration set is empty"):
        quantize_int8(fp32_model, tmp_path / "int8.onnx", [])
    assert not list(tmp_path.iterdir())


def test_calibration_that_does_not_fit_the_model(fp32_model: Path, tmp_path: Path) -> None:
    wrong = [{"features": np.zeros((4, D_IN), np.float32)}]
    with pytest.raises(ExportError, match=r"quantization of .* failed") as info:
        quantize_int8(fp32_model, tmp_path / "int8.onnx", wrong)
    assert info.value.__cause__ is not None
    with pytest.raises(ExportError, match="not a feed"):
        quantize_int8(fp32_model, tmp_path / "int8.onnx", [42])  # type: ignore[list-item]


def test_bad_arguments(fp32_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "int8.onnx", calibration("good"))
    with pytest.raises(ValueError, match="method"):
        quantize_int8(fp32_model, tmp_path / "i.onnx", calibration("good"), method="kl")  # type: ignore[arg-type]


def test_time_session(fp32_model: Path) -> None:
    timing = time_session(fp32_model, {"x": features(64, seed=3)}, repeats=5, warmup=1, threads=1)
    assert 0 < timing["min_ms"] <= timing["p50_ms"] <= timing["p90_ms"]
    assert timing["batch"] == 64
    assert timing["threads"] == 1
    with pytest.raises(ValueError, match="repeats"):
        time_session(fp32_model, {"x": features(1, seed=3)}, repeats=0)


# --------------------------------------------------------------------------------------------
# The gate itself


def test_gate_passes_at_the_boundary_and_fails_just_past_it() -> None:
    at = int8_gate(1.0, 0.99, tolerance=0.01)
    assert at.passed
    assert at.shipped == "int8"
    assert at.rel_delta == pytest.approx(0.01)
    past = int8_gate(1.0, 0.9899, tolerance=0.01)
    assert not past.passed
    assert past.shipped == "fp32"
    assert "above the 1.0% tolerance" in past.reason
    assert "shipping fp32" in past.reason


def test_gate_reason_names_both_numbers() -> None:
    ok = int8_gate(0.3020, 0.3012, metric="ndcg10")
    assert ok.reason == "int8 ndcg10 0.3012 is within 1.0% of fp32 0.3020 (-0.26%): shipping int8"
    bad = int8_gate(0.3020, 0.2893, metric="ndcg10")
    assert "0.2893" in bad.reason
    assert "0.3020" in bad.reason
    assert "lost 4.2%" in bad.reason
    assert bad == GateResult(
        metric="ndcg10",
        fp32=0.3020,
        int8=0.2893,
        rel_delta=(0.3020 - 0.2893) / 0.3020,
        tolerance=0.01,
        passed=False,
        shipped="fp32",
        reason=bad.reason,
    )


def test_gate_int8_improvement_passes() -> None:
    result = int8_gate(0.30, 0.31, tolerance=0.0, metric="auc")
    assert result.passed
    assert result.rel_delta < 0
    assert "0.3100" in result.reason
    assert "0.3000" in result.reason


def test_gate_fp32_zero() -> None:
    same = int8_gate(0.0, 0.0)
    assert same.passed
    assert same.rel_delta == 0.0
    better = int8_gate(0.0, 0.1)
    assert better.passed
    worse = int8_gate(0.0, -0.1, metric="corr")
    assert not worse.passed
    assert worse.shipped == "fp32"
    assert math.isinf(worse.rel_delta)
    assert "0.0000" in worse.reason
    assert "-0.1000" in worse.reason


def test_gate_negative_metric_keeps_loss_positive() -> None:
    worse = int8_gate(-1.0, -1.5, metric="neg_logloss")
    assert worse.rel_delta == pytest.approx(0.5)
    assert not worse.passed


def test_gate_non_finite_fails_safe() -> None:
    result = int8_gate(0.3, float("nan"))
    assert not result.passed
    assert result.shipped == "fp32"
    assert math.isnan(result.rel_delta)
    with pytest.raises(ValueError, match="tolerance"):
        int8_gate(0.3, 0.3, tolerance=-0.01)


def test_gate_fails_on_low_agreement_even_when_the_metric_improves() -> None:
    result = int8_gate(0.10, 0.13, 0.01, agreement=0.42)
    assert not result.passed
    assert result.shipped == "fp32"
    assert "correlate only 0.420" in result.reason
    assert int8_gate(0.10, 0.0995, 0.01, agreement=0.995).passed


def test_agreement_of_outputs() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(100, 4)).astype(np.float32)
    assert agreement(a, a) == 1.0
    assert agreement(a, a + 0.01 * rng.normal(size=a.shape)) > 0.99
    assert agreement(a, rng.normal(size=a.shape)) < 0.5
    assert agreement(a, np.zeros_like(a)) == 0.0
