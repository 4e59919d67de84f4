"""One build of the model factory: data -> models -> ONNX -> INT8 gate -> repository version.

Stages run in order and log their progress; the repository is touched only at the very end,
in one transaction, so a build that fails or is killed at any point leaves it as it was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import sparse
from torch import nn

from contract.arrays import FloatArray, IntArray
from contract.candidates import SOURCES
from contract.features import FeatureTables
from contract.model_config import MODEL_FILENAME
from contract.names import (
    CATALOG_FILE,
    COMBINER,
    FEATURES_FILE,
    IDS_FILE,
    ITEM_INDEX_FILE,
    ITEM_ITEM_FILE,
    RANKER_DCN,
    RANKER_MLP,
    RANKERS,
    SEEN_FILE,
    SIMILAR_FILE,
    USER_TOWER,
)
from contract.ranking import PRERANKER_FILE, RANKING, Preranker, ranking_signature
from training import __version__, metrics
from training.baselines import ItemItem, fit_item_item, fit_item_knn, interaction_matrix
from training.candidates import Found, Sources
from training.errors import DataError, ExportError, QualityError
from training.evaluation import (
    CANDIDATES,
    EvalSet,
    concat,
    eval_set,
    popularity_ranking,
    ranking_metrics,
    retrieval_metrics,
    score_candidates,
)
from training.features import build_features
from training.feeds import (
    Feed,
    Runner,
    onnx_runner,
    random_feeds,
    ranker_feed,
    torch_runner,
    user_feed,
)
from training.fused import check_fused, fuse_ranking
from training.model_config import ModelConfigSpec
from training.movielens import load_movielens_100k
from training.networks import (
    COMBINER_INPUTS,
    COMBINER_SIGNATURE,
    QUANTIZED_LAYERS,
    DCNRanker,
    MLPRanker,
    ranker_signature,
    user_tower_signature,
)
from training.onnx_export import check_parity, export_onnx, session
from training.preranker import choose as choose_preranker
from training.preranker import head_mask, head_metrics
from training.quantization import (
    GateResult,
    agreement,
    int8_gate,
    machine,
    quantize_int8,
    time_session,
)
from training.ranking import RankingConfig, fit_combiner, labelled_pairs, train_ranker
from training.readers import read_dataset
from training.repository import ModelRepository, Transaction
from training.retrieval import ItemIndex, RetrievalConfig, RetrievalModel, train_retrieval
from training.similar import (
    choose_alpha,
    fit_neighbours,
    next_item_queries,
    popular_similar,
    rank_similar,
    similar_metrics,
)
from training.split import Split, seen_by_user, shortfalls, time_ordered_split
from training.synthetic import SyntheticConfig, generate
from training.tables import Dataset, Interactions

log = logging.getLogger("cascade.training")


#: The baselines the evaluation reports and a build may be required to beat.
Baseline = Literal["popularity", "ease", "item_knn"]
BASELINES: tuple[Baseline, ...] = ("popularity", "ease", "item_knn")


class BuildConfig(BaseModel):
    """Everything one build depends on; recorded in every manifest it writes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Literal["movielens-100k", "synthetic", "files"] = "movielens-100k"
    interactions: Path | None = Field(None, description="Bring-your-own interactions file.")
    items: Path | None = Field(None, description="Optional items file for bring-your-own data.")
    users: Path | None = Field(None, description="Optional users file for bring-your-own data.")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    out: Path = Field(Path("model_repo"), description="The Triton model repository to add to.")
    report_dir: Path = Field(Path("build"), description="Where evaluation JSON is written.")
    seed: int = Field(0, ge=0)
    int8_tolerance: float = Field(
        0.01, ge=0.0, le=1.0, description="Largest relative NDCG@10 loss INT8 may cost."
    )
    candidates: int = Field(CANDIDATES, ge=10, description="Retrieval depth per user.")
    retrieval_epochs: int = Field(20, ge=1)
    ranking_epochs: int = Field(3, ge=1)
    keep_versions: int = Field(3, ge=1)
    require_beats: tuple[Baseline, ...] = Field(
        (), description="Baselines the pipeline must beat on test NDCG@10, or nothing ships."
    )
    refit: bool = Field(
        True,
        description="After evaluation, refit the models on every interaction given and ship "
        "those (the evaluation's figures are the held-out fits').",
    )
    progress: bool = True


