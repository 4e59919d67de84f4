"""A real build end to end: repository layout, configs against ONNX, manifests, versions,
reproducibility, and what a killed build leaves behind."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from contract.model_config import parse_config
from contract.names import COMBINER, RANKERS, USER_TOWER
from contract.ranking import PRERANKER_FILE, RANKING, Preranker
from tests.integration.conftest import SmallConfig
from training.build import BuildConfig, BuildResult, Trained, run_build
from training.feeds import ranker_feed
from training.fused import fused_feed
from training.model_config import check_config_matches_onnx
from training.onnx_export import session
from training.preranker import HEADS, TOLERANCE
from training.quantization import INT8_INSTRUCTIONS
from training.repository import ModelRepository

MODELS = (USER_TOWER, *RANKERS, COMBINER)


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_build_writes_every_model_as_one_version(built: tuple[BuildConfig, BuildResult]) -> None:
    config, result = built
    repo = ModelRepository(config.out)
    assert repo.models() == sorted((*MODELS, RANKING))
    for name in MODELS:
        assert repo.versions(name) == [result.version]
        directory = repo.version_dir(name, result.version)
        config_pb = parse_config(config.out / name / "config.pbtxt")
        assert config_pb.platform == "onnxruntime_onnx"
        assert config_pb.max_batch_size > 0
        assert config_pb.dynamic_batching.max_queue_delay_microseconds > 0
        check_config_matches_onnx(config_pb, directory / "model.onnx")
        model = onnx.load(str(directory / "model.onnx"))
        assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}
        assert not list(directory.glob("*.data"))  # one self-contained file
        session(directory / "model.onnx")  # loads in onnxruntime


def test_manifest_is_the_registry_record(built: tuple[BuildConfig, BuildResult]) -> None:
    config, result = built
    repo = ModelRepository(config.out)
    for name in MODELS:
        manifest = repo.manifest(name, result.version)
        assert manifest["data_sha256"].startswith("synthetic:")
        assert manifest["seed"] == config.seed
        assert manifest["code_version"]
        assert manifest["parity_max_abs_error"] <= 1e-4
        shipped = manifest["quantization"]["shipped"]
        assert shipped in ("int8", "fp32")
        model_file = repo.version_dir(name, result.version) / "model.onnx"
        assert manifest["model_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
        ops = {n.op_type for n in onnx.load(str(model_file)).graph.node}
        assert ("QuantizeLinear" in ops) == (shipped == "int8")
        if name != COMBINER:
            gate = manifest["quantization"]
            assert gate["passed"] == (shipped == "int8")
            assert gate["tolerance"] == config.int8_tolerance
            assert gate["machine"]["int8_instructions"] in (*INT8_INSTRUCTIONS, "unknown")
    tower = repo.version_dir(USER_TOWER, result.version)
    for artifact in ("item_index.faiss", "item_embeddings.npy", "features.npz", "ids.json"):
        assert (tower / artifact).is_file()


def test_evaluation_report_beats_popularity_on_learnable_data(
    built: tuple[BuildConfig, BuildResult],
) -> None:
    _, result = built
    report = json.loads(result.report_path.read_text())
    ev = report["evaluation"]
    assert ev["retrieval"]["recall@100"] > ev["popularity"]["recall@100"]
    assert ev["pipeline"]["ndcg@10"] > ev["popularity"]["ndcg@10"]
    for name in RANKERS:
        assert 0.5 < ev[name]["auc"] <= 1.0
    assert ev["two_tower"]["ann_recall@100_vs_exact"] > 0.95


def test_one_call_model_scores_what_the_separate_models_do(
    built: tuple[BuildConfig, BuildResult], trained: tuple[BuildConfig, Trained]
) -> None:
    """The composed model, run by onnxruntime on real candidates, against the shipped
    rankers and combiner run one by one on the wide feed the separate path sends."""
    config, result = built
    _, models = trained
    repo = ModelRepository(config.out)
    version = result.version
    directory = repo.version_dir(RANKING, version)
    config_pb = parse_config(config.out / RANKING / "config.pbtxt")
    assert config_pb.max_batch_size == 0  # users and candidates have lengths of their own
    check_config_matches_onnx(config_pb, directory / "model.onnx")
    manifest = repo.manifest(RANKING, version)
    assert manifest["composed_of"] == {n: version for n in (*RANKERS, COMBINER, USER_TOWER)}
    assert manifest["parity"]["max_abs_error"] <= 1e-4
    assert manifest["parity"]["bytes_one_call"] * 10 < manifest["parity"]["bytes_separate"]

    features, found = models.serving_features, models.valid
    users, items = found.users[:5], found.items[:5]
    one_call = session(directory / "model.onnx").run(
        None, fused_feed(features, users, items, found.scores[:5], found.item_item[:5])
    )[0][:, 0]
    valid = items >= 0
    owners = np.broadcast_to(users[:, None], items.shape)[valid]
    wide = ranker_feed(features, owners, items[valid])
    logits = [
        session(repo.version_dir(n, version) / "model.onnx").run(None, wide)[0] for n in RANKERS
    ]
    scores = np.concatenate(
        [*logits, found.scores[:5][valid][:, None], found.item_item[:5][valid][:, None]], axis=1
    ).astype(np.float32)
    expected = session(repo.version_dir(COMBINER, version) / "model.onnx").run(
        None, {"scores": scores}
    )[0][:, 0]
    np.testing.assert_allclose(one_call, expected, atol=1e-5)


def test_preranker_head_keeps_the_pipeline_within_its_tolerance(
    built: tuple[BuildConfig, BuildResult],
) -> None:
    config, result = built
    repo = ModelRepository(config.out)
    preranker = Preranker.load(repo.version_dir(COMBINER, result.version) / PRERANKER_FILE)
    assert preranker.head in (0, *HEADS)
    ev = json.loads(result.report_path.read_text())["evaluation"]
    choice = ev["preranker"]
    assert choice["head"] == preranker.head
    by_head = choice["validation_ndcg@10_by_head"]
    assert by_head[str(preranker.head)] >= (1 - TOLERANCE) * by_head["0"]
    smaller = [h for h in HEADS if h < preranker.head and str(h) in by_head]
    assert all(by_head[str(h)] < (1 - TOLERANCE) * by_head["0"] for h in smaller)
    # What is served (the head) is what "pipeline" reports, beside ranking every candidate.
    assert ev["pipeline"]["ndcg@10"] == choice["test_ndcg@10_by_head"][str(preranker.head)]
    assert choice["test_ndcg@10_all_candidates"] == ev[COMBINER]["ndcg@10"]


def test_next_build_adds_a_version_and_is_reproducible(
    built: tuple[BuildConfig, BuildResult],
) -> None:
    config, first = built
    second = run_build(config)
    assert second.version == first.version + 1
    repo = ModelRepository(config.out)
    for name in MODELS:
        assert repo.versions(name) == [first.version, second.version]
    # Same data, seed and code: the same models and the same metrics.
    assert second.evaluation == first.evaluation
    for name in (USER_TOWER, *RANKERS):
        a = repo.version_dir(name, first.version)
        b = repo.version_dir(name, second.version)
        fp32_a = a / ("model.fp32.onnx" if (a / "model.fp32.onnx").exists() else "model.onnx")
        fp32_b = b / ("model.fp32.onnx" if (b / "model.fp32.onnx").exists() else "model.onnx")
        weights_a = {
            i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(fp32_a)).graph.initializer
        }
        weights_b = {
            i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(fp32_b)).graph.initializer
        }
        assert weights_a.keys() == weights_b.keys()
        assert all(np.array_equal(weights_a[k], weights_b[k]) for k in weights_a)


#: The build, in a child process that SIGKILLs itself at the last moment before it commits:
#: every model exported, validated and staged, the commit journal not yet written. The
#: repository writer's ``Transaction._write_journal`` is the seam, so where the build dies does
#: not depend on timing.
KILLED_BEFORE_COMMIT = """
import os, signal, sys
import training.repository as r
from training.build import BuildConfig, run_build

