"""OnnxRuntime (the in-process runtime) on a tiny hand-made repository.

The repository is written through ``ModelRepository`` transactions, as a build would, so the
runtime reads real ``config.pbtxt`` files; no Triton and no canonical build are needed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from contract.signature import Signature, TensorSpec
from inference.errors import BadRequest, DeadlineExceeded, ModelNotFound
from inference.local_runtime import OnnxRuntime
from training.model_config import ModelConfigSpec
from training.repository import ModelRepository

Feed = dict[str, npt.NDArray[np.generic]]

# "ranker": ids INT64 [batch,3], dense FP32 [batch,2] -> logit FP32 [batch,1].
RANKER = Signature(
    inputs=(TensorSpec("ids", "INT64", (3,)), TensorSpec("dense", "FP32", (2,))),
    outputs=(TensorSpec("logit", "FP32", (1,)),),
)
# "scale": a per-example scalar in and out: config dims [1] with reshape [], ONNX [batch].
SCALE = Signature(
    inputs=(TensorSpec("s", "FP32", ()),),
    outputs=(TensorSpec("t", "FP32", ()),),
)
MAX_BATCH = 8


def ranker_onnx(path: Path, bias: float) -> None:
    """logit = sum(float(ids)) * 0.5 + dense @ [1, -2] + bias."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["ids_f", "w_ids"], ["a"]),
            helper.make_node("MatMul", ["dense", "w_dense"], ["b"]),
            helper.make_node("Add", ["a", "b"], ["ab"]),
            helper.make_node("Add", ["ab", "bias"], ["logit"]),
        ],
        "ranker",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3]),
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["batch", 2]),
        ],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(np.full((3, 1), 0.5, np.float32), "w_ids"),
            numpy_helper.from_array(np.array([[1.0], [-2.0]], np.float32), "w_dense"),
            numpy_helper.from_array(np.array([bias], np.float32), "bias"),
        ],
    )
    onnx.save(helper.make_model(graph), str(path))


def scale_onnx(path: Path) -> None:
    """t = 3 * s, on rank-1 [batch] tensors."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["s", "three"], ["t"])],
        "scale",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(np.array(3.0, np.float32), "three")],
    )
    onnx.save(helper.make_model(graph), str(path))


def spec(name: str, signature: Signature) -> ModelConfigSpec:
    return ModelConfigSpec(
        name=name, signature=signature, max_batch_size=MAX_BATCH, preferred_batch_sizes=(4,)
    )


@pytest.fixture(scope="module")
def repo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions of "ranker" (bias 0, then bias 10) and one of "scale"."""
    root = tmp_path_factory.mktemp("local") / "model_repo"
    repo = ModelRepository(root)
    with repo.begin() as txn:
        ranker_onnx(txn.model_dir(spec("ranker", RANKER)) / "model.onnx", bias=0.0)
        scale_onnx(txn.model_dir(spec("scale", SCALE)) / "model.onnx")
        txn.commit()
    with repo.begin() as txn:
        ranker_onnx(txn.model_dir(spec("ranker", RANKER)) / "model.onnx", bias=10.0)
        txn.commit()
    return root


@pytest.fixture(scope="module")
def runtime(repo_root: Path) -> OnnxRuntime:
    return OnnxRuntime(repo_root)


def ranker_feed(batch: int, seed: int = 0) -> Feed:
    rng = np.random.default_rng(seed)
    return {
        "ids": rng.integers(0, 100, size=(batch, 3)).astype(np.int64),
        "dense": rng.normal(size=(batch, 2)).astype(np.float32),
    }


def test_serves_the_latest_version_of_every_model(runtime: OnnxRuntime) -> None:
    assert runtime.kind == "onnxruntime"
    assert runtime.models == {"ranker": 2, "scale": 1}