@dataclass
class ModelOutcome:
    name: str
    gate: GateResult | None
    parity_max_abs_error: float
    speed_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class BuildResult:
    version: int
    dataset: str
    evaluation: dict[str, Any]
    models: dict[str, ModelOutcome]
    report_path: Path
    seconds: float


@dataclass
class Trained:
    """The build's models and what they were fit on. ``train_all`` fits them on the train
    split (held out, for evaluation); :func:`refit` fits the same again on everything."""

    dataset: Dataset
    split: Split
    #: The feature tables the models were fit with.
    features: FeatureTables
    retrieval: RetrievalModel
    index: ItemIndex
    rankers: dict[str, nn.Module]
    combiner: nn.Module
    #: The validation users and their merged candidates (from the held-out models).
    valid_es: EvalSet
    valid: Found
    #: The feature tables served: built from every interaction given, so each user's
    #: history, seen-set and taste are as fresh as the data (``features`` of the held-out
    #: fit stops where the training split does, which evaluation needs and serving must not).
    serving_features: FeatureTables
    #: The item-item model (EASE, else item-kNN) and the candidate sources over the data the
    #: models were fit on.
    item_item: ItemItem
    sources: Sources
    #: The similar-items neighbours' ``alpha``, chosen on the validation split.
    similar_alpha: float
    #: Which candidates go on to the rankers (fit, and its head chosen, on validation).
    preranker: Preranker
    preranker_choice: dict[str, Any]
    fit_on: str = "train split"

    @property
    def train_matrix(self) -> sparse.csr_matrix:
        return self.sources.matrix


def stage_scores(rankers: dict[str, Runner], features: FeatureTables, found: Found) -> FloatArray:
    """(users, depth, 4): each ranker's logit, the two-tower score and the item-item score,
    the combiner's inputs (:data:`~training.networks.COMBINER_INPUTS`)."""
    columns = [
        score_candidates(rankers[name], features, found.users, found.items) for name in RANKERS
    ]
    stacked: FloatArray = np.stack([*columns, found.scores, found.item_item], axis=-1).astype(
        np.float32
    )
    return stacked


def blend(combiner: Runner, stacked: FloatArray) -> FloatArray:
    valid = ~np.isnan(stacked).any(axis=-1)
    out = np.full(stacked.shape[:2], np.nan, dtype=np.float32)
    out[valid] = combiner({"scores": stacked[valid]})[:, 0]
    return out


def load_dataset(config: BuildConfig) -> Dataset:
    if config.interactions is not None:
        return read_dataset(config.interactions, config.items, config.users)
    if config.dataset == "files":
        raise ValueError("dataset 'files' needs an interactions file")
    if config.dataset == "synthetic":
        return generate(config.synthetic)
    return load_movielens_100k()


@dataclass
class _Stage:
    name: str
    started: float = field(default_factory=time.perf_counter)


def _stage(name: str) -> _Stage:
    log.info("── %s", name)
    return _Stage(name)


def _done(stage: _Stage) -> None:
    log.info("   %s done in %.1fs", stage.name, time.perf_counter() - stage.started)


