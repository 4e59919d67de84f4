"""Serving behaviour of a real Triton: dynamic batching happens, and a model rolls to a new
version under continuous load without a failed request."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcclient

from contract.features import load_features
from inference.errors import InferenceError
from inference.triton.client import TritonClient, request_tensors
from inference.triton.server import TritonServer
from training.feeds import Feed, random_feeds
from training.repository import ModelRepository


def ranker_feed(repo: Path, batch: int) -> Feed:
    tower = ModelRepository(repo)
    version = max(tower.versions("user_tower"))
    features = load_features(tower.version_dir("user_tower", version) / "features.npz")
    return random_feeds(features, np.random.default_rng(0))["ranker"](batch)


async def burst(url: str, model: str, feed: Feed, concurrency: int, per_client: int) -> None:
    client = grpcclient.InferenceServerClient(url)
    inputs = request_tensors(grpcclient, {k: np.ascontiguousarray(v) for k, v in feed.items()})

    async def worker() -> None:
        for _ in range(per_client):
            await client.infer(model, inputs)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()


def test_concurrent_requests_are_batched_by_triton(triton: TritonServer, built_repo: Path) -> None:
    model = "ranker_mlp"
    names = ("nv_inference_count", "nv_inference_exec_count")
    before = triton.model_counters(model, names)
    asyncio.run(burst(triton.grpc_url, model, ranker_feed(built_repo, 1), 32, 20))
    after = triton.model_counters(model, names)
    inferences = after["nv_inference_count"] - before["nv_inference_count"]
    executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    assert inferences == 32 * 20
    assert executions < inferences / 2  # many requests per model execution


def test_version_roll_under_load_loses_no_request(built_repo: Path, tmp_path: Path) -> None:
    repo_root = tmp_path / "model_repo"
    shutil.copytree(built_repo, repo_root)
    model = "ranker_dcn"
    feed = ranker_feed(repo_root, 4)
    with TritonServer(repo_root, models=[model], workdir=tmp_path / "t") as server:
        client = TritonClient(server.grpc_url, protocol="grpc")
        old = max(ModelRepository(repo_root).versions(model))
        errors: list[BaseException] = []
        served = 0
        stop = threading.Event()

        def load() -> None:
            nonlocal served
            caller = TritonClient(server.grpc_url, protocol="grpc")
            while not stop.is_set():
                try:
                    caller.infer(model, feed, timeout_s=10)
                    served += 1
                except InferenceError as e:
                    errors.append(e)
            caller.close()

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            time.sleep(0.5)  # traffic flowing before the roll
            before = served
            # A new version next to the old one (same weights, new number), as a build adds.
            repo = ModelRepository(repo_root)
            new = old + 1
            shutil.copytree(repo.version_dir(model, old), repo_root / model / str(new))
            server.sync(model)
            client.load_model(model)
            versions = client.model_versions(model)
            assert new in versions
            during = served
            time.sleep(0.5)  # and after it
            # The new version answers by number.
            assert client.infer(model, feed, version=new)["logit"].shape == (4, 1)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        client.close()
    assert not errors, errors[:3]
    assert before > 0
    assert served > during
