"""The ``cascade`` command line.

Subcommands are registered by the package that owns them; ``main`` only parses, configures
logging and maps the factory's errors to one readable line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from ab_router.errors import ExperimentError
from training.errors import FactoryError

log = logging.getLogger("cascade")


def _build(args: argparse.Namespace) -> int:
    from training.build import BuildConfig, run_build
    from training.report import quality_table, speed_table
    from training.synthetic import SyntheticConfig

    dataset: Literal["movielens-100k", "synthetic", "files"] = (
        "files" if args.interactions else args.dataset
    )
    if args.interactions is None and (args.items or args.users):
        raise FactoryError("--items and --users need --interactions")
    synthetic = SyntheticConfig(
        n_users=args.synthetic_users, n_items=args.synthetic_items, seed=args.seed
    )
    config = BuildConfig(
        dataset=dataset,
        interactions=args.interactions,
        items=args.items,
        users=args.users,
        synthetic=synthetic,
        out=args.out,
        report_dir=args.report_dir,
        seed=args.seed,
        int8_tolerance=args.int8_tolerance,
        retrieval_epochs=args.retrieval_epochs,
        ranking_epochs=args.ranking_epochs,
        keep_versions=args.keep_versions,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    result = run_build(config)
    print()
    print(quality_table(result))
    print()
    print(speed_table(result))
    print()
    print(
        f"version {result.version} of {len(result.models)} models written to {config.out} "
        f"in {result.seconds:.0f}s; evaluation: {result.report_path}"
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    from training.repository_reader import RepositoryReader

    rows = RepositoryReader(args.repo).list_registry()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from training.report import table

    header = ["model", "version", "served", "shipped", "NDCG@10", "dataset", "committed"]
    body = []
    for row in rows:
        test = row.get("metrics", {}).get("test", {})
        body.append(
            [
                row.get("model", "?"),
                str(row.get("version", "?")),
                "yes" if row.get("served") else "no",
                row.get("quantization", {}).get("shipped", "?"),
                f"{test['ndcg@10']:.4f}" if "ndcg@10" in test else "-",
                row.get("dataset", "?"),
                row.get("committed_at", "?"),
            ]
        )
    print(table(header, body) if body else f"{args.repo}: no models")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from training.synthetic import SyntheticConfig, write_files

    config = SyntheticConfig(
        n_users=args.users, n_items=args.items, seed=args.seed, chunk_users=args.chunk_users
    )
    paths = write_files(config, args.out, progress=not args.quiet)
    for role, path in paths.items():
        print(f"{role}: {path}")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _triton(args: argparse.Namespace) -> int:
    import signal
    import time

    from inference.errors import InferenceError
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
    try:
        server.start()
    except InferenceError as e:
        raise FactoryError(str(e)) from e
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


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="cascade", description=__doc__.splitlines()[0])
    root.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = root.add_subparsers(dest="command", required=True)

    build = sub.add_parser(
        "build",
        help="train, export, quantize and add a version to the model repository",
        description="Build the recommender's models and add one version to the repository.",
    )
    build.add_argument(
        "--dataset", choices=["movielens-100k", "synthetic"], default="movielens-100k"
    )
    build.add_argument("--interactions", type=Path, help="your own interactions CSV/TSV")
    build.add_argument("--items", type=Path, help="your own items CSV/TSV (with --interactions)")
    build.add_argument("--users", type=Path, help="your own users CSV/TSV (with --interactions)")
    build.add_argument("--out", type=Path, default=Path("model_repo"), help="model repository")
    build.add_argument("--report-dir", type=Path, default=Path("build"))
    build.add_argument("--seed", type=int, default=0)
    build.add_argument(
        "--int8-tolerance",
        type=float,
        default=0.01,
        help="largest relative NDCG@10 loss INT8 may cost before FP32 ships (default 0.01)",
    )
    build.add_argument("--retrieval-epochs", type=int, default=20)
    build.add_argument("--ranking-epochs", type=int, default=3)
    build.add_argument("--keep-versions", type=int, default=3)
    build.add_argument("--synthetic-users", type=int, default=2000)
    build.add_argument("--synthetic-items", type=int, default=1000)
    build.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    build.set_defaults(run=_build)

    models = sub.add_parser("models", help="list the versions in a model repository")
    models.add_argument("--repo", type=Path, default=Path("model_repo"))
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=_models)

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

    from ab_router.cli import register as register_experiments

    register_experiments(sub)

    from inference.cli import register as register_graph

    register_graph(sub)

    from operators.cli import register as register_operator

    register_operator(sub)

    synth = sub.add_parser("synth", help="write a synthetic dataset as TSV files, streamed")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--users", type=int, default=100_000)
    synth.add_argument("--items", type=int, default=10_000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--chunk-users", type=int, default=50_000)
    synth.add_argument("-q", "--quiet", action="store_true")
    synth.set_defaults(run=_synth)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)  # it announces its SIMD level at INFO
    try:
        return int(args.run(args))
    except (FactoryError, ValidationError, ExperimentError) as e:
        print(f"cascade {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cascade {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