def train_all(config: BuildConfig, dataset: Dataset) -> Trained:
    """Every model fit on the train split, the combiner and the choices on validation."""
    n_users = len(dataset.users)
    split = time_ordered_split(dataset.interactions)
    log.info(
        "split: %d train, %d validation, %d test interactions",
        len(split.train),
        len(split.valid),
        len(split.test),
    )
    missing = shortfalls(split)
    if missing:
        raise DataError(f"too little data to build from {dataset.name}: " + "; ".join(missing))
    features = build_features(dataset, split.train)
    valid_es = eval_set(split.valid, split.train, n_users)
    retrieval, index = _fit_retrieval(config, dataset, split.train, features)
    stage = _stage("item-item: EASE on the training split, lambda chosen on validation")
    matrix = interaction_matrix(split.train, n_users, len(dataset.items))
    item_item = fit_item_item(matrix, valid_es.users, valid_es.relevant, valid_es.exclude)
    _done(stage)
    sources = Sources.build(retrieval, index, features, item_item, matrix, dataset.users)
    rankers = _fit_rankers(config, dataset, split.train, features, sources)
    stage = _stage("combiner: logistic blend of the stage scores, fit on the validation split")
    depth = min(config.candidates, len(dataset.items))
    valid = sources.gather(valid_es.users, valid_es.exclude, depth)
    runners = {n: torch_runner(m, ranker_signature(features.layout)) for n, m in rankers.items()}
    stacked = stage_scores(runners, features, valid)
    rows = ~np.isnan(stacked).any(axis=-1)
    labels = metrics.hits(valid.items, valid_es.relevant)
    combiner = fit_combiner(stacked[rows], labels[rows], seed=config.seed)
    weights = combiner.blend.weight.detach().numpy()[0]
    log.info(
        "   blend weights: %s",
        ", ".join(f"{n}={w:.3f}" for n, w in zip(COMBINER_INPUTS, weights, strict=True)),
    )
    _done(stage)
    stage = _stage("pre-ranker: blend of the retrieval scores, head chosen on validation")
    final = blend(torch_runner(combiner, COMBINER_SIGNATURE), stacked)
    preranker, choice = choose_preranker(
        valid.scores, valid.item_item, labels, valid.items, final, valid_es
    )
    by_head = choice["validation_ndcg@10_by_head"]
    log.info(
        "   head %s: validation NDCG@10 %.4f (all %d candidates: %.4f)",
        preranker.head or "all",
        by_head[str(preranker.head)],
        depth,
        by_head["0"],
    )
    _done(stage)
    stage = _stage("similar items: neighbours' alpha chosen on the validation split")
    queries = next_item_queries(split.train, split.valid, n_users)
    alpha, _ = choose_alpha(matrix, queries, retrieval.item_embeddings)
    _done(stage)
    return Trained(
        dataset=dataset,
        split=split,
        features=features,
        retrieval=retrieval,
        index=index,
        rankers=rankers,
        combiner=combiner,
        valid_es=valid_es,
        valid=valid,
        serving_features=build_features(dataset, dataset.interactions),
        item_item=item_item,
        sources=sources,
        similar_alpha=alpha,
        preranker=preranker,
        preranker_choice=choice,
    )


def refit(config: BuildConfig, trained: Trained) -> Trained:
    """The towers, the item-item model and the rankers fit again, with the same settings,
    on every interaction given: what ships. The combiner's blend and the choices made on
    the validation split (EASE's lambda, the neighbours' alpha) are kept."""
    dataset = trained.dataset
    everything, features = dataset.interactions, trained.serving_features
    retrieval, index = _fit_retrieval(config, dataset, everything, features)
    matrix = interaction_matrix(everything, len(dataset.users), len(dataset.items))
    item_item = trained.item_item.refit(matrix)
    sources = Sources.build(retrieval, index, features, item_item, matrix, dataset.users)
    rankers = _fit_rankers(config, dataset, everything, features, sources)
    return replace(
        trained,
        features=features,
        retrieval=retrieval,
        index=index,
        rankers=rankers,
        item_item=item_item,
        sources=sources,
        fit_on="all interactions",
    )


def _fit_retrieval(
    config: BuildConfig, dataset: Dataset, part: Interactions, features: FeatureTables
) -> tuple[RetrievalModel, ItemIndex]:
    stage = _stage("retrieval: two-tower, in-batch softmax with log-Q correction")
    retrieval = train_retrieval(
        part,
        features,
        len(dataset.users),
        len(dataset.items),
        seed=config.seed,
        config=RetrievalConfig(epochs=config.retrieval_epochs),
        progress=config.progress,
    )
    _done(stage)
    return retrieval, ItemIndex(retrieval.item_embeddings)


