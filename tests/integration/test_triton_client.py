"""TritonClient against a real Triton serving the canonical build, over gRPC and HTTP.

Parity is measured against onnxruntime on the very ``model.onnx`` Triton serves, and against
the in-process runtime, so the three paths the graph can take agree to 1e-5.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime as ort
import pytest
from tritonclient.utils import InferenceServerException

from contract.features import load_features
from contract.signature import DType, Signature, TensorSpec
from inference.errors import BadRequest, DeadlineExceeded, InferenceError, ModelNotFound
from inference.local_runtime import OnnxRuntime
from inference.runtime import Tensors
from inference.triton.client import (
    GrpcTransport,
    HttpTransport,
    TritonClient,
    TritonProtocol,
    call_with_retry,
    map_error,
)
from inference.triton.server import TritonServer
from inference.validation import TensorMeta, spec_from_config
from training.feeds import Feed, random_feeds
from training.repository import ModelRepository

pytestmark = pytest.mark.integration

# Model -> the random_feeds key that builds its inputs.
MODELS = {
    "user_tower": "user_tower",
    "ranker_dcn": "ranker",
    "ranker_mlp": "ranker",
    "combiner": "combiner",
}
PROTOCOLS: tuple[TritonProtocol, ...] = ("grpc", "http")


def url_of(triton: TritonServer, protocol: TritonProtocol) -> str:
    return str(triton.grpc_url if protocol == "grpc" else triton.http_url)


@pytest.fixture(scope="module")
def feeds(built_repo: Path) -> dict[str, Any]:
    repo = ModelRepository(built_repo)
    version = max(repo.versions("user_tower"))
    features = load_features(repo.version_dir("user_tower", version) / "features.npz")
    return random_feeds(features, np.random.default_rng(0))


@pytest.fixture(scope="module", params=PROTOCOLS)
def client(request: pytest.FixtureRequest, triton: TritonServer) -> Iterator[TritonClient]:
    protocol: TritonProtocol = request.param
    with TritonClient(url_of(triton, protocol), protocol) as runtime:
        yield runtime


def signature_of(repo_root: Path, model: str) -> Signature:
    """The signature the canonical config declares (what the graph is built against)."""
    spec = spec_from_config(ModelRepository(repo_root).config(model))

    def specs(tensors: tuple[TensorMeta, ...]) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(t.name, cast(DType, t.datatype), t.model_dims) for t in tensors)

    return Signature(inputs=specs(spec.inputs), outputs=specs(spec.outputs))


@pytest.mark.parametrize("batch", [1, 257])
@pytest.mark.parametrize("model", list(MODELS))
def test_outputs_equal_onnxruntime_on_the_served_file(
    client: TritonClient, built_repo: Path, feeds: dict[str, Any], model: str, batch: int
) -> None:
    repo = ModelRepository(built_repo)
    path = repo.version_dir(model, max(repo.versions(model))) / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed: Feed = feeds[MODELS[model]](batch)
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    got = client.infer(model, feed, timeout_s=30)
    local = OnnxRuntime(built_repo, models=[model]).infer(model, feed)
    assert set(got) == set(want) == set(local)
    for name, expected in want.items():
        assert got[name].shape == expected.shape
        assert got[name].dtype == expected.dtype
        assert float(np.max(np.abs(got[name] - expected))) <= 1e-5, name
        assert float(np.max(np.abs(local[name] - expected))) <= 1e-5, name


def test_bad_requests_are_named_before_sending(client: TritonClient, feeds: dict[str, Any]) -> None:
    feed: Feed = feeds["ranker"](3)
    with pytest.raises(BadRequest, match="input 'history' has dtype int32, model expects INT64"):
        client.infer("ranker_dcn", {**feed, "history": feed["history"].astype(np.int32)})
    width = feed["user_dense"].shape[1]
    with pytest.raises(
        BadRequest, match=rf"input 'user_dense' has dims \[{width - 1}\], model expects \[{width}\]"
    ):
        client.infer("ranker_dcn", {**feed, "user_dense": feed["user_dense"][:, :-1]})
    with pytest.raises(BadRequest, match="batch size 4097 exceeds max_batch_size 4096"):
        client.infer("ranker_dcn", feeds["ranker"](4097))
    with pytest.raises(BadRequest, match="input 'item_id' is missing"):
        client.infer("ranker_dcn", {k: v for k, v in feed.items() if k != "item_id"})


def test_unknown_model_and_version_are_model_not_found(
    client: TritonClient, feeds: dict[str, Any]
) -> None:
    feed: Feed = feeds["combiner"](2)
    with pytest.raises(ModelNotFound, match="ghost: Request for unknown model: 'ghost'") as info:
        client.infer("ghost", feed)
    assert isinstance(info.value.__cause__, InferenceServerException)
    with pytest.raises(ModelNotFound, match=r"combiner: .*'combiner' version 99 is not found"):
        client.infer("combiner", feed, version=99)
    assert client.infer("combiner", feed, version=1)["score"].shape == (2, 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_triton_rejections_map_to_bad_request_with_its_message(
    triton: TritonServer, feeds: dict[str, Any], protocol: TritonProtocol
) -> None:
    """Bypassing local validation: Triton's own INVALID_ARGUMENT / 400 names the input."""
    url = url_of(triton, protocol)
    transport = GrpcTransport(url) if protocol == "grpc" else HttpTransport(url)
    scores = feeds["combiner"](2)["scores"]
    cases = [
        ({"scores": scores.astype(np.float64)}, "'scores' data-type is 'FP64'"),
        ({"scores": scores[:, :2].copy()}, "unexpected shape for input 'scores'"),
        ({"scorez": scores}, "unexpected inference input 'scorez'"),
    ]
    try:
        for inputs, message in cases:

            def send(timeout_s: float | None, inputs: Feed = inputs) -> Tensors:
                return transport.infer("combiner", "", inputs, ["score"], timeout_s)

            with pytest.raises(BadRequest, match=message) as info:
                call_with_retry(send, model="combiner")
            assert info.value.model == "combiner"
            assert "[request id" not in str(info.value)
    finally:
        transport.close()


