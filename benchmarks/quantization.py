"""FP32 vs INT8 latency and quality of every model in the repository's latest version.

Both precisions of each model run side by side in this one process, on the same feeds, with one
intra-op thread (how Triton's instances are configured), alternating so that machine noise hits
both alike. Quality figures come from the build's quality gate and test evaluation, recorded in
each version's manifest. Writes ``benchmarks/results/quantization.json``.

    python benchmarks/quantization.py [--repo model_repo] [--out results/quantization.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contract.features import load_features  # noqa: E402
from contract.names import (  # noqa: E402
    COMBINER,
    FEATURES_FILE,
    RANKERS,
    USER_TOWER,
)
from contract.ranking import PRERANKER_FILE, RANKING, Preranker  # noqa: E402
from training.feeds import Feed, random_feeds  # noqa: E402
from training.quantization import time_session  # noqa: E402
from training.repository import ModelRepository  # noqa: E402

MODELS = (USER_TOWER, *RANKERS, COMBINER)


def precision_paths(directory: Path, shipped: str) -> dict[str, Path]:
    other = "int8" if shipped == "fp32" else "fp32"
    paths = {shipped: directory / "model.onnx"}
    if (directory / f"model.{other}.onnx").exists():
        paths[other] = directory / f"model.{other}.onnx"
    return paths


def bench_model(
    paths: dict[str, Path], make: Callable[[int], Feed], rounds: int
) -> dict[str, float]:
    """p50 ms per precision and batch; rounds alternate precisions to share the noise."""
    samples: dict[str, list[float]] = {}
    for batch, repeats in ((1, 300), (1000, 50)):
        feed = make(batch)
        for _ in range(rounds):
            for label, path in paths.items():
                timing = time_session(path, feed, repeats=repeats, warmup=5, threads=1)
                samples.setdefault(f"{label}_ms_b{batch}", []).append(timing["p50_ms"])
    return {key: float(np.median(values)) for key, values in samples.items()}


def complete_build(path: Path, *options: str) -> ModelRepository:
    """The repository at ``path``, after a ``cascade build`` into it if it has no complete
    version."""
    repo = ModelRepository(path)
    if not all(repo.versions(m) for m in MODELS):
        print(f"{path} has no complete build; building one (cascade build)...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "contract.cli", "build", "--out", str(path), "-q", *options],
            check=True,
            cwd=ROOT,
        )
        repo = ModelRepository(path)
    return repo


def quality(repo: ModelRepository, version: int) -> dict[str, Any]:
    """The test-split figures a version's manifests record: the pipeline's, retrieval's and
    the baselines' (absent from builds older than the baselines)."""
    metrics = repo.manifest(USER_TOWER, version)["metrics"]
    out: dict[str, Any] = {
        "dataset": repo.manifest(USER_TOWER, version)["dataset"],
        "popularity_ndcg10": metrics["popularity"]["ndcg@10"],
        "popularity_recall100": metrics["popularity"]["recall@100"],
        "retrieval_recall100": metrics["test"]["recall@100"],
        "retrieval_recall1000": metrics["test"].get("recall@1000"),
        "pipeline_ndcg10": metrics["pipeline"]["ndcg@10"],
    }
    for baseline in ("ease", "item_knn"):
        if baseline in metrics:
            out[f"{baseline}_ndcg10"] = metrics[baseline]["ndcg@10"]
    return out


