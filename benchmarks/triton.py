"""What Triton costs and what its dynamic batcher gives, measured side by side in one run.

* ``overhead_ms_p50_b1`` / ``_b1000``: p50 latency of one ranker call through Triton over gRPC
  (client adapter included) minus p50 of the same ONNX file run in-process by onnxruntime, at
  batch 1 and 1000, one intra-op thread on both sides.
* ``rps_c32_batching_on`` / ``_off``: requests per second with 32 concurrent clients sending
  batch-1 ranker requests, against a server with the dynamic batcher and one without it (the
  same runtime repository otherwise); their ratio is ``dynamic_batching_speedup_c32``.
  Triton's own metrics show the batching: executions below inferences.

    python benchmarks/triton.py [--repo model_repo] [--model ranker_dcn] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contract.features import load_features  # noqa: E402
from contract.names import FEATURES_FILE  # noqa: E402
from inference.triton.client import TritonClient, request_tensors  # noqa: E402
from inference.triton.server import TritonServer  # noqa: E402
from training.feeds import Feed, random_feeds  # noqa: E402
from training.onnx_export import session  # noqa: E402
from training.repository import ModelRepository  # noqa: E402


def p50_ms(call: Any, repeats: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50))


COUNTERS = ("nv_inference_count", "nv_inference_exec_count")


async def closed_loop(url: str, model: str, feed: Feed, concurrency: int, seconds: float) -> int:
    """``concurrency`` clients, each sending its next request when the last one returns."""
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url)
    inputs = request_tensors(grpcclient, {k: np.ascontiguousarray(v) for k, v in feed.items()})
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await client.infer(model, inputs)
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()
    return done


def throughput(server: TritonServer, model: str, feed: Feed, seconds: float) -> dict[str, float]:
    asyncio.run(closed_loop(server.grpc_url, model, feed, 32, 1.0))  # warm up
    before = server.model_counters(model, COUNTERS)
    start = time.perf_counter()
    done = asyncio.run(closed_loop(server.grpc_url, model, feed, 32, seconds))
    elapsed = time.perf_counter() - start
    after = server.model_counters(model, COUNTERS)
    delta = {k: after[k] - before[k] for k in after}
    return {
        "rps": done / elapsed,
        "inferences": delta["nv_inference_count"],
        "executions": delta["nv_inference_exec_count"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--model", default="ranker_dcn")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/triton.json")
    args = parser.parse_args()

    repo = ModelRepository(args.repo)
    if not repo.versions(args.model):
        print(f"{args.repo} has no {args.model}; run `make demo` (or cascade build) first")
        return 2
    version = max(repo.versions("user_tower"))
    features = load_features(repo.version_dir("user_tower", version) / FEATURES_FILE)
    make = random_feeds(features, np.random.default_rng(0))["ranker"]
    onnx_file = repo.version_dir(args.model, max(repo.versions(args.model))) / "model.onnx"
    local = session(onnx_file, threads=1)

    result: dict[str, Any] = {
        "model": args.model,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
    }
    with TritonServer(args.repo, models=[args.model]) as server:
        client = TritonClient(server.grpc_url, protocol="grpc")
        for batch, repeats in ((1, 500), (1000, 100)):
            feed = make(batch)
            in_process = p50_ms(lambda f=feed: local.run(None, f), repeats)
            via_triton = p50_ms(lambda f=feed: client.infer(args.model, f), repeats)
            result[f"onnxruntime_ms_p50_b{batch}"] = in_process
            result[f"triton_grpc_ms_p50_b{batch}"] = via_triton
            result[f"overhead_ms_p50_b{batch}"] = via_triton - in_process
            print(f"batch {batch}: onnxruntime {in_process:.3f} ms, triton {via_triton:.3f} ms")
        client.close()
        on = throughput(server, args.model, make(1), args.seconds)
    print(
        f"c32 batching on: {on['rps']:.0f} rps ({on['executions']:.0f} executions for "
        f"{on['inferences']:.0f} inferences)"
    )
    with TritonServer(args.repo, models=[args.model], dynamic_batching=False) as server:
        off = throughput(server, args.model, make(1), args.seconds)
    print(f"c32 batching off: {off['rps']:.0f} rps ({off['executions']:.0f} executions)")
    result["rps_c32_batching_on"] = on["rps"]
    result["rps_c32_batching_off"] = off["rps"]
    result["dynamic_batching_speedup_c32"] = on["rps"] / off["rps"]
    result["c32_batching_on_executions_per_inference"] = on["executions"] / max(on["inferences"], 1)
    result["c32_batching_off_executions_per_inference"] = off["executions"] / max(
        off["inferences"], 1
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"dynamic batching speedup at c32: {result['dynamic_batching_speedup_c32']:.2f}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
