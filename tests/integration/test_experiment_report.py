"""`cascade experiment report` end to end: event log -> table, JSON and HTML."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ab_router.stores.sqlite import SqliteEventStore
from tests.unit.ab_router.test_analysis import EXPERIMENT, events

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contract.cli", "experiment", "report", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_report_prints_decides_and_renders(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    exposures, outcomes = events((1500, 1500), (0.08, 0.16), seed=9)
    for e in exposures:
        store.record_exposure(e)
    for o in outcomes:
        store.record_outcome(o)
    store.close()
    catalog = tmp_path / "experiments.json"
    catalog.write_text(
        json.dumps({"layers": [{"name": "default", "experiments": [EXPERIMENT.model_dump()]}]})
    )
    html = tmp_path / "report.html"
    done = run(
        "ranker-v2",
        "--catalog",
        str(catalog),
        "--store",
        str(tmp_path / "events.db"),
        "--html",
        str(html),
    )
    assert done.returncode == 0, done.stderr
    assert "decision for treatment: SHIP" in done.stdout
    assert "sample-ratio check" in done.stdout
    page = html.read_text()
    assert page.count("<svg") == 2
    assert "polyline" in page  # the effect line over time was drawn
    as_json = run(
        "ranker-v2",
        "--catalog",
        str(catalog),
        "--store",
        str(tmp_path / "events.db"),
        "--json",
        "--html",
        str(html),
    )
    data = json.loads(as_json.stdout)
    assert data["decisions"] == {"treatment": "ship"}
    assert data["counts"] == {"control": 1500, "treatment": 1500}


def test_unknown_experiment_is_a_clear_error(tmp_path: Path) -> None:
    catalog = tmp_path / "experiments.json"
    catalog.write_text(
        json.dumps({"layers": [{"name": "default", "experiments": [EXPERIMENT.model_dump()]}]})
    )
    done = run("nope", "--catalog", str(catalog), "--store", str(tmp_path / "events.db"))
    assert done.returncode == 2
    assert "nope" in done.stderr