def served(repo: ModelRepository, version: int) -> dict[str, Any]:
    """What the graph serves from this version: each model's shipped precision, whether
    ranking runs as the one-call model, and the pre-ranker's head (builds before them: none)."""
    out: dict[str, Any] = {
        "precision": {m: repo.manifest(m, version)["quantization"]["shipped"] for m in MODELS}
    }
    if version in repo.versions(RANKING):
        composed = repo.manifest(RANKING, version)["composed_of"]
        out["ranking"] = f"one call of {RANKING} v{version}, composed of " + ", ".join(
            f"{name} v{v}" for name, v in composed.items() if name != USER_TOWER
        )
    else:
        out["ranking"] = "separate calls: " + ", ".join((*RANKERS, COMBINER))
    preranker = repo.version_dir(COMBINER, version) / PRERANKER_FILE
    out["preranker_head"] = Preranker.load(preranker).head if preranker.is_file() else None
    # The combiner's own test figure ranks every candidate; "pipeline" ranks the head.
    out["pipeline_ndcg10_all_candidates"] = repo.manifest(COMBINER, version)["metrics"]["test"][
        "ndcg@10"
    ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/quantization.json")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--synthetic-repo",
        type=Path,
        default=ROOT / ".cache/bench/synthetic/model_repo",
        help="a build on the synthetic generator, for its quality figures (built if absent)",
    )
    args = parser.parse_args()

    repo = complete_build(args.repo)
    version = max(repo.versions(USER_TOWER))
    tower_dir = repo.version_dir(USER_TOWER, version)
    features = load_features(tower_dir / FEATURES_FILE)
    kinds = random_feeds(features, np.random.default_rng(0))
    makers = {USER_TOWER: kinds["user_tower"], COMBINER: kinds["combiner"]}
    makers.update({name: kinds["ranker"] for name in RANKERS})

    result: dict[str, Any] = {
        "version": version,
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "threads": 1,
        "models": {},
    }
    for name in MODELS:
        manifest = repo.manifest(name, version)
        gate = manifest["quantization"]
        paths = precision_paths(repo.version_dir(name, version), gate["shipped"])
        print(f"timing {name} ({', '.join(sorted(paths))})...", flush=True)
        speed = bench_model(paths, makers[name], args.rounds)
        entry: dict[str, Any] = {
            "fp32_ms_b1": speed.get("fp32_ms_b1"),
            "int8_ms_b1": speed.get("int8_ms_b1"),
            "fp32_ms_b1000": speed.get("fp32_ms_b1000"),
            "int8_ms_b1000": speed.get("int8_ms_b1000"),
            "speedup_b1": _ratio(speed.get("fp32_ms_b1"), speed.get("int8_ms_b1")),
            "speedup_b1000": _ratio(speed.get("fp32_ms_b1000"), speed.get("int8_ms_b1000")),
            "ndcg10_fp32": gate.get("fp32"),
            "ndcg10_int8": gate.get("int8"),
            "ndcg10_rel_delta": gate.get("rel_delta"),
            "shipped": gate["shipped"],
            "gate": gate.get("reason"),
        }
        result["models"][name] = entry
    result.update(quality(repo, version))
    result["served"] = served(repo, version)
    synthetic = complete_build(
        args.synthetic_repo,
        "--dataset",
        "synthetic",
        "--report-dir",
        str(args.synthetic_repo.parent / "build"),
    )
    result["synthetic"] = quality(synthetic, max(synthetic.versions(USER_TOWER)))
    result["gate_machine"] = repo.manifest(USER_TOWER, version)["quantization"].get("machine")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    for name, entry in result["models"].items():
        print(
            f"{name:11s} b1 {_ms(entry['fp32_ms_b1'])} -> {_ms(entry['int8_ms_b1'])}  "
            f"b1000 {_ms(entry['fp32_ms_b1000'])} -> {_ms(entry['int8_ms_b1000'])} "
            f"({entry['speedup_b1000'] or '-'}x)  shipped {entry['shipped']}"
        )
    baselines = ", ".join(
        f"{name} {result[f'{name}_ndcg10']:.4f}"
        for name in ("popularity", "ease", "item_knn")
        if f"{name}_ndcg10" in result
    )
    print(
        f"pipeline NDCG@10 {result['pipeline_ndcg10']:.4f} vs {baselines}; "
        f"retrieval Recall@100 {result['retrieval_recall100']:.4f}"
    )
    other = result["synthetic"]
    print(
        f"synthetic: pipeline NDCG@10 {other['pipeline_ndcg10']:.4f} vs EASE "
        f"{other.get('ease_ndcg10', float('nan')):.4f}"
    )
    print(f"wrote {args.out}")
    return 0


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _ms(value: float | None) -> str:
    return f"{value:7.3f}ms" if value is not None else "      -  "


if __name__ == "__main__":
    sys.exit(main())
