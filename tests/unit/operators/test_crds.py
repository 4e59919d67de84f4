"""The CRDs: generated from the specs, committed in the chart, structural, and enforcing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from operators.crds.schema import KINDS, crd, crd_manifests
from operators.crds.specs import (
    API_VERSION,
    ExperimentSpec,
    InferenceGraphSpec,
    ModelSpec,
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
