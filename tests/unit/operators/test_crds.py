"""The CRDs: generated from the specs, committed in the chart, structural, and enforcing."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from operators.crds.schema import KINDS, crd, crd_manifests, openapi_schema
from operators.crds.specs import (
    API_VERSION,
    CanaryPolicy,
    ExperimentSpec,
    InferenceGraphSpec,
    ModelSpec,
    ReplicaBounds,
    field_errors,
)

ROOT = Path(__file__).resolve().parents[3]
CHART_CRDS = ROOT / "charts" / "cascade" / "crds"
EXAMPLES = ROOT / "examples"
SPECS: dict[str, type[Any]] = {
    "Model": ModelSpec,
    "InferenceGraph": InferenceGraphSpec,
    "Experiment": ExperimentSpec,
}


def test_committed_crds_match_the_specs() -> None:
    """Edit operators/crds/specs.py, then `python -m operators.crds.schema` to refresh."""
    for name, text in crd_manifests().items():
        committed = CHART_CRDS / name
        assert committed.exists(), f"{committed} is missing: run python -m operators.crds.schema"
        assert committed.read_text() == text, f"{committed} drifted from the specs: regenerate it"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.items():
            out.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_walk(value, f"{path}[{i}]"))
    return out


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schemas_are_structural(kind: Any) -> None:
    """What the API server requires of a CRD schema (apiextensions v1 structural rules)."""
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        if path.endswith(".properties") or path.endswith("x-kubernetes-validations"):
            continue
        for banned in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "const", "title", "uniqueItems"):
            assert banned not in node, f"{kind.kind}{path} has {banned}"
        if "properties" in node or "items" in node or "enum" in node or "minimum" in node:
            assert "type" in node, f"{kind.kind}{path} has no type"
        if "properties" in node:
            assert "additionalProperties" not in node, f"{kind.kind}{path}"
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):
            if flag in node:
                assert node[flag] is True, f"{kind.kind}{path}.{flag} must be a boolean"


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node (not the data in defaults or enums), with its path."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def _nulls(value: Any, path: str = "") -> list[str]:
    if value is None:
        return [path or "."]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{path}[{i}]")]
    return []


def _unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys of a default the API server would prune: it refuses such a default."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                found += _unknown_fields(item, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += _unknown_fields(item, extra, f"{path}.{key}")
            else:
                found.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += _unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def _defaults() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{kind.kind}{path}", node)
        for kind in KINDS
        for path, node in _nodes(crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        if "default" in node
    ]


def test_the_walk_reaches_nested_defaults() -> None:
    paths = {path for path, _ in _defaults()}
    assert "InferenceGraph.spec.autoscaling" in paths
    assert "InferenceGraph.spec.autoscaling.graph.minReplicas" in paths
    assert "InferenceGraph.spec.stages.ranking.models" in paths
    assert len(paths) > 40


@pytest.mark.parametrize(
    ("path", "node"), _defaults(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_no_default_holds_a_null(path: str, node: dict[str, Any]) -> None:
    """The API server refuses a CRD whose default holds a null at any depth (no field is
    nullable): ``default.targetP99Ms: Invalid value: "null": ... must be of type number``."""
    assert not _nulls(node["default"]), f"{path}.default: null at {_nulls(node['default'])}"


@pytest.mark.parametrize(
    ("path", "node"), _defaults(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_every_default_validates_against_its_own_schema(path: str, node: dict[str, Any]) -> None:
    """What the API server checks of each default: its node's types, enums, bounds and
    patterns (draft 4, as OpenAPI v3), no field it would prune, and the CEL rules."""
    default = node["default"]
    try:
        jsonschema.Draft4Validator(node).validate(default)
    except jsonschema.ValidationError as exc:
        at = "".join(f".{p}" for p in exc.path)
        pytest.fail(f"{path}.default{at}: {exc.message}")
    assert not _unknown_fields(default, node), f"{path}.default: {_unknown_fields(default, node)}"
    for rule_path, rule_node in _nodes(node):
        for rule in rule_node.get("x-kubernetes-validations", []):
            value = _at(default, rule_path)
            if value is not None:
                assert CEL[rule["rule"]](value), f"{path}.default{rule_path}: {rule['message']}"


def _at(value: Any, path: str) -> Any:
    """The part of a default at a schema path (``.a.b``), or None where the default has none."""
    for part in filter(None, path.split(".")):
        if not isinstance(value, dict) or part.endswith(("[]", "}")):
            return None
        value = value.get(part)
    return value


class _Inner(BaseModel):
    limit: float | None = None
    names: list[str] = ["a"]


class _Middle(BaseModel):
    inner: _Inner = _Inner()
    note: str | None = None


class _Outer(BaseModel):
    middle: _Middle = _Middle()
    items: list[_Inner] = [_Inner(limit=None)]


def test_nulls_are_stripped_from_defaults_at_every_depth() -> None:
    schema = openapi_schema(_Outer)
    assert schema["properties"]["middle"]["default"] == {"inner": {"names": ["a"]}}
    assert schema["properties"]["items"]["default"] == [{"names": ["a"]}]
    inner = schema["properties"]["middle"]["properties"]["inner"]
    assert "default" not in inner["properties"]["limit"]  # a null default says only "unset"
    assert not [p for _, n in _nodes(schema) if "default" in n for p in _nulls(n["default"])]


def _every_value(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _every_value(value)
    elif isinstance(node, list):
        for value in node:
            yield from _every_value(value)


@pytest.mark.parametrize("path", sorted(CHART_CRDS.glob("*.yaml")), ids=lambda p: p.name)
def test_committed_crds_hold_no_null(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert not [v for v in _every_value(doc) if v is None], f"{path.name} holds a null"


# -- CEL rules ------------------------------------------------------------------------------
#
# No CEL evaluator is a dependency; each rule has a Python twin here. A rule without a twin
# fails the test below, and each twin must agree with the operator's pydantic validator on
# every case of a small grid, so the API server (>= 1.25) and the operator refuse the same
# specs.

CEL: dict[str, Callable[[Any], bool]] = {
    "self.isSorted() && self.all(x, self.exists_one(y, y == x))": lambda s: (
        list(s) == sorted(s) and len(set(s)) == len(s)
    ),
    "self[self.size() - 1] == 100": lambda s: s[-1] == 100,
    "self.minReplicas <= self.maxReplicas": lambda s: s["minReplicas"] <= s["maxReplicas"],
}


def _rules() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{kind.kind}{path}", rule)
        for kind in KINDS
        for path, node in _nodes(crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        for rule in node.get("x-kubernetes-validations", [])
    ]


def test_every_cel_rule_has_a_python_twin() -> None:
    rules = _rules()
    assert {r["rule"] for _, r in rules} == set(CEL)
    for path, rule in rules:
        assert rule["message"], path
    paths = {path for path, _ in rules}
    assert "InferenceGraph.spec.autoscaling.graph" in paths
    assert "InferenceGraph.spec.autoscaling.triton" in paths
    assert "Model.spec.canary.steps" in paths


def _accepts(model: type[BaseModel], data: dict[str, Any]) -> bool:
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def test_replica_bounds_rule_agrees_with_the_operator() -> None:
    (rule,) = crd(KINDS[1])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]["properties"]["autoscaling"]["properties"]["graph"]["x-kubernetes-validations"]
    assert rule["message"] == "minReplicas must be less than or equal to maxReplicas"
    for low, high in itertools.product(range(6), range(1, 6)):
        bounds = {"minReplicas": low, "maxReplicas": high}
        assert CEL[rule["rule"]](bounds) == _accepts(ReplicaBounds, bounds), bounds


def test_steps_rules_agree_with_the_operator() -> None:
    steps = crd(KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["canary"]["properties"]["steps"]
    cases = [[100], [5, 100], [50, 10, 100], [5, 5, 100], [5, 50], [10, 50, 100], [100, 100]]
    for case in cases:
        cel = all(CEL[r["rule"]](case) for r in steps["x-kubernetes-validations"])
        assert cel == _accepts(CanaryPolicy, {"steps": case}), case


def test_crds_have_status_subresource_and_columns() -> None:
    for kind in KINDS:
        version = crd(kind)["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Age"}
        conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
            "conditions"
        ]
        fields = conditions["items"]["properties"]
        assert set(fields) == {
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        }


def test_schema_validation_rules() -> None:
    model = crd(KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    steps = model["properties"]["canary"]["properties"]["steps"]
    assert steps["items"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert any("isSorted" in r["rule"] for r in steps["x-kubernetes-validations"])
    experiment = crd(KINDS[2])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    weight = experiment["properties"]["variants"]["items"]["properties"]["weight"]
    assert (weight["minimum"], weight["maximum"]) == (0, 100)
    assert set(experiment["required"]) == {"graph", "variants"}


def _schema(kind: str) -> dict[str, Any]:
    (found,) = [k for k in KINDS if k.kind == kind]
    schema: dict[str, Any] = crd(found)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((str(path.relative_to(ROOT)), doc))
    return docs


def test_examples_exist_for_every_kind() -> None:
    kinds = {doc["kind"] for _, doc in _documents()}
    assert kinds >= set(SPECS)


@pytest.mark.parametrize(
    ("path", "doc"), _documents(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_examples_validate_against_the_crds(path: str, doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == API_VERSION, path
    # The CRD's OpenAPI schema (draft-4 semantics: boolean exclusiveMinimum) ...
    jsonschema.Draft4Validator(_schema(doc["kind"])).validate(doc)
    # ... and the operator's own validation, which adds the cross-field rules.
    spec = SPECS[doc["kind"]].model_validate(doc["spec"])
    if doc["kind"] == "Experiment":
        spec.design(doc["metadata"]["name"])


@pytest.mark.parametrize(
    ("kind", "spec", "field", "text"),
    [
        (
            "InferenceGraph",
            {"modelRepository": {}},
            "spec.modelRepository",
            "exactly one of pvc, uri, build",
        ),
        (
            "InferenceGraph",
            {"modelRepository": {"pvc": "m"}, "stages": {"ranking": {"budgetMs": 0}}},
            "spec.stages.ranking.budgetMs",
            "greater than 0",
        ),
        (
            "InferenceGraph",
            {
                "modelRepository": {"pvc": "m"},
                "autoscaling": {"graph": {"minReplicas": 3, "maxReplicas": 2}},
            },
            "spec.autoscaling.graph",
            "below minReplicas",
        ),
        (
            "InferenceGraph",
            {"modelRepository": {"uri": "s3://bucket/repo.tar.gz"}},
            "spec.modelRepository.uri",
            "s3:// and gs:// are not fetched",
        ),
        (
            "InferenceGraph",
            {"modelRepository": {"uri": "gs://bucket/repo.tar.gz"}},
            "spec.modelRepository.uri",
            "use an HTTPS (presigned) URL or a PVC",
        ),
        (
            "InferenceGraph",
            {"modelRepository": {"pvc": "m"}, "stages": {"ranking": {"combiner": "a--b"}}},
            "spec.stages.ranking.combiner",
            "should match pattern",
        ),
        (
            "InferenceGraph",
            {"modelRepository": {"pvc": "m"}, "stages": {"rerank": {"mmrLamda": 0.5}}},
            "spec.stages.rerank.mmrLamda",
            "Extra inputs are not permitted",
        ),
        (
            "Model",
            {"storageUri": "ftp://x", "version": 1},
            "spec.storageUri",
            "should match pattern",
        ),
        (
            "Model",
            {"storageUri": "s3://b/m", "version": 2, "canary": {"steps": [50, 10, 100]}},
            "spec.canary",
            "strictly increasing",
        ),
        (
            "Experiment",
            {"graph": "g", "variants": [{"name": "a", "weight": 101}, {"name": "b", "weight": 0}]},
            "spec.variants.0.weight",
            "less than or equal to 100",
        ),
    ],
)
def test_bad_specs_name_the_field(kind: str, spec: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(ValidationError) as err:
        SPECS[kind].model_validate(spec)
    message = field_errors("spec", err.value)
    assert message.startswith(field), message
    assert text in message


def test_experiment_weights_must_sum_to_100() -> None:
    spec = ExperimentSpec.model_validate(
        {"graph": "g", "variants": [{"name": "a", "weight": 60}, {"name": "b", "weight": 60}]}
    )
    with pytest.raises(ValidationError) as err:
        spec.design("exp")
    assert "sum to 120, not 100" in field_errors("spec", err.value)


@pytest.mark.parametrize(
    ("uri", "fetched"),
    [
        ("https://bucket.s3.amazonaws.com/repo.tar.gz?X-Amz-Signature=abc", True),
        ("http://files.ml.svc/repo.tar.gz", True),
        ("s3://bucket/repo.tar.gz", False),
        ("gs://bucket/repo.tar.gz", False),
        ("file:///models", False),
    ],
)
def test_only_fetchable_repository_uris_pass_both_checks(uri: str, fetched: bool) -> None:
    """The init container fetches with urllib: the CRD and the operator refuse what it cannot."""
    spec = {"modelRepository": {"uri": uri}}
    graph = {
        "apiVersion": API_VERSION,
        "kind": "InferenceGraph",
        "metadata": {"name": "recs"},
        "spec": spec,
    }
    assert jsonschema.Draft4Validator(_schema("InferenceGraph")).is_valid(graph) == fetched
    assert _accepts(InferenceGraphSpec, spec) == fetched


def test_a_variant_config_is_checked_with_the_graphs_own_schema() -> None:
    from pydantic import ValidationError

    from operators.crds.specs import ExperimentSpec, field_errors

    variants = [
        {"name": "control", "weight": 50},
        {"name": "fast", "weight": 50, "config": {"budgets": {"ranking_ms": "soon"}}},
    ]
    with pytest.raises(ValidationError) as caught:
        ExperimentSpec.model_validate({"graph": "g", "variants": variants})
    message = field_errors("spec", caught.value)
    assert message.startswith("spec.variants.1.config: budgets.ranking_ms: Input should be")
    variants[1]["config"] = {"budgets": {"ranking_ms": 30}, "rerank": {"mmr_lambda": 0.5}}
    ExperimentSpec.model_validate({"graph": "g", "variants": variants})  # valid overrides pass


def test_experiment_variants_and_metrics_are_the_routers() -> None:
    from ab_router import design
    from operators.crds.specs import Metric, Variant

    for spec, router in ((Variant, design.Variant), (Metric, design.Metric)):
        assert issubclass(spec, router)
        # The same fields, bounds and defaults (by their Python names).
        properties = spec.model_json_schema(by_alias=False)["properties"]
        assert properties == router.model_json_schema()["properties"]
    metric = Metric.model_validate({"name": "ctr", "mdeRelative": 0.1})  # camelCase on the wire
    assert metric.model_dump() == design.Metric(name="ctr", mde_relative=0.1).model_dump()
    assert metric.wire()["marginRelative"] == design.Metric(name="ctr").margin_relative
    with pytest.raises(ValidationError):
        Metric.model_validate({"name": "ctr", "mde": 0.1})


def test_resource_defaults_are_the_data_planes() -> None:
    from contract.graph_config import GraphConfig
    from operators.crds.specs import InferenceGraphSpec

    spec = InferenceGraphSpec.model_validate({"modelRepository": {"build": {}}})
    graph = GraphConfig()
    assert spec.deadline_ms == graph.budgets.total_ms
    assert spec.stages.ranking.budget_ms == graph.budgets.ranking_ms
    assert spec.stages.retrieval.candidates == graph.candidates
    assert spec.stages.rerank.mmr_lambda == graph.rerank.mmr_lambda
