"""The model repository: config.pbtxt generation/checking, versioning, retention, atomicity."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2

import training.repository as repository
from contract.errors import RepositoryError
from contract.model_config import parse_config
from contract.signature import Signature, TensorSpec
from training.model_config import (
    ModelConfigSpec,
    build_config,
    check_config_matches_onnx,
    render_config,
)
from training.repository import ModelRepository, plan_prune, served_versions

REPO_ROOT = Path(__file__).resolve().parents[3]
SIG = Signature(
    inputs=(TensorSpec("x", "FP32", (4,)),),
    outputs=(TensorSpec("y", "FP32", (2,)),),
)
FIXED_NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def make_onnx(
    path: Path,
    *,
    in_name: str = "x",
    out_name: str = "y",
    in_dims: tuple[int | str, ...] = ("batch", 4),
    out_dims: tuple[int | str, ...] = ("batch", 2),
    in_type: int = TensorProto.FLOAT,
) -> Path:
    """A tiny x[batch,4] @ W[4,2] -> y[batch,2] graph; shapes/types are declared as given."""
    weight = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), name="W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", [in_name, "W"], [out_name])],
        "tiny",
        [helper.make_tensor_value_info(in_name, in_type, list(in_dims))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(out_dims))],
        initializer=[weight],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def spec(name: str, **kwargs: Any) -> ModelConfigSpec:
    return ModelConfigSpec(name=name, signature=SIG, **kwargs)


def open_repo(root: Path, **kwargs: Any) -> ModelRepository:
    return ModelRepository(root, clock=lambda: FIXED_NOW, **kwargs)


def build(
    repo: ModelRepository,
    models: tuple[str, ...] = ("ranker", "retriever"),
    *,
    version: int | None = None,
    **spec_kwargs: Any,
) -> int:
    """Commit one build of ``models``; return its version."""
    with repo.begin(version) as txn:
        for name in models:
            make_onnx(txn.model_dir(spec(name, **spec_kwargs)) / "model.onnx")
            txn.set_manifest(name, {"code_version": "abc123", "metrics": {"auc": 0.75}})
        txn.commit()
    return txn.version


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the sha256 of files ('dir' for directories)."""
    tree: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        tree[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return tree


def staging_entries(repo: ModelRepository) -> list[str]:
    return sorted(p.name for p in repo.staging_root.iterdir() if p.name.startswith("txn-"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "model_repo"


@pytest.fixture
def repo(root: Path) -> ModelRepository:
    return open_repo(root)


@pytest.fixture
def onnx_path(tmp_path: Path) -> Path:
    return make_onnx(tmp_path / "model.onnx")


# ---- config.pbtxt --------------------------------------------------------------------------


def test_config_parses_back_with_every_section() -> None:
    text = render_config(
        spec(
            "ranker",
            max_batch_size=512,
            instance_count=2,
            serve_latest=3,
            parameters={"intra_op_thread_count": "1"},
        )
    )
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.name == "ranker"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 512
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("x", model_config_pb2.TYPE_FP32, [4])
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [("y", [2])]
    assert list(config.dynamic_batching.preferred_batch_size) == [64, 256]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_CPU)
    ]
    assert config.version_policy.WhichOneof("policy_choice") == "latest"
    assert config.version_policy.latest.num_versions == 3
    assert config.parameters["intra_op_thread_count"].string_value == "1"


def test_config_without_batching_has_no_dynamic_batcher() -> None:
    config = build_config(spec("ranker", max_batch_size=0))
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")


def test_scalar_per_example_tensor_uses_reshape(tmp_path: Path) -> None:
    scalar = Signature(inputs=SIG.inputs, outputs=(TensorSpec("y", "FP32", ()),))
    config = build_config(ModelConfigSpec(name="scorer", signature=scalar))
    assert list(config.output[0].dims) == [1]
    assert config.output[0].HasField("reshape")
    check_config_matches_onnx(config, make_onnx(tmp_path / "m.onnx", out_dims=("batch",)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "bad/name"}, "must match"),
        ({"name": "ranker", "max_batch_size": 128}, "preferred_batch_sizes"),
        ({"name": "ranker", "serve_latest": 0}, "serve_latest"),
    ],
)
def test_spec_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(RepositoryError, match=match):
        ModelConfigSpec(signature=SIG, **kwargs)