def die(*_):
    os.kill(os.getpid(), signal.SIGKILL)

r.Transaction._write_journal = die
run_build(BuildConfig.model_validate_json(sys.argv[1]))
"""


def test_killed_build_leaves_the_repository_as_it_was(
    tmp_path: Path, small_config: SmallConfig, built: tuple[BuildConfig, BuildResult]
) -> None:
    # The models' quality does not matter here, only that every one of them is staged.
    config = small_config(tmp_path, retrieval_epochs=1, ranking_epochs=1)
    repo_root = config.out
    shutil.copytree(built[0].out, repo_root)  # an existing repository with a version
    versions = ModelRepository(repo_root).versions(USER_TOWER)
    before = tree(repo_root)
    log = tmp_path / "child.log"
    with log.open("wb") as sink:
        child = subprocess.run(
            [sys.executable, "-c", KILLED_BEFORE_COMMIT, config.model_dump_json()],
            cwd=Path(__file__).resolve().parents[2],
            stdout=sink,
            stderr=sink,
            timeout=600,
            check=False,
        )
    assert child.returncode == -signal.SIGKILL, log.read_text()
    assert tree(repo_root) == before
    staging = repo_root.parent / f".{repo_root.name}-staging"
    (txn,) = [p for p in staging.iterdir() if p.is_dir() and p.name.startswith("txn-")]
    assert sorted(p.name for p in (txn / "models").iterdir()) == sorted((*MODELS, RANKING))
    assert ModelRepository(repo_root).versions(USER_TOWER) == versions  # recovery adds nothing
    assert tree(repo_root) == before
    assert not txn.exists()  # and discards the dead build's staging


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("user_id,item_id,timestamp\nu1,i1,10\nu1,i2,x\n", 3, "timestamp"),
        ("user_id,item_id,rating,timestamp\nu1,i1,5\n", 2, None),
    ],
)
def test_cli_reports_bad_data_with_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str | None
) -> None:
    path = tmp_path / "logs.csv"
    path.write_text(text)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "contract.cli",
            "build",
            "--interactions",
            str(path),
            "-q",
            "--out",
            str(tmp_path / "repo"),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert done.returncode == 2
    assert f"{path}, line {line}" in done.stderr
    if field:
        assert f"field {field!r}" in done.stderr
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_served_features_hold_every_event_given_and_the_report_the_baselines(
    trained: tuple[BuildConfig, Trained], built: tuple[BuildConfig, BuildResult]
) -> None:
    """Evaluation reads features cut at the training split; serving gets every event, so a
    user's newest positives (in the test period) are in the history the towers are served."""
    from contract.features import load_features
    from training.features import recent_history
    from training.split import positives

    config, result = built
    tables = trained[1]
    served = load_features(
        ModelRepository(config.out).version_dir(USER_TOWER, result.version) / "features.npz"
    )
    everything = tables.dataset.interactions
    assert np.array_equal(served.history, recent_history(everything, len(tables.dataset.users)))
    newest = positives(tables.split.test)
    assert len(newest) > 0
    user, item = int(newest.user[-1]), int(newest.item[-1])
    assert item + 1 in served.history[user]
    assert item + 1 not in tables.features.history[user]  # what evaluation saw stops earlier
    manifest = ModelRepository(config.out).manifest(USER_TOWER, result.version)
    assert manifest["data"]["served_features_from"] == "all interactions"
    # The combiner's item-item weights, refit on every event, score as training's would.
    from inference.graph.item_item import ItemItemScores
    from training.baselines import interaction_matrix

    combiner_dir = ModelRepository(config.out).version_dir(COMBINER, result.version)
    weights = ItemItemScores.load(combiner_dir)
    assert weights is not None
    n_users, n_items = len(tables.dataset.users), len(tables.dataset.items)
    matrix = interaction_matrix(everything, n_users, n_items)
    expected = tables.item_item.refit(matrix).scores(matrix, np.array([user]))[0]
    seen = matrix[user].indices.astype(np.int64)
    np.testing.assert_allclose(weights.scores(seen, np.arange(n_items)), expected, rtol=1e-4)
    report = json.loads(result.report_path.read_text())["evaluation"]
    for baseline in ("ease", "item_knn"):
        assert 0.0 < report[baseline]["ndcg@10"] <= 1.0
    assert report["ease"]["lambda"] > 0


