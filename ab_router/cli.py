"""``cascade experiment ...``: reports on experiments from the event log."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ab_router.analysis import analyze, analyze_events
from ab_router.design import load_catalog
from ab_router.errors import ExperimentError
from ab_router.events import EventStore
from ab_router.report import render_html, table
from ab_router.stores import open_store

#: Raised on purpose for a bad catalog or event log: one line, exit status 2.
USER_ERRORS = (ExperimentError,)


def timeline(
    store: EventStore, experiment: Any, points: int = 20
) -> tuple[str, list[tuple[int, float, float, float]]]:
    """The first primary comparison re-analysed at ``points`` moments of the experiment.

    The events are read once; each moment analyses the prefix up to its timestamp.
    """
    exposures = store.exposures(experiment.name)
    outcomes = store.outcomes(experiment.name)
    stamps = sorted(e.timestamp for e in exposures)
    if not stamps:
        return "effect", []
    out = []
    title = "effect"
    for k in range(1, points + 1):
        cut = stamps[min(len(stamps) - 1, k * len(stamps) // points - 1)]
        report = analyze_events(
            experiment,
            [e for e in exposures if e.timestamp <= cut],
            [o for o in outcomes if o.timestamp <= cut],
        )
        primary = [c for c in report.comparisons if c.role == "primary"]
        if primary:
            c = primary[0]
            title = f"{c.metric}: {c.treatment} minus control"
            out.append((sum(report.counts.values()), c.diff, c.cs_low, c.cs_high))
    return title, out


def _report(args: argparse.Namespace) -> int:
    catalog = load_catalog(json.loads(Path(args.catalog).read_text()))
    experiment = catalog.experiment(args.name)
    store = open_store(args.store)
    try:
        report = analyze(store, experiment, alpha=args.alpha, correction=args.correction)
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            print(table(report))
        html_path = args.html or Path("build/experiments") / f"{experiment.name}.html"
        title, points = timeline(store, experiment)
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(report, points, title))
        if not args.json:
            print(f"\nHTML report: {html_path}")
    finally:
        store.close()
    return 0


def register(sub: Any) -> None:
    experiment = sub.add_parser("experiment", help="experiment reports")
    commands = experiment.add_subparsers(dest="experiment_command", required=True)
    report = commands.add_parser("report", help="analyse an experiment from the event log")
    report.add_argument("name")
    report.add_argument("--catalog", required=True, help="experiments JSON (layers/experiments)")
    report.add_argument("--store", required=True, help="SQLite file, or redis://host:port/db")
    report.add_argument("--alpha", type=float, default=0.05)
    report.add_argument("--correction", choices=["holm", "bh"], default="holm")
    report.add_argument("--json", action="store_true", help="print the JSON the operator reads")
    report.add_argument("--html", type=Path, help="where to write the HTML report")
    report.set_defaults(run=_report)
