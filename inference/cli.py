"""``cascade serve`` and ``cascade demo`` (the graph on one machine, no cluster) and
``cascade triton`` (a model repository on the local tritonserver)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

from inference.graph.settings import DEFAULT_RANKING_PLACEMENT


def _graph_config(path: Path | None) -> Any:
    from contract.graph_config import load_graph_config

    return load_graph_config(path)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _server(args: argparse.Namespace) -> Any:
    from inference.graph.launcher import GraphServer

    return GraphServer(
        Path(args.repo),
        graph=_graph_config(args.config),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        host=args.host,
        runtime=args.runtime,
        triton_grpc=args.triton_grpc,
        triton_http=args.triton_http,
        experiments=args.experiments,
        experiment=args.experiment,
        event_store=args.event_store,
        ranking_placement=args.ranking,
        on_triton_change=_report_triton,
    )


def _report_triton(state: str, why: str) -> None:
    if state == "restarting":
        print(f"{why}: answers degrade to fallbacks until it is back", file=sys.stderr)
    elif why != "started":
        print(f"tritonserver {why}: full-quality answers resume", file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    server = _server(args)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.start()
        print(
            f"graph ready: HTTP {server.url} (/v1/recommend, /v2/models/recommender/infer, "
            f"/metrics, /docs), gRPC {server.grpc_url} (Open Inference Protocol). Ctrl-C stops.",
            flush=True,
        )
        while True:  # Triton is supervised: a crash degrades answers until it is back
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopping the graph ...", file=sys.stderr)
        return 0
    finally:
        server.stop()


def _demo(args: argparse.Namespace) -> int:
    from contract.cli import main as cascade
    from contract.repository import RepositoryReader
    from inference.graph.launcher import recommend
    from inference.traffic import (
        HttpRecommendClient,
        degradation,
        metric_totals,
        percentile_table,
        run_load,
    )

    repo = Path(args.repo)
    if not repo.is_dir() or not RepositoryReader(repo).versions("user_tower"):
        print("no models yet: building them first (cascade build) ...", flush=True)
        if cascade(["build", "--out", str(repo)]) != 0:
            return 1
    server = _server(args)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.start()
        print(f"\ngraph ready at {server.url} (gRPC {server.grpc_url})\n", flush=True)
        users = [str(u) for u in range(1, 944)]

        quality: dict[str, float | None] = {}
        fallback_shares: dict[str, dict[str, float]] = {}

        async def traffic() -> dict[str, Any]:
            results = {}
            async with HttpRecommendClient() as client:
                for concurrency in (1, 8):
                    name = f"/v1/recommend c{concurrency}"
                    before = metric_totals(server.url)
                    results[name] = await run_load(
                        client.sender(server.url, users, 10),
                        concurrency=concurrency,
                        duration_s=args.seconds,
                        warmup_s=1.0,
                        progress=True,
                        desc=f"traffic c{concurrency}",
                    )
                    # The warm-up's answers count too: they were served under the same load.
                    delta = degradation(before, metric_totals(server.url))
                    quality[name] = delta["fallback_rate"]
                    fallback_shares[name] = delta["fallbacks"]
            return results

        results = asyncio.run(traffic())
        for user in ("1", "42", "405"):
            answer = recommend(server.url, user, k=5)
            fallbacks: list[str] = answer.get("fallbacks") or []  # type: ignore[assignment]
            label = f"fallbacks: {', '.join(fallbacks)}" if fallbacks else "full quality"
            print(
                f"\nuser {user}: top 5 ({label}; scores: {answer.get('score_source')}; "
                f"{answer['latency_ms']:.1f} ms)"
            )
            items: list[dict[str, Any]] = answer["items"]  # type: ignore[assignment]
            for rank, item in enumerate(items, 1):
                genres = ", ".join(item["genres"])
                print(
                    f"  {rank}. {item['title'] or item['item_id']}  [{genres}]  {item['score']:.3f}"
                )
        cold = recommend(server.url, "new-user-123", k=3)
        titles = "; ".join(str(i["title"]) for i in cold["items"])  # type: ignore[attr-defined]
        print(f"\nunknown user: popular picks: {titles}")
        print("\nlatency (HTTP, end to end from a client on this machine), and the share of")
        print("answers served at full quality (every stage ran, no fallback):")
        print(percentile_table(results, quality))
        for name, kinds in fallback_shares.items():
            if kinds:
                shares = ", ".join(f"{kind} {share:.1%}" for kind, share in kinds.items())
                print(f"  {name} fallbacks: {shares}")
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        print("\nshutting down ...", flush=True)
        server.stop()


def _triton(args: argparse.Namespace) -> int:
    from inference.triton.server import TritonServer

    server = TritonServer(
        args.repo,
        models=args.model or None,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        host=args.host,
        dynamic_batching=not args.no_batching,
    )
    server.start()
    states = server.model_states()
    for name, (state, reason) in sorted(states.items()):
        print(f"{name:24s} {state}{': ' + reason if reason else ''}")
    print(
        f"Triton ready on {server.host}: HTTP {server.http_url}, gRPC {server.grpc_url}, "
        f"metrics {server.metrics_url}; log {server.log_path}. Ctrl-C stops it."
    )
    signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
        print(f"tritonserver exited: {server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping Triton...", file=sys.stderr)
        return 0
    finally:
        server.stop()


def _add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, default=Path("model_repo"))
    parser.add_argument("--config", type=Path, help="graph config (YAML/JSON); default built in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=9000)
    parser.add_argument(
        "--runtime",
        choices=["triton", "onnxruntime"],
        default="triton",
        help="where the models run (default: a local Triton started here)",
    )
    parser.add_argument("--triton-grpc", help="use this Triton (host:port) instead of starting one")
    parser.add_argument("--triton-http", help="its HTTP endpoint, for single-model pass-through")
    parser.add_argument(
        "--ranking",
        choices=["inline", "deployment"],
        default=DEFAULT_RANKING_PLACEMENT,
        help="rank inside the ingress (default; no hop) or in its own deployment",
    )
    parser.add_argument("--experiments", type=Path, help="ab_router catalog (YAML/JSON)")
    parser.add_argument("--experiment", help="the experiment that splits this graph's traffic")
    parser.add_argument("--event-store", help="exposure log: SQLite file or redis://...")


def register(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve the recommendation graph (Triton + Ray Serve) until Ctrl-C",
        description="Start Triton, Ray and the graph; answer HTTP and gRPC until Ctrl-C.",
    )
    _add_server_args(serve)
    serve.set_defaults(run=_serve)
    demo = sub.add_parser(
        "demo",
        help="build if needed, serve, send traffic, print recommendations and latency",
    )
    _add_server_args(demo)
    demo.add_argument("--seconds", type=float, default=5.0, help="traffic per concurrency level")
    demo.set_defaults(run=_demo)
    triton = sub.add_parser(
        "triton",
        help="serve a model repository with the local tritonserver until Ctrl-C",
        description="Serve the repository with the real tritonserver bundled in nvidia-pytriton "
        "(python-backend shim over onnxruntime; the stock image serves it natively).",
    )
    triton.add_argument("--repo", type=Path, default=Path("model_repo"))
    triton.add_argument("--model", action="append", help="load only these (repeatable)")
    triton.add_argument(
        "--host",
        default="127.0.0.1",
        help="address HTTP, gRPC and metrics bind to (default loopback; 0.0.0.0 in a pod)",
    )
    triton.add_argument("--http-port", type=int, default=8000)
    triton.add_argument("--grpc-port", type=int, default=8001)
    triton.add_argument("--metrics-port", type=int, default=8002)
    triton.add_argument("--no-batching", action="store_true", help="disable dynamic batching")
    triton.set_defaults(run=_triton)
