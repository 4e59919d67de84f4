"""Served recommendation quality beside strong baselines, measured as a new user would.

Each user's events are ordered by time and the last 10% (at least one, for users with three or
more) are held out. The rest is written to TSV files and given to the real ``cascade build
--interactions``; the real ``cascade serve`` (onnxruntime runtime, budgets relaxed so every
answer is at full quality; the fallback rate is reported) answers ``/v1/recommend`` with
``k=10`` for every user with a held-out positive. Beside it, on the same training files and
users: popularity, item-kNN and EASE (its lambda chosen on a time split of the training part),
each ranking the catalogue minus what the user has seen. Writes
``benchmarks/results/served_quality.json``.

    python benchmarks/served_quality.py [--dataset movielens-100k|synthetic] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.reliability import Serve, shell_environment  # noqa: E402
from contract.graph_config import GraphConfig, StageBudgets  # noqa: E402
from training import metrics  # noqa: E402
from training.baselines import (  # noqa: E402
    ItemItem,
    fit_item_item,
    fit_item_knn,
    interaction_matrix,
)
from training.build import BuildConfig, load_dataset  # noqa: E402
from training.evaluation import eval_set  # noqa: E402
from training.split import time_ordered_split  # noqa: E402
from training.tables import Dataset  # noqa: E402
from training.writers import (  # noqa: E402
    INTERACTIONS_HEADER,
    ITEMS_HEADER,
    USERS_HEADER,
    write_interactions,
    write_items,
    write_users,
)

K = 10
#: Wide enough that a full-quality answer fits on a busy two-core machine.
RELAXED = GraphConfig(
    budgets=StageBudgets(retrieval_ms=2000, ranking_ms=4000, rerank_ms=500, total_ms=8000)
)


def write_training_files(dataset: Dataset, train: Any, directory: Path) -> dict[str, Path]:
    paths = {
        "interactions": directory / "interactions.tsv",
        "items": directory / "items.tsv",
        "users": directory / "users.tsv",
    }
    with paths["interactions"].open("w", encoding="utf-8") as out:
        out.write(INTERACTIONS_HEADER + "\n")
        write_interactions(out, train, dataset.users.ids, dataset.items.ids)
    with paths["items"].open("w", encoding="utf-8") as out:
        out.write(ITEMS_HEADER + "\n")
        write_items(out, dataset.items)
    with paths["users"].open("w", encoding="utf-8") as out:
        out.write(USERS_HEADER + "\n")
        write_users(out, dataset.users)
    return paths


def build(paths: dict[str, Path], repo: Path, report_dir: Path) -> float:
    started = time.perf_counter()
    command = [
        str(Path(sys.executable).parent / "cascade"),
        "build",
        "--interactions",
        str(paths["interactions"]),
        "--items",
        str(paths["items"]),
        "--users",
        str(paths["users"]),
        "--out",
        str(repo),
        "--report-dir",
        str(report_dir),
    ]
    print("building:", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=shell_environment())
    return time.perf_counter() - started


def served(url: str, user_ids: list[str]) -> tuple[list[list[str]], float]:
    """Top-k item ids per user from ``/v1/recommend``, and the share of degraded answers."""
    answers, degraded = [], 0
    for user in user_ids:
        body = json.dumps({"user_id": user, "k": K}).encode()
        request = urllib.request.Request(
            f"{url}/v1/recommend", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            answer = json.loads(reply.read())
        degraded += bool(answer["fallbacks"])
        answers.append([item["item_id"] for item in answer["items"]])
    return answers, degraded / max(len(user_ids), 1)


def baselines(dataset: Dataset, train: Any, es: Any) -> dict[str, dict[str, float]]:
    n_users, n_items = len(dataset.users), len(dataset.items)
    matrix = interaction_matrix(train, n_users, n_items)
    inner = time_ordered_split(train, valid_fraction=0.0, test_fraction=0.1)
    inner_matrix = interaction_matrix(inner.train, n_users, n_items)
    inner_es = eval_set(inner.test, inner.train, n_users)
    # The source the build would use (EASE, lambda chosen on the inner split; item-kNN past
    # EASE's item limit), refit on the whole training part.
    inner_source = fit_item_item(inner_matrix, inner_es.users, inner_es.relevant, inner_es.exclude)
    ease = inner_source.refit(matrix)
    knn = ItemItem("item_knn", fit_item_knn(matrix), {"neighbours": 100})
    out = {"popularity": _figures(_popularity(train, n_items, es), es)}
    for model in (knn, ease):
        out[model.name] = _figures(model.rank(matrix, es.users, es.exclude, K), es)
    out[ease.name].update(ease.detail)
    return out


def _popularity(train: Any, n_items: int, es: Any) -> Any:
    """Each user's top-k most-liked training items they have not seen."""
    liked = np.bincount(train.item[train.rating >= 4.0], minlength=n_items).astype(np.float32)
    scores = np.tile(liked, (len(es.users), 1))
    for row, seen in enumerate(es.exclude):
        scores[row, seen] = np.nan
    ranked = metrics.top_k(scores, K)
    return np.where(np.take_along_axis(np.isnan(scores), ranked, 1), -1, ranked)


def _figures(ranked: Any, es: Any) -> dict[str, float]:
    hit = metrics.hits(ranked, es.relevant)
    return {
        "ndcg@10": metrics.ndcg_at(hit, es.n_relevant, K),
        "recall@10": metrics.recall_at(hit, es.n_relevant, K),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", choices=["movielens-100k", "synthetic"], default="movielens-100k"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or ROOT / "benchmarks/results" / f"served_quality-{args.dataset}.json"
    dataset = load_dataset(BuildConfig(dataset=args.dataset))
    split = time_ordered_split(dataset.interactions, valid_fraction=0.0, test_fraction=0.1)
    n_users = len(dataset.users)
    es = eval_set(split.test, split.train, n_users)
    print(f"{dataset.summary()}; {len(es.users)} users with held-out positives", flush=True)
    result: dict[str, Any] = {
        "dataset": dataset.name,
        "held_out": "each user's last 10% of events (users with 3 or more)",
        "users_evaluated": len(es.users),
        "k": K,
        "baselines": baselines(dataset, split.train, es),
    }
    with tempfile.TemporaryDirectory(prefix="cascade-served-quality-") as tmp:
        work = Path(tmp)
        paths = write_training_files(dataset, split.train, work)
        result["build_seconds"] = round(build(paths, work / "model_repo", work / "build"), 1)
        config = work / "graph.json"
        config.write_text(RELAXED.model_dump_json())
        server = Serve(
            work / "model_repo", extra=["--runtime", "onnxruntime", "--config", str(config)]
        )
        print("starting cascade serve ...", flush=True)
        server.start()
        try:
            user_ids = [dataset.users.ids[u] for u in es.users]
            started = time.perf_counter()
            answers, degraded = served(server.url, user_ids)
            seconds = time.perf_counter() - started
        finally:
            server.stop()
    index = {item: i for i, item in enumerate(dataset.items.ids)}
    ranked = np.full((len(es.users), K), -1, dtype=np.int64)
    for row, items in enumerate(answers):
        ranked[row, : len(items)] = [index[i] for i in items[:K]]
    result["cascade"] = {
        **_figures(ranked, es),
        "fallback_rate": degraded,
        "requests": len(answers),
        "seconds": round(seconds, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, out)
    rows = {**result["baselines"], "cascade (served)": result["cascade"]}
    for name, figures in rows.items():
        print(f"{name:18s} NDCG@10 {figures['ndcg@10']:.4f}  Recall@10 {figures['recall@10']:.4f}")
    print(f"fallback rate {degraded:.2%}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
