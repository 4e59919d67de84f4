"""The INT8 quality gate on real trained models: bad calibration fails it and FP32 ships."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from contract.names import RANKER_DCN
from training.build import BuildConfig, Trained, ship, ship_candidates
from training.feeds import Feed


def saturated(good: Iterator[Feed]) -> Iterator[Feed]:
    """Calibration from the wrong distribution: dense features a thousand times too large.

    Activation ranges taken from it are so wide that real inputs quantize to a few levels.
    """
    for feed in good:
        yield {
            name: (value * 1000).astype(value.dtype) if value.dtype == np.float32 else value
            for name, value in feed.items()
        }


def test_good_calibration_keeps_quality(
    trained: tuple[BuildConfig, Trained], tmp_path: Path
) -> None:
    config, models = trained
    candidate = next(c for c in ship_candidates(models, config) if c.spec.name == RANKER_DCN)
    outcome = ship(candidate, tmp_path, tolerance=0.05)
    assert outcome.gate is not None
    assert abs(outcome.gate.rel_delta) < 0.05
    assert outcome.gate.agreement is not None
    assert outcome.gate.agreement > 0.99
    assert outcome.parity_max_abs_error <= 1e-4


def test_bad_calibration_fails_the_gate_and_fp32_ships(
    trained: tuple[BuildConfig, Trained], tmp_path: Path
) -> None:
    config, models = trained
    candidate = next(c for c in ship_candidates(models, config) if c.spec.name == RANKER_DCN)
    good = candidate.calibration
    bad = dataclasses.replace(candidate, calibration=lambda: saturated(good()))
    outcome = ship(bad, tmp_path, tolerance=config.int8_tolerance)
    assert outcome.gate is not None
    assert not outcome.gate.passed
    assert outcome.gate.shipped == "fp32"
    # Either the metric or the agreement with FP32 gives the bad model away; on this small
    # synthetic set the metric alone can even improve by chance.
    assert outcome.gate.rel_delta > config.int8_tolerance or (outcome.gate.agreement or 0) < 0.99
    assert "shipping fp32" in outcome.gate.reason
    shipped = {n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert "QuantizeLinear" not in shipped  # model.onnx is the FP32 export
    rejected = {n.op_type for n in onnx.load(str(tmp_path / "model.int8.onnx")).graph.node}
    assert "QuantizeLinear" in rejected  # the rejected INT8 candidate stays for audit
