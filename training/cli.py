"""The factory's subcommands: ``cascade build`` and ``cascade synth``
(registered by the root, :mod:`contract.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

from training.errors import FactoryError


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
        require_beats=tuple(dict.fromkeys(args.require_beats or ())),
        refit=not args.no_refit,
        progress=not args.quiet,
    )
    result = run_build(config)
    print()
    print(quality_table(result))
    print()
    print(speed_table(result))
    print()
    print(
        f"version {result.version} of {len(result.models)} models and the one-call ranking "
        f"model written to {config.out} "
        f"in {result.seconds:.0f}s; evaluation: {result.report_path}"
    )
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


def register(sub: Any) -> None:
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
    build.add_argument(
        "--require-beats",
        action="append",
        choices=["popularity", "ease", "item_knn"],
        metavar="BASELINE",
        help="ship nothing (exit 2) unless the pipeline's test NDCG@10 beats this baseline: "
        "popularity, ease or item_knn (repeatable; it is a warning without this)",
    )
    build.add_argument(
        "--no-refit",
        action="store_true",
        help="ship the models fit on the train split, as evaluated (faster; by default they "
        "are fit again on every interaction after evaluation)",
    )
    build.add_argument("--synthetic-users", type=int, default=2000)
    build.add_argument("--synthetic-items", type=int, default=1000)
    build.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress (bars on a terminal, a line every few seconds otherwise)",
    )
    build.set_defaults(run=_build)

    synth = sub.add_parser("synth", help="write a synthetic dataset as TSV files, streamed")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--users", type=int, default=100_000)
    synth.add_argument("--items", type=int, default=10_000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--chunk-users", type=int, default=50_000)
    synth.add_argument("-q", "--quiet", action="store_true")
    synth.set_defaults(run=_synth)