def test_parse_config_reports_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "config.pbtxt"
    bad.write_text("name: [oops")
    with pytest.raises(RepositoryError, match=r"config\.pbtxt"):
        parse_config(bad)


# ---- config vs ONNX ------------------------------------------------------------------------


def test_config_matches_onnx(onnx_path: Path) -> None:
    check_config_matches_onnx(build_config(spec("ranker")), onnx_path)


@pytest.mark.parametrize(
    ("signature", "onnx_kwargs", "match"),
    [
        (
            Signature((TensorSpec("features", "FP32", (4,)),), SIG.outputs),
            {},
            "'features'",
        ),
        (SIG, {"out_name": "logits"}, "'logits'"),
        (Signature((TensorSpec("x", "INT64", (4,)),), SIG.outputs), {}, "'x'.*TYPE_INT64"),
        (Signature(SIG.inputs, (TensorSpec("y", "FP32", (3,)),)), {}, "'y'.*dims"),
        (Signature(SIG.inputs, (TensorSpec("y", "FP32", (-1,)),)), {}, "'y'.*dims"),
        (SIG, {"in_dims": (8, 4)}, "'x'.*batch axis"),
    ],
    ids=["input-name", "output-name", "dtype", "dims", "fixed-vs-variable", "static-batch"],
)
def test_config_mismatch_names_the_tensor(
    tmp_path: Path, signature: Signature, onnx_kwargs: dict[str, Any], match: str
) -> None:
    path = make_onnx(tmp_path / "model.onnx", **onnx_kwargs)
    config = build_config(ModelConfigSpec(name="ranker", signature=signature))
    with pytest.raises(RepositoryError, match=match):
        check_config_matches_onnx(config, path)


def test_symbolic_dims_match_minus_one(tmp_path: Path) -> None:
    path = make_onnx(tmp_path / "m.onnx", in_dims=("batch", "n"), out_dims=("batch", 2))
    signature = Signature((TensorSpec("x", "FP32", (-1,)),), SIG.outputs)
    check_config_matches_onnx(build_config(ModelConfigSpec("ranker", signature)), path)


def test_static_batch_axis_is_fine_without_batching(tmp_path: Path) -> None:
    path = make_onnx(tmp_path / "m.onnx", in_dims=(8, 4), out_dims=(8, 2))
    signature = Signature((TensorSpec("x", "FP32", (8, 4)),), (TensorSpec("y", "FP32", (8, 2)),))
    config = build_config(ModelConfigSpec("ranker", signature, max_batch_size=0))
    check_config_matches_onnx(config, path)


# ---- versions, manifests, retention --------------------------------------------------------


def test_two_builds_give_one_version_per_build(repo: ModelRepository, root: Path) -> None:
    assert repo.next_version() == 1
    assert build(repo) == 1
    assert build(repo) == 2
    assert repo.models() == ["ranker", "retriever"]
    assert repo.versions("ranker") == repo.versions("retriever") == [1, 2]
    assert repo.next_version() == 3
    assert repo.config("ranker").version_policy.latest.num_versions == 2
    assert sorted(p.name for p in root.iterdir()) == ["ranker", "retriever"]
    assert staging_entries(repo) == []


def test_next_version_spans_models(repo: ModelRepository) -> None:
    build(repo, ("ranker",))
    build(repo, ("ranker",))
    assert build(repo, ("retriever",)) == 3
    assert repo.versions("retriever") == [3]


def test_manifest_records_build(repo: ModelRepository) -> None:
    build(repo)
    manifest = repo.manifest("ranker", 1)
    onnx_bytes = (repo.version_dir("ranker", 1) / "model.onnx").read_bytes()
    assert manifest == {
        "code_version": "abc123",
        "metrics": {"auc": 0.75},
        "model": "ranker",
        "version": 1,
        "committed_at": "2024-05-01T12:00:00+00:00",
        "model_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
    }


def test_list_registry(repo: ModelRepository) -> None:
    for _ in range(3):
        build(repo, ("ranker",))
    rows = repo.list_registry()
    assert [(r["model"], r["version"], r["served"]) for r in rows] == [
        ("ranker", 1, False),
        ("ranker", 2, True),
        ("ranker", 3, True),
    ]
    assert all(r["code_version"] == "abc123" for r in rows)