def _fit_rankers(
    config: BuildConfig,
    dataset: Dataset,
    part: Interactions,
    features: FeatureTables,
    sources: Sources,
) -> dict[str, nn.Module]:
    """Both rankers on ``part``'s positives, negatives half from each user's merged
    candidates (what serving asks them to order) and half uniform."""
    n_users, n_items = len(dataset.users), len(dataset.items)
    rng = np.random.default_rng(config.seed)
    ranking = RankingConfig(epochs=config.ranking_epochs)
    seen = seen_by_user(part, n_users)
    depth = min(config.candidates, n_items)

    def pools(users: IntArray) -> IntArray:
        return sources.gather(users, [seen[u] for u in users], depth).items

    pairs = labelled_pairs(
        part,
        part,
        n_items,
        rng,
        ranking.negatives_per_positive,
        pools=pools,
        pool_share=ranking.candidate_negatives,
    )
    rankers: dict[str, nn.Module] = {}
    for name, model in (
        (RANKER_DCN, DCNRanker(n_users, n_items, features.layout)),
        (RANKER_MLP, MLPRanker(n_users, n_items, features.layout)),
    ):
        stage = _stage(f"ranking: {name} on {len(pairs):,} labelled pairs")
        rankers[name] = train_ranker(
            name, model, pairs, features, seed=config.seed, config=ranking, progress=config.progress
        )
        _done(stage)
    return rankers


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float made None: JSON has no NaN, and a metric
    with nothing to measure (an AUC over users with no negative) is absent, not a number."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def evaluate(trained: Trained, config: BuildConfig) -> dict[str, Any]:
    """Test-split metrics of the held-out fit: retrieval (merged, and per source), each
    ranker, the combiner (the pipeline), the baselines (popularity, EASE, item-kNN) and the
    similar-items surface; NaN where there was nothing to measure."""
    split, features = trained.split, trained.features
    n_users = len(trained.dataset.users)
    es = eval_set(split.test, concat(split.train, split.valid), n_users)
    depth = min(config.candidates, len(trained.dataset.items))
    found = trained.sources.gather(es.users, es.exclude, depth)
    user_emb = trained.retrieval.user_embeddings(features, es.users)
    towers = trained.index.search(user_emb, depth, es.exclude)
    exact = ItemIndex(trained.retrieval.item_embeddings, exact=True).search(
        user_emb, depth, es.exclude
    )
    segments = trained.sources.segment_popular(es.users, es.exclude, depth)
    report: dict[str, Any] = {
        "users_evaluated": len(es.users),
        "candidates": depth,
        "popularity": retrieval_metrics(popularity_ranking(features, es, depth), es),
        "segment_popularity": retrieval_metrics(segments, es),
        **baseline_metrics(trained, es),
        "two_tower": {
            **retrieval_metrics(towers, es),
            "ann_recall@100_vs_exact": _overlap(towers[:, :100], exact[:, :100]),
        },
        "retrieval_exact": retrieval_metrics(exact, es),
        "retrieval": {
            **retrieval_metrics(found.items, es),
            "sources": {
                name: {
                    "share": float(
                        (found.found_by(name) >= 0).sum() / max((found.items >= 0).sum(), 1)
                    ),
                    **retrieval_metrics(found.found_by(name), es),
                }
                for name in SOURCES
            },
        },
    }
    runners = {
        n: torch_runner(m, ranker_signature(features.layout)) for n, m in trained.rankers.items()
    }
    stacked = stage_scores(runners, features, found)
    for column, name in enumerate(RANKERS):
        report[name] = ranking_metrics(found.items, stacked[..., column], es)
    combined = blend(torch_runner(trained.combiner, COMBINER_SIGNATURE), stacked)
    report[COMBINER] = ranking_metrics(found.items, combined, es)
    # What is served: only the pre-ranker's head is ranked.
    pre = trained.preranker
    prerank = pre.scores(found.scores, found.item_item)
    kept = np.where(head_mask(prerank, pre.head), combined, np.nan)
    report["pipeline"] = ranking_metrics(found.items, kept, es)
    report["preranker"] = {
        **trained.preranker_choice,
        "test_ndcg@10_by_head": {
            str(h): v for h, v in head_metrics(found.items, combined, prerank, es).items()
        },
        "test_ndcg@10_all_candidates": report[COMBINER]["ndcg@10"],
    }
    report["similar_items"] = similar_items_metrics(trained)
    return report


def baseline_metrics(trained: Trained, es: EvalSet) -> dict[str, Any]:
    """EASE and item-kNN, fit on the models' training interactions, ranking the whole
    catalogue minus what each user has seen, as the popularity baseline does; EASE's
    regularisation is chosen on the validation split."""
    matrix, source, depth = trained.train_matrix, trained.item_item, trained.valid.items.shape[1]
    ranked = source.rank(matrix, es.users, es.exclude, depth)
    out: dict[str, Any] = {source.name: {**retrieval_metrics(ranked, es), **source.detail}}
    if source.name != "item_knn":  # EASE is the pipeline's source: item-kNN beside it
        knn = ItemItem("item_knn", fit_item_knn(matrix), {"neighbours": 100})
        ranked = knn.rank(matrix, es.users, es.exclude, depth)
        out[knn.name] = {**retrieval_metrics(ranked, es), **knn.detail}
    return out