@pytest.mark.parametrize("batch", [1, MAX_BATCH])
def test_outputs_equal_direct_onnxruntime(
    runtime: OnnxRuntime, repo_root: Path, batch: int
) -> None:
    feed = ranker_feed(batch)
    session = ort.InferenceSession(
        str(repo_root / "ranker" / "2" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (want,) = session.run(None, feed)
    got = runtime.infer("ranker", feed)
    assert list(got) == ["logit"]
    np.testing.assert_array_equal(got["logit"], want)
    assert got["logit"].dtype == np.float32


def test_pinned_version_is_served(repo_root: Path) -> None:
    pinned = OnnxRuntime(repo_root, versions={"ranker": 1}, models=["ranker"])
    assert pinned.models == {"ranker": 1}
    feed = ranker_feed(3)
    latest = OnnxRuntime(repo_root, models=["ranker"]).infer("ranker", feed)["logit"]
    old = pinned.infer("ranker", feed, version=1)["logit"]
    np.testing.assert_allclose(old.astype(np.float32), latest.astype(np.float32) - 10.0)
    with pytest.raises(ModelNotFound, match="version 2 is not loaded"):
        pinned.infer("ranker", feed, version=2)


def test_reshape_follows_the_config_like_triton(runtime: OnnxRuntime) -> None:
    # Requests carry the config dims ([batch, 1]); the graph gets [batch]; outputs come back
    # in the config dims again.
    out = runtime.infer("scale", {"s": np.array([[1.0], [2.0]], np.float32)})
    np.testing.assert_array_equal(out["t"], np.array([[3.0], [6.0]], np.float32))


def test_outputs_can_be_selected(runtime: OnnxRuntime) -> None:
    assert list(runtime.infer("ranker", ranker_feed(2), outputs=["logit"])) == ["logit"]
    with pytest.raises(BadRequest, match="unknown output 'score'"):
        runtime.infer("ranker", ranker_feed(2), outputs=["score"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ids": np.zeros((2, 3), np.int32)}, r"input 'ids' has dtype int32, model expects INT64"),
        ({"dense": np.zeros((2, 2), np.float64)}, "input 'dense' has dtype float64"),
        (
            {"dense": np.zeros((2, 5), np.float32)},
            r"input 'dense' has dims \[5\], model expects \[2\]",
        ),
        ({"dense": np.zeros((2, 2, 1), np.float32)}, r"input 'dense' has dims \[2, 1\]"),
        (
            {"dense": np.zeros((3, 2), np.float32)},
            "input 'dense' has batch size 3, input 'ids' has 2",
        ),
        ({"dense": np.float32(1.0)}, "input 'dense' is a float32, not a numpy array"),
        (
            {"extra": np.zeros((2, 1), np.float32)},
            r"unknown input 'extra' \(model inputs: \['ids', 'dense'\]\)",
        ),
    ],
)
def test_bad_inputs_are_bad_requests_naming_the_field(
    runtime: OnnxRuntime, change: Feed, message: str
) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        runtime.infer("ranker", {**ranker_feed(2), **change})
    assert info.value.model == "ranker"
    assert info.value.status == 400


def test_missing_input_is_named(runtime: OnnxRuntime) -> None:
    with pytest.raises(BadRequest, match="ranker: input 'dense' is missing"):
        runtime.infer("ranker", {"ids": np.zeros((2, 3), np.int64)})


def test_batch_above_max_batch_size_is_rejected(runtime: OnnxRuntime) -> None:
    runtime.infer("ranker", ranker_feed(MAX_BATCH))
    with pytest.raises(BadRequest, match=f"batch size 9 exceeds max_batch_size {MAX_BATCH}"):
        runtime.infer("ranker", ranker_feed(MAX_BATCH + 1))
    with pytest.raises(BadRequest, match="batch size is 0"):
        runtime.infer("ranker", ranker_feed(0))


def test_unknown_model_is_model_not_found(runtime: OnnxRuntime) -> None:
    with pytest.raises(ModelNotFound, match="ghost: not loaded") as info:
        runtime.infer("ghost", ranker_feed(1))
    assert info.value.status == 404


def test_spent_deadline_is_deadline_exceeded(runtime: OnnxRuntime) -> None:
    with pytest.raises(DeadlineExceeded):
        runtime.infer("ranker", ranker_feed(1), timeout_s=0.0)
    assert runtime.infer("ranker", ranker_feed(1), timeout_s=5.0)["logit"].shape == (1, 1)


def test_deadline_stops_a_long_run(tmp_path: Path) -> None:
    """A chain of 256 512x512 matmuls takes seconds on one thread; the deadline stops it."""
    dims = 512
    names = [f"h{i}" for i in range(256)]
    nodes = [
        helper.make_node("MatMul", [src, "w"], [dst])
        for src, dst in zip(["x", *names[:-1]], [*names[:-1], "y"], strict=True)
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dims])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dims])],
        initializer=[numpy_helper.from_array(np.eye(dims, dtype=np.float32), "w")],
    )
    signature = Signature(
        inputs=(TensorSpec("x", "FP32", (dims,)),), outputs=(TensorSpec("y", "FP32", (dims,)),)
    )
    repo = ModelRepository(tmp_path / "repo")
    with repo.begin() as txn:
        slow = ModelConfigSpec(
            name="slow", signature=signature, max_batch_size=dims, preferred_batch_sizes=(dims,)
        )
        onnx.save(helper.make_model(graph), str(txn.model_dir(slow) / "model.onnx"))
        txn.commit()
    runtime = OnnxRuntime(repo.root)
    start = time.perf_counter()
    with pytest.raises(DeadlineExceeded, match=r"did not finish within 0\.05s"):
        runtime.infer("slow", {"x": np.ones((dims, dims), np.float32)}, timeout_s=0.05)
    assert time.perf_counter() - start < 1.0


def test_check_models_lists_every_problem(runtime: OnnxRuntime) -> None:
    runtime.check_models({"ranker": RANKER, "scale": SCALE})
    drifted = Signature(
        inputs=(TensorSpec("ids", "INT64", (4,)), TensorSpec("dense", "FP32", (2,))),
        outputs=(TensorSpec("logit", "FP32", (1,)),),
    )
    with pytest.raises(
        BadRequest, match=r"ranker: input 'ids' has dims \[3\], graph expects \[4\]"
    ):
        runtime.check_models({"ranker": drifted, "scale": SCALE})
    with pytest.raises(ModelNotFound) as info:
        runtime.check_models({"ranker": drifted, "ghost": RANKER})
    assert "ghost: not loaded" in str(info.value)
    assert "ranker: input 'ids' has dims [3], graph expects [4]" in str(info.value)


def test_a_broken_model_is_reported_not_fatal(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    with repo.begin() as txn:
        ranker_onnx(txn.model_dir(spec("ranker", RANKER)) / "model.onnx", bias=0.0)
        txn.commit()
    (repo.root / "ranker" / "1" / "model.onnx").write_bytes(b"not onnx")
    runtime = OnnxRuntime(repo.root)
    with pytest.raises(ModelNotFound, match=r"ranker: not loaded .*cannot load model\.onnx"):
        runtime.check_models({"ranker": RANKER})


def test_a_missing_repository_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="does not exist"):
        OnnxRuntime(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
