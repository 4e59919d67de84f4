"""A build that loses to a baseline it must beat ships nothing; one that only loses warns."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from training import build
from training.errors import QualityError
from training.repository import ModelRepository


def _evaluation(pipeline: float, **baselines: float) -> dict[str, Any]:
    return {"pipeline": {"ndcg@10": pipeline}, **{k: {"ndcg@10": v} for k, v in baselines.items()}}


def test_losses_are_the_baselines_strictly_ahead() -> None:
    evaluation = _evaluation(0.10, popularity=0.08, ease=0.15, item_knn=0.10)
    assert build.losses(evaluation) == {"ease": 0.15}


def test_a_required_baseline_ahead_stops_the_build_before_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(build, "evaluate", lambda *_: _evaluation(0.1, popularity=0.2, ease=0.3))
    trained: Any = SimpleNamespace(dataset=SimpleNamespace(name="tiny"))
    repo = ModelRepository(tmp_path / "repo")
    config = build.BuildConfig(out=tmp_path / "repo", require_beats=("popularity",))
    with caplog.at_level(logging.WARNING, "cascade.training"), pytest.raises(QualityError) as err:
        build.publish(config, trained, repo)
    assert "does not beat popularity (0.2000)" in str(err.value)
    assert "ease" not in str(err.value)  # not required: a warning only
    assert any("loses to ease" in r.getMessage() for r in caplog.records)
    assert repo.models() == []
    assert repo.next_version() == 1