def test_check_models_names_missing_and_drifted_models(
    client: TritonClient, triton: TritonServer
) -> None:
    required = {model: signature_of(triton.repository, model) for model in MODELS}
    client.check_models(required)
    tower = required["user_tower"]
    (served,) = [t.dims for t in tower.inputs if t.name == "history"]
    drifted = Signature(
        inputs=tuple(
            TensorSpec(t.name, t.dtype, (served[0] + 1,)) if t.name == "history" else t
            for t in tower.inputs
        ),
        outputs=tower.outputs,
    )
    with pytest.raises(ModelNotFound) as info:
        client.check_models({**required, "ghost": required["combiner"], "user_tower": drifted})
    message = str(info.value)
    assert "ghost: not loaded" in message
    want = f"user_tower: input 'history' has dims [{served[0]}], graph expects [{served[0] + 1}]"
    assert want in message
    with pytest.raises(BadRequest, match="user_tower: input 'history'"):
        client.check_models({"user_tower": drifted})


def test_a_microsecond_deadline_is_deadline_exceeded(
    client: TritonClient, feeds: dict[str, Any]
) -> None:
    feed: Feed = feeds["ranker"](64)
    client.infer("ranker_dcn", feed)  # the config is cached: the deadline hits the call itself
    with pytest.raises(DeadlineExceeded):
        client.infer("ranker_dcn", feed, timeout_s=1e-6)
    assert client.infer("ranker_dcn", feed, timeout_s=30)["logit"].shape == (64, 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_transport_deadline_is_enforced_on_the_wire(
    triton: TritonServer, feeds: dict[str, Any], protocol: TritonProtocol
) -> None:
    url = url_of(triton, protocol)
    transport = GrpcTransport(url) if protocol == "grpc" else HttpTransport(url)
    feed: Feed = feeds["ranker"](257)
    try:
        with pytest.raises(Exception) as info:  # noqa: PT011 - mapped below
            transport.infer("ranker_dcn", "", feed, ["logit"], 1e-6)
        assert isinstance(map_error(info.value), DeadlineExceeded)
        # The connection is usable (HTTP: replaced) after an abandoned call.
        assert transport.infer("ranker_dcn", "", feed, ["logit"], 30)["logit"].shape == (257, 1)
    finally:
        transport.close()


def test_repository_api(client: TritonClient) -> None:
    assert client.server_ready(timeout_s=5)
    names = {entry.name for entry in client.repository_index()}
    assert set(MODELS) <= names
    versions = client.model_versions("combiner")
    assert versions
    assert set(versions.values()) == {"READY"}
    with pytest.raises(ModelNotFound):
        client.model_versions("ghost")
    with pytest.raises(InferenceError):
        client.load_model("ghost")