def similar_items_metrics(trained: Trained) -> dict[str, Any]:
    """The similar-items rule against item-kNN, the embeddings alone and popularity: each
    test user's latest liked item asks for ten items, and the items they liked next are the
    right answers (:mod:`training.similar`)."""
    split, matrix = trained.split, trained.train_matrix
    queries = next_item_queries(
        concat(split.train, split.valid), split.test, len(trained.dataset.users)
    )
    embeddings = trained.retrieval.item_embeddings
    neighbours = fit_neighbours(matrix, trained.similar_alpha)
    return {
        "queries": len(queries.items),
        "alpha": trained.similar_alpha,
        "cascade": similar_metrics(rank_similar(queries, neighbours, embeddings), queries),
        "item_knn": similar_metrics(rank_similar(queries, fit_item_knn(matrix), None), queries),
        "embeddings": similar_metrics(rank_similar(queries, None, embeddings), queries),
        "popularity": similar_metrics(
            popular_similar(queries, trained.features.item_popularity), queries
        ),
    }


def losses(evaluation: dict[str, Any]) -> dict[str, float]:
    """The baselines whose test NDCG@10 beats the pipeline's, with theirs."""
    pipeline = float(evaluation["pipeline"]["ndcg@10"])
    return {
        name: float(evaluation[name]["ndcg@10"])
        for name in BASELINES
        if name in evaluation and float(evaluation[name]["ndcg@10"]) > pipeline
    }


def _overlap(a: IntArray, b: IntArray) -> float:
    found = [
        len(np.intersect1d(x[x >= 0], y[y >= 0])) / max((y >= 0).sum(), 1)
        for x, y in zip(a, b, strict=True)
    ]
    return float(np.mean(found))


@dataclass(frozen=True)
class ShipCandidate:
    """A model as it goes into the repository, with what the gate needs to judge it."""

    spec: ModelConfigSpec
    module: nn.Module
    calibration: Callable[[], Iterator[Feed]]
    parity_feeds: tuple[Feed, ...]
    #: NDCG@10 on the validation split with the model's ONNX file served by onnxruntime.
    gate_metric: Callable[[Path], float] | None
    speed_feed: Callable[[int], Feed]


def _ort(path: Path) -> Runner:
    return onnx_runner(session(path, threads=1))


def ship_candidates(trained: Trained, config: BuildConfig) -> list[ShipCandidate]:
    features = trained.features
    n_users = len(trained.dataset.users)
    rng = np.random.default_rng(config.seed + 1)
    dim = trained.retrieval.item_embeddings.shape[1]
    tower_sig = user_tower_signature(features.layout, dim)
    ranker_sig = ranker_signature(features.layout)
    threads = {"intra_op_thread_count": "1"}

    valid_es = trained.valid_es
    valid_candidates = trained.valid.items
    depth = valid_candidates.shape[1]

    speed = random_feeds(features, rng)

    def tower_calibration() -> Iterator[Feed]:
        calib = np.random.default_rng(config.seed + 2)
        for _ in range(8):
            yield user_feed(features, calib.integers(0, n_users, size=64))

    def ranker_calibration() -> Iterator[Feed]:
        # Real (user, candidate) pairs: what the ranker sees in serving.
        calib = np.random.default_rng(config.seed + 3)
        for _ in range(16):
            rows = calib.integers(0, len(valid_es.users), size=256)
            cols = calib.integers(0, valid_candidates.shape[1], size=256)
            items = valid_candidates[rows, cols]
            keep = items >= 0
            yield ranker_feed(features, valid_es.users[rows][keep], items[keep])

    def tower_metric(path: Path) -> float:
        emb = _ort(path)(user_feed(features, valid_es.users))
        return retrieval_metrics(trained.index.search(emb, depth, valid_es.exclude), valid_es)[
            "ndcg@10"
        ]

    def ranker_metric(path: Path) -> float:
        scores = score_candidates(_ort(path), features, valid_es.users, valid_candidates)
        return ranking_metrics(valid_candidates, scores, valid_es)["ndcg@10"]

    def parity(make: Callable[[int], Feed]) -> tuple[Feed, ...]:
        return (make(1), make(257))

    out = [
        ShipCandidate(
            ModelConfigSpec(USER_TOWER, tower_sig, parameters=threads),
            trained.retrieval.user_tower,
            tower_calibration,
            parity(speed["user_tower"]),
            tower_metric,
            speed["user_tower"],
        )
    ]
    for name in RANKERS:
        out.append(
            ShipCandidate(
                ModelConfigSpec(
                    name,
                    ranker_sig,
                    preferred_batch_sizes=(256, 1024),
                    max_batch_size=4096,
                    parameters=threads,
                ),
                trained.rankers[name],
                ranker_calibration,
                parity(speed["ranker"]),
                ranker_metric,
                speed["ranker"],
            )
        )
    out.append(
        ShipCandidate(
            ModelConfigSpec(
                COMBINER,
                COMBINER_SIGNATURE,
                preferred_batch_sizes=(256, 1024),
                max_batch_size=4096,
                parameters=threads,
            ),
            trained.combiner,
            lambda: iter(()),
            parity(speed["combiner"]),
            None,  # five parameters: nothing for INT8 to speed up, so it is not quantized
            speed["combiner"],
        )
    )
    return out