def test_existing_version_is_refused(repo: ModelRepository) -> None:
    build(repo)
    with repo.begin(1) as txn, pytest.raises(RepositoryError, match="already exists"):
        txn.model_dir(spec("ranker"))
    assert staging_entries(repo) == []


def test_version_taken_between_stage_and_commit_is_refused(repo: ModelRepository) -> None:
    with repo.begin() as txn:
        make_onnx(txn.model_dir(spec("ranker")) / "model.onnx")
        build(repo, ("ranker",), version=txn.version)  # a concurrent build wins the number
        with pytest.raises(RepositoryError, match="already exists"):
            txn.commit()
    assert repo.versions("ranker") == [1]
    assert staging_entries(repo) == []


def test_retention_prunes_oldest(root: Path) -> None:
    repo = open_repo(root, keep_versions=3)
    for _ in range(5):
        build(repo)
    assert repo.versions("ranker") == repo.versions("retriever") == [3, 4, 5]
    assert repo.next_version() == 6
    assert staging_entries(repo) == []


def test_retention_never_prunes_served_versions(root: Path) -> None:
    repo = open_repo(root, keep_versions=1)
    for _ in range(4):
        build(repo, ("ranker",), serve_latest=3)
    assert repo.versions("ranker") == [2, 3, 4]


def test_prune_plan_and_served_versions() -> None:
    assert plan_prune([1, 2, 3, 4, 5], served={4, 5}, keep_versions=3) == [1, 2]
    assert plan_prune([1, 2, 3, 4, 5], served={1, 5}, keep_versions=2) == [2, 3]
    assert plan_prune([2], served=set(), keep_versions=3) == []
    config = build_config(spec("ranker", serve_latest=2))
    assert served_versions(config, [1, 3, 7]) == {3, 7}
    config.version_policy.specific.versions.extend([1, 9])
    assert served_versions(config, [1, 3, 7]) == {1}
    config.version_policy.all.SetInParent()
    assert served_versions(config, [1, 3]) == {1, 3}


def test_manifest_rules(repo: ModelRepository) -> None:
    with repo.begin() as txn:
        with pytest.raises(RepositoryError, match="model_dir"):
            txn.set_manifest("ranker", {})
        txn.model_dir(spec("ranker"))
        with pytest.raises(RepositoryError, match="set by the repository"):
            txn.set_manifest("ranker", {"version": 7})
        with pytest.raises(RepositoryError, match="JSON"):
            txn.set_manifest("ranker", {"loss": float("nan")})
        with pytest.raises(RepositoryError, match="different specs"):
            txn.model_dir(spec("ranker", max_batch_size=256))


def test_invalid_model_names_are_refused(repo: ModelRepository) -> None:
    with pytest.raises(RepositoryError, match="must match"):
        repo.versions("../etc")


# ---- validation at commit ------------------------------------------------------------------


def test_commit_rejects_config_onnx_mismatch(repo: ModelRepository, root: Path) -> None:
    build(repo)
    before = snapshot(root)
    with repo.begin() as txn:
        make_onnx(txn.model_dir(spec("ranker")) / "model.onnx")
        make_onnx(txn.model_dir(spec("retriever")) / "model.onnx", out_dims=("batch", 3))
        with pytest.raises(RepositoryError, match=r"'y'.*dims"):
            txn.commit()
    assert snapshot(root) == before
    assert staging_entries(repo) == []


def test_commit_rejects_missing_onnx(repo: ModelRepository, root: Path) -> None:
    with repo.begin() as txn:
        txn.model_dir(spec("ranker"))
        with pytest.raises(RepositoryError, match=r"ranker: model\.onnx was not written"):
            txn.commit()
    assert snapshot(root) == {}
    assert staging_entries(repo) == []


def test_commit_with_nothing_staged_is_refused(repo: ModelRepository) -> None:
    with repo.begin() as txn, pytest.raises(RepositoryError, match="nothing staged"):
        txn.commit()


# ---- atomicity and recovery ----------------------------------------------------------------


def test_exception_inside_build_leaves_repo_untouched(repo: ModelRepository, root: Path) -> None:
    build(repo)
    before = snapshot(root)

    def diverging_build() -> None:
        with repo.begin() as txn:
            make_onnx(txn.model_dir(spec("ranker")) / "model.onnx")
            raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="training diverged"):
        diverging_build()
    assert snapshot(root) == before
    assert staging_entries(repo) == []


