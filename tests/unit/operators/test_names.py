"""Resource names that make invalid child names are refused: by the CRD, and by the operator.

A custom resource may be called anything that is a DNS-1123 subdomain, but the operator names
Services after a graph (``<graph>-triton``: DNS-1035, 63 characters) and router experiments after
a Model (``canary-<model>``: a slug, 63 characters). The limits live in
:mod:`operators.crds.specs`; these tests hold the CRDs, the children and the router to them.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
import yaml

from ab_router.design import Catalog
from operators.crds.schema import KINDS, crd
from operators.crds.specs import (
    API_VERSION,
    DNS_1035_PATTERN,
    DNS_LABEL_MAX_LENGTH,
    EXPERIMENT_NAME,
    GRAPH_CHILD_SUFFIXES,
    GRAPH_NAME,
    MODEL_NAME,
    InferenceGraphSpec,
    NameRule,
    graph_name_problem,
)
from operators.reconcile.children import CanaryRoute, GraphInputs, child_name, render

LONGEST_GRAPH = "g" * GRAPH_NAME.max_length
LONGEST_MODEL = "m" * MODEL_NAME.max_length
RULES = {"Model": MODEL_NAME, "InferenceGraph": GRAPH_NAME, "Experiment": EXPERIMENT_NAME}


def _schema(kind: str) -> dict[str, Any]:
    (found,) = [k for k in KINDS if k.kind == kind]
    schema: dict[str, Any] = crd(found)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _graph(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceGraph",
        "metadata": {"name": name},
        "spec": {"modelRepository": {"build": {}}},
    }


@pytest.mark.parametrize("name", ["recs", "a", "recs-2024", "a--b", LONGEST_GRAPH])
def test_graph_names_whose_children_fit(name: str) -> None:
    assert graph_name_problem(name) is None
    jsonschema.Draft4Validator(_schema("InferenceGraph")).validate(_graph(name))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("2024-recs", "'2024-recs' must start with a lower-case letter"),
        ("Recs", "must start with a lower-case letter"),
        ("recs-", "end with a letter or digit"),
        ("recs.v2", "hold only lower-case letters, digits and '-'"),
        (LONGEST_GRAPH + "g", f"at most {GRAPH_NAME.max_length} fit"),
    ],
)
def test_graph_names_whose_children_would_be_refused(name: str, text: str) -> None:
    problem = graph_name_problem(name)
    assert problem is not None
    assert problem.startswith("metadata.name: ")
    assert text in problem
    assert f"{name}-triton" in problem  # names the Service the API server would refuse
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.Draft4Validator(_schema("InferenceGraph")).validate(_graph(name))
    assert list(err.value.path) == ["metadata", "name"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_each_crd_carries_its_name_rule(kind: Any) -> None:
    """Structural schemas allow constraints on metadata.name (and generateName) only."""
    metadata = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "metadata"
    ]
    rule = RULES[kind.kind]
    assert metadata == {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": rule.pattern, "maxLength": rule.max_length}
        },
    }


def test_the_graph_rule_is_dns_1035_with_room_for_the_longest_suffix() -> None:
    assert GRAPH_NAME.pattern == DNS_1035_PATTERN
    assert GRAPH_NAME.max_length + max(map(len, GRAPH_CHILD_SUFFIXES)) == DNS_LABEL_MAX_LENGTH
    assert "-nodeport" in GRAPH_CHILD_SUFFIXES  # the chart's own Service for kind


def test_every_child_of_the_longest_graph_name_is_a_valid_name() -> None:
    """Also fails when a new child gets a suffix GRAPH_CHILD_SUFFIXES does not account for."""
    spec = InferenceGraphSpec.model_validate({"modelRepository": {"build": {}}})
    route = CanaryRoute(LONGEST_MODEL, "m", 2, 5)
    inputs = GraphInputs(
        name=LONGEST_GRAPH,
        namespace="ml",
        uid="uid-1",
        spec=spec,
        image="cascade:0.1.0",
        factory_image="cascade-factory:0.1.0",
        canary=route,
        service_monitor=True,
    )
    children = render(inputs)
    assert {c["kind"] for c in children} >= {"Service", "ServiceMonitor", "ConfigMap"}
    for child in children:
        name = child["metadata"]["name"]
        assert name.removeprefix(LONGEST_GRAPH) in GRAPH_CHILD_SUFFIXES, name
        assert len(name) <= DNS_LABEL_MAX_LENGTH, name
        assert re.fullmatch(DNS_1035_PATTERN, name), name
    assert child_name(LONGEST_GRAPH, "triton") == f"{LONGEST_GRAPH}-triton"
    # The longest Model's canary is an experiment of 63 characters the router accepts.
    assert len(route.experiment) == DNS_LABEL_MAX_LENGTH
    (router,) = [c for c in children if c["metadata"]["name"].endswith("-router")]
    catalog = Catalog.model_validate(yaml.safe_load(router["data"]["experiments.yaml"]))
    assert catalog.experiment(f"canary-{LONGEST_MODEL}")


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        (
            MODEL_NAME,
            ["ranker-dcn", "1st-ranker", LONGEST_MODEL],
            ["a--b", "-a", LONGEST_MODEL + "m"],
        ),
        (EXPERIMENT_NAME, ["ranker-blend", "x" * 63], ["Blend", "a_b", "x" * 64]),
    ],
    ids=["Model", "Experiment"],
)
def test_model_and_experiment_names_are_router_slugs(
    rule: NameRule, good: list[str], bad: list[str]
) -> None:
    for name in good:
        assert rule.problem(name) is None, name
    for name in bad:
        assert rule.problem(name), name


def test_graph_references_follow_the_same_rules() -> None:
    """A spec cannot point at a Model or graph that could not exist."""
    spec = _schema("InferenceGraph")["properties"]["spec"]["properties"]
    stages = spec["stages"]["properties"]
    for field in (
        stages["retrieval"]["properties"]["model"],
        stages["ranking"]["properties"]["models"]["items"],
        stages["ranking"]["properties"]["combiner"],
    ):
        assert (field["pattern"], field["maxLength"]) == (MODEL_NAME.pattern, MODEL_NAME.max_length)
    experiment = spec["experiment"]
    assert (experiment["pattern"], experiment["maxLength"]) == (
        EXPERIMENT_NAME.pattern,
        EXPERIMENT_NAME.max_length,
    )
    graph = _schema("Experiment")["properties"]["spec"]["properties"]["graph"]
    assert (graph["pattern"], graph["maxLength"]) == (GRAPH_NAME.pattern, GRAPH_NAME.max_length)
