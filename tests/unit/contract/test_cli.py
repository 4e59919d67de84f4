"""The ``cascade`` root: every package's subcommands, one-line errors, and a serving install
(no torch) that runs everything but the factory and says how to get it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from contract.cli import main, parser

#: Makes ``import torch`` fail in a child interpreter as it does on a serving install: a
#: finder ahead of the others that finds no ``torch``.
NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
"""


def test_every_package_registers_its_subcommands() -> None:
    sub = next(a for a in parser()._actions if a.dest == "command")
    commands = set(sub.choices)  # type: ignore[arg-type]
    expected = {"build", "synth", "serve", "demo", "triton", "experiment", "operator", "models"}
    assert expected <= commands


def test_a_cascade_error_is_one_line_and_exit_status_2(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", "--items", "items.csv"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "cascade build: error: --items and --users need --interactions"


def test_serving_needs_no_torch() -> None:
    """The graph, the Triton launcher, the operator and the CLI import without torch."""
    modules = "inference.graph.app, inference.graph.launcher, inference.triton.server, "
    modules += "operators.controllers, contract.cli"
    code = NO_TORCH + f"import {modules}; contract.cli.parser()"
    code += "\nassert 'torch' not in sys.modules"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


def test_build_without_torch_says_which_extra_to_install(tmp_path: pytest.TempPathFactory) -> None:
    code = NO_TORCH + "from contract.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", code, "build", "--out", str(tmp_path), "-q"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "pip install 'cascade-serving[train]'" in run.stderr
    assert "Traceback" not in run.stderr
