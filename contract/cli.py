"""The ``cascade`` command: one root composing the subcommands each package owns.

Each package registers its subcommands (``register(sub)`` in its ``cli`` module). The root
imports those modules by name, so this package depends on none of them and each stays free
of the others; a subcommand whose dependencies are not installed (``cascade build`` on a
serving install, which has no torch) says how to get them. Errors raised on purpose
(:class:`~contract.errors.CascadeError`, a package's ``USER_ERRORS``, an invalid config) are
one line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from pydantic import ValidationError

from contract.errors import EXIT_ERROR, EXIT_INTERRUPTED, CascadeError

#: The packages whose ``cli`` modules register subcommands, in help order.
PACKAGES = ("training", "inference", "ab_router", "operators")

#: What a missing module means for a subcommand: the extra that installs it.
EXTRAS = {"torch": "train", "onnxruntime.quantization": "train"}


def _cli_modules() -> list[ModuleType]:
    return [importlib.import_module(f"{package}.cli") for package in PACKAGES]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to fit, the first left-aligned, the rest right-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _models(args: argparse.Namespace) -> int:
    from contract.repository import RepositoryReader

    rows = RepositoryReader(args.repo).list_registry()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
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
    print(text_table(header, body) if body else f"{args.repo}: no models")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="cascade",
        description="Cascade: build the recommender's models, serve the graph (Triton + Ray "
        "Serve), run experiments and the Kubernetes operator.",
    )
    root.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = root.add_subparsers(dest="command", required=True)
    for module in _cli_modules():
        module.register(sub)
    models = sub.add_parser("models", help="list the versions in a model repository")
    models.add_argument("--repo", type=Path, default=Path("model_repo"))
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=_models)
    return root


def _user_errors() -> tuple[type[BaseException], ...]:
    declared = (getattr(m, "USER_ERRORS", ()) for m in _cli_modules())
    return (CascadeError, ValidationError, *(e for errors in declared for e in errors))


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
    except _user_errors() as e:
        print(f"cascade {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except ModuleNotFoundError as e:
        extra = next((x for m, x in EXTRAS.items() if (e.name or "").startswith(m)), None)
        if extra is None:
            raise
        print(
            f"cascade {args.command}: error: needs {e.name}, which this install does not "
            f"have: pip install 'cascade-serving[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"cascade {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