def test_shipped_models_are_refit_on_everything_and_candidates_come_from_every_source(
    trained: tuple[BuildConfig, Trained], built: tuple[BuildConfig, BuildResult]
) -> None:
    """The evaluation is the held-out fit's; what ships was fit again on every event, and
    the report shows each candidate source and the similar-items surface."""
    from scipy import sparse

    from contract.candidates import SOURCES
    from contract.names import SIMILAR_FILE

    config, result = built
    repo = ModelRepository(config.out)
    for name in MODELS:
        data = repo.manifest(name, result.version)["data"]
        assert data["trained_on"] == "all interactions"
        assert "train split" in data["evaluated_on"]
    # The shipped towers differ from the held-out ones the evaluation used.
    held_out = trained[1].retrieval.item_embeddings
    tower = repo.version_dir(USER_TOWER, result.version)
    assert not np.allclose(np.load(tower / "item_embeddings.npy"), held_out)
    neighbours = sparse.load_npz(tower / SIMILAR_FILE)
    assert neighbours.shape == (held_out.shape[0],) * 2
    assert neighbours.nnz > 0
    assert neighbours.diagonal().sum() == 0
    report = json.loads(result.report_path.read_text())["evaluation"]
    sources = report["retrieval"]["sources"]
    assert set(sources) == set(SOURCES)
    assert all(0.0 < sources[name]["share"] <= 1.0 for name in SOURCES)
    similar = report["similar_items"]
    assert similar["queries"] > 100
    assert similar["cascade"]["ndcg@10"] > similar["item_knn"]["ndcg@10"]
    assert similar["cascade"]["ndcg@10"] > similar["popularity"]["ndcg@10"]