def ship(candidate: ShipCandidate, directory: Path, tolerance: float) -> ModelOutcome:
    """Export, check parity, quantize and gate; the shipped file becomes ``model.onnx``.

    The candidate that did not ship stays beside it (``model.fp32.onnx`` or
    ``model.int8.onnx``) so the decision can be audited and benchmarked later.
    """
    name = candidate.spec.name
    paths = {"fp32": directory / "model.fp32.onnx"}
    export_onnx(
        candidate.module, candidate.spec.signature, paths["fp32"], candidate.parity_feeds[0]
    )
    error = max(check_parity(candidate.module, paths["fp32"], f) for f in candidate.parity_feeds)
    log.info("   %s: exported, parity max abs error %.2e", name, error)
    gate: GateResult | None = None
    if candidate.gate_metric is not None:
        paths["int8"] = directory / "model.int8.onnx"
        layers = QUANTIZED_LAYERS.get(type(candidate.module).__name__)
        quantize_int8(paths["fp32"], paths["int8"], candidate.calibration(), layers=layers)
        metric = candidate.gate_metric
        probe = candidate.parity_feeds[-1]
        agree = agreement(_ort(paths["fp32"])(probe), _ort(paths["int8"])(probe))
        gate = int8_gate(
            metric(paths["fp32"]), metric(paths["int8"]), tolerance, "ndcg10", agreement=agree
        )
        log.info("   %s: %s", name, gate.reason)
    shipped = gate.shipped if gate else "fp32"
    os.replace(paths[shipped], directory / "model.onnx")
    paths[shipped] = directory / "model.onnx"
    speed = measure_speed(paths, candidate.speed_feed, repeats=20)
    return ModelOutcome(name, gate, error, speed)


