"""Plain-text tables of a build's quality and speed, for the terminal."""

from __future__ import annotations

import math
from typing import Any

from contract.cli import text_table
from contract.names import COMBINER, RANKERS, USER_TOWER
from training.build import BuildResult


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def quality_table(result: BuildResult) -> str:
    ev = result.evaluation
    header = ["stage", "Recall@100", "Recall@1000", "NDCG@10", "MRR", "AUC"]
    rows = []
    for label, key in (
        ("popularity baseline", "popularity"),
        ("segment popularity", "segment_popularity"),
        ("EASE baseline", "ease"),
        ("item-kNN baseline", "item_knn"),
        ("two-tower (HNSW)", "two_tower"),
        ("two-tower (exact)", "retrieval_exact"),
        ("retrieval (sources merged)", "retrieval"),
        *((f"{name} on candidates", name) for name in RANKERS),
        ("pipeline (combiner)", "pipeline"),
    ):
        if key not in ev:
            continue  # EASE is left out past its item limit
        m = ev[key]
        rows.append(
            [label]
            + [_fmt(m.get(k)) for k in ("recall@100", "recall@1000", "ndcg@10", "mrr", "auc")]
        )
    title = (
        f"Quality on the test split of {result.dataset}: {ev['users_evaluated']} users, "
        f"{ev['candidates']} retrieval candidates each (models fit on the train split)"
    )
    return f"{title}\n{text_table(header, rows)}\n\n{similar_table(ev)}"


def similar_table(ev: dict[str, Any]) -> str:
    """The similar-items surface against its baselines (empty when not evaluated)."""
    similar = ev.get("similar_items")
    if not similar:
        return ""
    rows = [
        [label, _fmt(similar[key]["ndcg@10"]), _fmt(similar[key]["hit_rate@10"])]
        for label, key in (
            (f"similar items (alpha {similar['alpha']:g})", "cascade"),
            ("item-kNN baseline", "item_knn"),
            ("embeddings alone", "embeddings"),
            ("popularity", "popularity"),
        )
    ]
    title = (
        f"Similar items: {similar['queries']} test users' latest liked item, "
        "the items they liked next"
    )
    return f"{title}\n{text_table(['rule', 'NDCG@10', 'HitRate@10'], rows)}"


def speed_table(result: BuildResult) -> str:
    header = [
        "model",
        "fp32 ms b1",
        "int8 ms b1",
        "fp32 ms b1000",
        "int8 ms b1000",
        "speedup b1000",
        "NDCG@10 fp32",
        "NDCG@10 int8",
        "loss",
        "shipped",
    ]
    rows = []
    for name in (USER_TOWER, *RANKERS, COMBINER):
        outcome = result.models[name]
        s = outcome.speed_ms
        gate = outcome.gate
        speedup = s["fp32_ms_b1000"] / s["int8_ms_b1000"] if "int8_ms_b1000" in s else None
        rows.append(
            [
                name,
                _fmt(s.get("fp32_ms_b1"), 3),
                _fmt(s.get("int8_ms_b1"), 3),
                _fmt(s.get("fp32_ms_b1000"), 2),
                _fmt(s.get("int8_ms_b1000"), 2),
                f"{speedup:.2f}x" if speedup else "-",
                _fmt(gate.fp32 if gate else None),
                _fmt(gate.int8 if gate else None),
                f"{gate.rel_delta:+.2%}" if gate else "-",
                gate.shipped if gate else "fp32",
            ]
        )
    title = "Speed (onnxruntime CPU, 1 thread, p50) and the INT8 quality gate (validation split)"
    return f"{title}\n{text_table(header, rows)}"