def test_staging_lives_outside_the_root(repo: ModelRepository, root: Path) -> None:
    with repo.begin() as txn:
        staged = txn.model_dir(spec("ranker"))
        assert root not in staged.parents
        assert staged.parents[3] == root.parent / ".model_repo-staging"
        assert snapshot(root) == {}


def test_staging_inside_root_is_refused(root: Path) -> None:
    with pytest.raises(RepositoryError, match="outside"):
        ModelRepository(root, staging_root=root / ".staging")


def test_non_version_directories_are_ignored(repo: ModelRepository, root: Path) -> None:
    build(repo, ("ranker",))
    for name in ("0", "01", "notes", "-2"):
        (root / "ranker" / name).mkdir()
    assert repo.versions("ranker") == [1]
    assert repo.next_version() == 2


def run_child(script: str, root: Path, onnx_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter with ``root``/``onnx_path``/``spec`` defined."""
    prelude = textwrap.dedent(
        f"""
        import os, shutil, signal
        from pathlib import Path
        import training.repository as r
        from contract.signature import Signature, TensorSpec
        root = Path({str(root)!r})
        onnx_path = Path({str(onnx_path)!r})
        sig = Signature((TensorSpec("x", "FP32", (4,)),), (TensorSpec("y", "FP32", (2,)),))
        def spec(name):
            return r.ModelConfigSpec(name=name, signature=sig)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_build_killed_before_commit_is_discarded(
    repo: ModelRepository, root: Path, onnx_path: Path
) -> None:
    build(repo)
    before = snapshot(root)
    child = run_child(
        """
        repo = r.ModelRepository(root)
        txn = repo.begin()
        shutil.copy(onnx_path, txn.model_dir(spec("ranker")) / "model.onnx")
        os.kill(os.getpid(), signal.SIGKILL)
        """,
        root,
        onnx_path,
    )
    assert child.returncode == -9, child.stderr
    assert snapshot(root) == before
    assert len(staging_entries(repo)) == 2  # the stale txn dir and its lock file
    reopened = open_repo(root)
    assert staging_entries(reopened) == []
    assert snapshot(root) == before
    assert build(reopened) == 2


def test_crash_during_commit_is_rolled_forward(
    repo: ModelRepository, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real_move = repository._move

    def failing_move(src: Path, dst: Path) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk vanished")
        real_move(src, dst)

    monkeypatch.setattr(repository, "_move", failing_move)
    with pytest.raises(RepositoryError, match="interrupted after its journal"):
        build(repo)
    assert repo.models() == ["ranker"]  # half published: exactly what recovery must finish
    monkeypatch.setattr(repository, "_move", real_move)

    reopened = open_repo(root)
    assert reopened.versions("ranker") == reopened.versions("retriever") == [1]
    assert reopened.manifest("retriever", 1)["version"] == 1
    assert staging_entries(reopened) == []


def test_kill_during_commit_of_existing_models_is_rolled_forward(
    repo: ModelRepository, root: Path, onnx_path: Path
) -> None:
    build(repo)
    child = run_child(
        """
        real_move = r._move
        calls = []
        def dying_move(src, dst):
            calls.append(dst)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            real_move(src, dst)
        r._move = dying_move
        repo = r.ModelRepository(root)
        with repo.begin() as txn:
            for name in ("ranker", "retriever"):
                shutil.copy(onnx_path, txn.model_dir(spec(name)) / "model.onnx")
            txn.commit()
        """,
        root,
        onnx_path,
    )
    assert child.returncode == -9, child.stderr
    assert (repo.versions("ranker"), repo.versions("retriever")) == ([1, 2], [1])

    reopened = open_repo(root)
    assert reopened.versions("ranker") == reopened.versions("retriever") == [1, 2]
    assert reopened.manifest("retriever", 2)["model"] == "retriever"
    assert staging_entries(reopened) == []


def test_recovery_leaves_live_transactions_alone(repo: ModelRepository, root: Path) -> None:
    with repo.begin() as txn:
        make_onnx(txn.model_dir(spec("ranker")) / "model.onnx")
        open_repo(root)  # another process opening the repository mid-build
        txn.commit()
    assert repo.versions("ranker") == [1]