def measure_speed(
    paths: dict[str, Path], make: Callable[[int], Feed], repeats: int
) -> dict[str, float]:
    """p50 latency in ms of each precision at batch 1 and 1000, one intra-op thread."""
    out: dict[str, float] = {}
    for label, path in paths.items():
        for batch in (1, 1000):
            timing = time_session(path, make(batch), repeats=repeats, warmup=max(3, repeats // 10))
            out[f"{label}_ms_b{batch}"] = float(timing["p50_ms"])
    return out


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return __version__
    return f"{__version__}+g{sha}"


def write_serving_artifacts(trained: Trained, directory: Path) -> None:
    """What the retrieval stage needs beside the tower: the item index and the feature tables."""
    np.save(directory / "item_embeddings.npy", trained.retrieval.item_embeddings)
    trained.index.save(directory / ITEM_INDEX_FILE)
    trained.serving_features.save(directory / FEATURES_FILE)
    ids = {"users": trained.dataset.users.ids, "items": trained.dataset.items.ids}
    (directory / IDS_FILE).write_text(json.dumps(ids))
    users, items = trained.dataset.users, trained.dataset.items
    catalog = {
        "genres": list(items.genre_vocab),
        "titles": list(items.title),
        "users": {
            "age": [int(a) for a in users.age],
            "gender": [users.gender_vocab[c] for c in users.gender],
            "occupation": [users.occupation_vocab[c] for c in users.occupation],
        },
    }
    (directory / CATALOG_FILE).write_text(json.dumps(catalog))
    # Everything each user has rated, in any split: serving never recommends it again.
    events = trained.dataset.interactions
    order = np.lexsort((events.item, events.user))
    pairs = np.unique(np.stack([events.user[order], events.item[order]], axis=1), axis=0)
    indptr = np.searchsorted(pairs[:, 0], np.arange(len(users) + 1)).astype(np.int64)
    np.savez_compressed(directory / SEEN_FILE, indptr=indptr, indices=pairs[:, 1].astype(np.int64))


def write_item_item(trained: Trained, directory: Path) -> None:
    """The combiner's item-item weights, fit on what the shipped models were fit on (every
    interaction given, after :func:`refit`): a user's newest items count in their scores."""
    trained.item_item.save(directory / ITEM_ITEM_FILE)


def write_similar(trained: Trained, directory: Path) -> None:
    """The similar-items neighbours, beside the item embeddings they are served with."""
    neighbours = fit_neighbours(trained.train_matrix, trained.similar_alpha)
    sparse.save_npz(directory / SIMILAR_FILE, neighbours)


def run_build(config: BuildConfig) -> BuildResult:
    """The whole build. The repository is opened first, so a bad ``--out`` fails in seconds."""
    started = time.perf_counter()
    repo = ModelRepository(config.out, keep_versions=config.keep_versions)
    stage = _stage("data")
    dataset = load_dataset(config)
    log.info("   %s (sha256 %s…)", dataset.summary(), dataset.sha256[:12])
    _done(stage)
    trained = train_all(config, dataset)
    return publish(config, trained, repo, started=started)


def publish(
    config: BuildConfig,
    trained: Trained,
    repo: ModelRepository | None = None,
    *,
    started: float | None = None,
) -> BuildResult:
    """Evaluate trained models, then export, gate and commit them as one repository version."""
    started = time.perf_counter() if started is None else started
    repo = repo or ModelRepository(config.out, keep_versions=config.keep_versions)
    dataset = trained.dataset
    stage = _stage("evaluation on the test split")
    evaluation = evaluate(trained, config)
    _done(stage)
    pipeline = evaluation["pipeline"]["ndcg@10"]
    lost = losses(evaluation)
    for name, theirs in lost.items():
        log.warning("   the pipeline loses to %s: NDCG@10 %.4f vs %.4f", name, pipeline, theirs)
    refused = [name for name in config.require_beats if name in lost]
    if refused:
        raise QualityError(
            f"nothing shipped: the pipeline's test NDCG@10 {pipeline:.4f} does not beat "
            + ", ".join(f"{name} ({lost[name]:.4f})" for name in refused)
            + " (--require-beats)"
        )
    shipped = trained
    if config.refit:
        stage = _stage(f"refit on all {len(dataset.interactions):,} interactions")
        shipped = refit(config, trained)
        _done(stage)
    outcomes: dict[str, ModelOutcome] = {}
    with repo.begin() as txn:
        stage = _stage(
            f"export, INT8 gate (tolerance {config.int8_tolerance:.1%}) and version {txn.version}"
        )
        for candidate in ship_candidates(shipped, config):
            directory = txn.model_dir(candidate.spec)
            outcome = ship(candidate, directory, config.int8_tolerance)
            outcomes[candidate.spec.name] = outcome
            if candidate.spec.name == USER_TOWER:
                write_serving_artifacts(shipped, directory)
                write_similar(shipped, directory)
            if candidate.spec.name == COMBINER:
                write_item_item(shipped, directory)
                shipped.preranker.save(directory / PRERANKER_FILE)
            manifest = _manifest(config, shipped, evaluation, outcome)
            txn.set_manifest(candidate.spec.name, finite(manifest))
        ship_ranking(txn, shipped, config)
        txn.commit()
        version = txn.version
        _done(stage)
    result = BuildResult(
        version=version,
        dataset=dataset.name,
        evaluation=evaluation,
        models=outcomes,
        report_path=_write_report(config, dataset, version, evaluation, outcomes),
        seconds=time.perf_counter() - started,
    )
    return result


def ship_ranking(txn: Transaction, trained: Trained, config: BuildConfig) -> None:
    """The one-call ranking model, composed from the rankers and combiner just staged, checked
    against them on validation candidates, with the bytes and time of one request both ways."""
    features = trained.serving_features
    spec = ModelConfigSpec(
        RANKING,
        ranking_signature(features.layout.user_dim, item_item=True),
        max_batch_size=0,
        dynamic_batching=False,
        parameters={"intra_op_thread_count": "1"},
    )
    directory = txn.model_dir(spec)
    staged = {name: txn.model_dir_of(name) / MODEL_FILENAME for name in (*RANKERS, COMBINER)}
    signature = fuse_ranking(
        {name: staged[name] for name in RANKERS},
        staged[COMBINER],
        features.item_dense,
        directory / MODEL_FILENAME,
    )
    if signature != spec.signature:  # a combiner of three scores: not what this build fits
        raise ExportError(f"{RANKING}: composed signature differs from {spec.signature}")
    check = check_fused(directory / MODEL_FILENAME, staged, features, trained.valid)
    log.info(
        "   %s: rankers and combiner in one graph, max abs error %.2e vs the separate models; "
        "one request of %d candidates sends %s bytes instead of %s",
        RANKING,
        check["max_abs_error"],
        check["candidates"],
        f"{check['bytes_one_call']:,}",
        f"{check['bytes_separate']:,}",
    )
    txn.set_manifest(
        RANKING,
        finite(
            {
                "dataset": trained.dataset.name,
                "data_sha256": trained.dataset.sha256,
                "code_version": code_version(),
                "seed": config.seed,
                "composed_of": {name: txn.version for name in (*RANKERS, COMBINER, USER_TOWER)},
                "item_table": {"rows": int(features.item_dense.shape[0] + 1), "row_0": "zeros"},
                "parity": check,
            }
        ),
    )


def _manifest(
    config: BuildConfig, trained: Trained, evaluation: dict[str, Any], outcome: ModelOutcome
) -> dict[str, Any]:
    dataset = trained.dataset
    metrics_key = "retrieval" if outcome.name == USER_TOWER else outcome.name
    return {
        "dataset": dataset.name,
        "data_sha256": dataset.sha256,
        "code_version": code_version(),
        "seed": config.seed,
        "config": json.loads(config.model_dump_json()),
        "data": {
            "interactions": len(dataset.interactions),
            "trained_on": trained.fit_on,
            "train_interactions": len(trained.split.train),
            "evaluated_on": "test split, by the same models fit on the train split only",
            "kept_from_the_held_out_fit": [
                "combiner blend",
                f"{trained.item_item.name} settings",
                "similar-items alpha",
            ],
            "served_features_from": "all interactions",
        },
        "metrics": {
            "test": evaluation[metrics_key],
            "pipeline": evaluation["pipeline"],
            **{name: evaluation[name] for name in BASELINES if name in evaluation},
        },
        **({"preranker": evaluation["preranker"]} if outcome.name == COMBINER else {}),
        "parity_max_abs_error": outcome.parity_max_abs_error,
        "quantization": {**asdict(outcome.gate), "machine": machine()}
        if outcome.gate
        else {
            "shipped": "fp32",
            "reason": "not quantized: a five-parameter blend has nothing for INT8 to speed up",
        },
        "speed_ms": outcome.speed_ms,
    }


def _write_report(
    config: BuildConfig,
    dataset: Dataset,
    version: int,
    evaluation: dict[str, Any],
    outcomes: dict[str, ModelOutcome],
) -> Path:
    report = {
        "version": version,
        "dataset": dataset.name,
        "data_sha256": dataset.sha256,
        "code_version": code_version(),
        "seed": config.seed,
        "evaluation": evaluation,
        "models": {
            name: {
                "quantization": asdict(o.gate) if o.gate else None,
                "parity_max_abs_error": o.parity_max_abs_error,
                "speed_ms": o.speed_ms,
            }
            for name, o in outcomes.items()
        },
    }
    config.report_dir.mkdir(parents=True, exist_ok=True)
    path = config.report_dir / f"evaluation-v{version}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(finite(report), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    latest = config.report_dir / "evaluation.json"
    shutil.copyfile(path, latest)
    return path
