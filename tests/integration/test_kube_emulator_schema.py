"""Unit tests of ``kube_emulator_schema``: the API server's body rules without any server.

The expected messages are those a real kube-apiserver 1.20.2 gave for the same bodies and
schemas (``SCHEMA`` with a ``type`` on each node, since a real server takes only structural
schemas).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.integration.kube_emulator_schema import (
    DNS1035,
    LABEL,
    SUBDOMAIN,
    CrdSchema,
    FieldError,
    apply_defaults,
    coerce_metadata,
    crd_schema_errors,
    go_float,
    go_json_numbers,
    go_quote,
    go_regex,
    invalid_message,
    name_errors,
    name_rule,
    prune,
    prune_nulls,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "replicas": {"type": "integer", "minimum": 0, "default": 1},
                "budget": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "items": {
                    "type": "array",
                    "maxItems": 2,
                    "items": {
                        "type": "object",
                        "properties": {"id": {"type": "string"}, "w": {"default": 5}},
                    },
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"known": {"type": "object", "properties": {"x": {}}}},
                },
                "port": {"x-kubernetes-int-or-string": True},
                "maybe": {"type": "string", "nullable": True},
            },
        },
    },
}


def test_go_formatting_of_values() -> None:
    cases = {
        0.0: "0",
        5.0: "5",
        -5.5: "-5.5",
        123456.0: "123456",
        1e6: "1e+06",
        2000000.5: "2.0000005e+06",
        2e21: "2e+21",
        0.0001: "0.0001",
        0.00001: "1e-05",
        0.01: "0.01",
    }
    assert {value: go_float(value) for value in cases} == cases
    assert go_quote('a"b\\c\nd\x01é') == '"a\\"b\\\\c\\nd\\x01é"'


def test_field_errors_print_like_apimachinery() -> None:
    assert str(FieldError("FieldValueInvalid", "spec.x", -5, "too small")) == (
        "spec.x: Invalid value: -5: too small"
    )
    assert FieldError("FieldValueInvalid", "spec.x", "s", "d").body() == 'Invalid value: "s": d'
    assert FieldError("FieldValueInvalid", "spec.x", None, "d").body() == 'Invalid value: "null": d'
    assert FieldError("FieldValueInvalid", "spec.x", 1.5, "d").body() == "Invalid value: 1.5: d"
    assert FieldError("FieldValueInvalid", "spec.x", {"c": 1, "d": 2}, "d").body() == (
        'Invalid value: map[string]interface {}{"c":1, "d":2}: d'
    )
    assert FieldError("FieldValueRequired", "spec.y").body() == "Required value"
    one = FieldError("FieldValueRequired", "spec")
    assert invalid_message("Model.serving.cascade.dev", "m", [one, one]) == (
        'Model.serving.cascade.dev "m" is invalid: spec: Required value'
    )
    two = FieldError("FieldValueRequired", "spec.a")
    assert invalid_message("Service", "s", [one, two]) == (
        'Service "s" is invalid: [spec: Required value, spec.a: Required value]'
    )


@pytest.mark.parametrize(
    ("group", "plural", "rule"),
    [
        ("", "services", DNS1035),
        ("", "namespaces", LABEL),
        ("", "events", None),
        ("", "configmaps", SUBDOMAIN),
        ("apps", "deployments", SUBDOMAIN),
        ("events.k8s.io", "events", SUBDOMAIN),
        ("serving.cascade.dev", "models", SUBDOMAIN),
    ],
)
def test_name_rules_per_kind(group: str, plural: str, rule: Any) -> None:
    assert name_rule(group, plural) == rule


def test_name_errors() -> None:
    assert name_errors({"name": "recs-graph"}, DNS1035) == []
    assert [e.detail for e in name_errors({"name": "2024-recs"}, DNS1035)] == [DNS1035[2]]
    assert name_errors({"name": "2024-recs"}, LABEL) == []
    assert name_errors({"name": "a.b.c"}, SUBDOMAIN) == []
    too_long = name_errors({"name": "a" * 254 + "_"}, SUBDOMAIN)
    assert [e.detail for e in too_long] == ["must be no more than 253 characters", SUBDOMAIN[2]]
    # A generateName may end in '-'; it is checked as a prefix, then the generated name.
    assert name_errors({"generateName": "gen-", "name": "gen-x2b4z"}, DNS1035) == []
    errors = name_errors({"generateName": "Gen-", "name": "Gen-x2b4z"}, SUBDOMAIN)
    assert [(e.field, e.value) for e in errors] == [
        ("metadata.generateName", "Gen-"),
        ("metadata.name", "Gen-x2b4z"),
    ]
    assert [str(e) for e in name_errors({}, SUBDOMAIN)] == [
        "metadata.name: Required value: name or generateName is required"
    ]
    assert name_errors({"name": "Odd_Event.1"}, None) == []
    assert [e.detail for e in name_errors({"name": "a/b"}, None)] == ["may not contain '/'"]


def test_prune_keeps_what_the_schema_specifies() -> None:
    obj = {
        "apiVersion": "v",
        "kind": "K",
        "metadata": {"name": "x", "odd": 1},  # metadata is coerced, not pruned
        "status": {"gone": True},  # no status in the schema
        "spec": {
            "replicas": 2,
            "unknown": 1,
            "items": [{"id": "a", "extra": 1}],
            "labels": {"k": "v"},
            "free": {"any": {"thing": 1}, "known": {"x": 1, "y": 2}},
        },
    }
    prune(obj, SCHEMA, root=True)
    assert obj == {
        "apiVersion": "v",
        "kind": "K",
        "metadata": {"name": "x", "odd": 1},
        "spec": {
            "replicas": 2,
            "items": [{"id": "a"}],
            "labels": {"k": "v"},
            "free": {"any": {"thing": 1}, "known": {"x": 1}},
        },
    }
    assert coerce_metadata(obj)["metadata"] == {"name": "x"}
    untyped_items = {"type": "array"}
    values = [{"a": 1}, 2]
    prune(values, untyped_items)
    assert values == [{}, 2]  # objects nobody specified are emptied, scalars stay


def test_nulls_are_dropped_or_defaulted() -> None:
    spec = {"replicas": None, "budget": None, "maybe": None, "labels": {"k": None}}
    prune_nulls(spec, SCHEMA["properties"]["spec"])
    assert spec == {"replicas": None, "maybe": None, "labels": {}}  # replicas has a default
    apply_defaults(spec, SCHEMA["properties"]["spec"])
    assert spec == {"replicas": 1, "maybe": None, "labels": {}}


def test_defaults_fill_missing_fields_inside_existing_objects() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {
                "type": "object",
                "default": {"b": 1},
                "properties": {"b": {}, "c": {"default": 2}},
            },
            "list": {
                "type": "array",
                "items": {"type": "object", "properties": {"d": {"default": 3}}},
            },
            "map": {
                "type": "object",
                "additionalProperties": {"type": "object", "properties": {"e": {"default": 4}}},
            },
            "absent": {"type": "object", "properties": {"f": {"default": 5}}},
        },
    }
    value: dict[str, Any] = {"list": [{}, {"d": 0}], "map": {"k": {}}}
    apply_defaults(value, schema)
    assert value == {
        "a": {"b": 1, "c": 2},  # a default carries the defaults inside it
        "list": [{"d": 3}, {"d": 0}],
        "map": {"k": {"e": 4}},
    }  # "absent" stays absent: defaults apply only inside objects that exist


def test_normalize_is_pure_and_whole_floats_read_back_as_integers() -> None:
    schema = CrdSchema(SCHEMA)
    obj = {"apiVersion": "v", "kind": "K", "metadata": {"name": "x"}, "spec": {"budget": 2.0}}
    before = copy.deepcopy(obj)
    normalized = schema.normalize(obj)
    assert obj == before
    assert normalized["spec"] == {"budget": 2.0, "replicas": 1}
    assert go_json_numbers(normalized["spec"]) == {"budget": 2, "replicas": 1}
    assert go_json_numbers({"x": [0.5, 3.0, True]}) == {"x": [0.5, 3, True]}


def test_validation_messages_and_paths() -> None:
    schema = CrdSchema(SCHEMA)
    bad = {
        "spec": {
            "replicas": -1,
            "budget": 0,
            "mode": "c",
            "items": [{"id": 1}, {}, {}],
            "labels": {"k": 2},
            "port": 1.5,
        }
    }
    assert [str(e) for e in schema.validate(bad)] == [
        "spec.budget: Invalid value: 0: spec.budget in body should be greater than 0",
        "spec.items: Invalid value: 3: spec.items in body should have at most 2 items",
        # the item's own path is lost: 1.20 names the array
        'spec.items.id: Invalid value: "integer": spec.items.id in body must be of type string: '
        '"integer"',
        'spec.labels.k: Invalid value: "integer": spec.labels.k in body must be of type string: '
        '"integer"',
        'spec.mode: Unsupported value: "c": supported values: "a", "b"',
        'spec.port: Invalid value: "number": spec.port in body must be of type integer,string: '
        '"number"',
        "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal "
        "to 0",
    ]
    assert [str(e) for e in schema.validate({})] == ["spec: Required value"]
    assert schema.validate({"spec": {"replicas": 2.0, "port": "http", "maybe": None}}) == []
    # (normalize() drops such a null before validation; the validator alone reports it twice)
    null = schema.validate({"spec": {"mode": None}})
    assert [e.body() for e in null] == [
        'Invalid value: "null": spec.mode in body must be of type string: "null"',
        'Unsupported value: "null": supported values: "a", "b"',
    ]


def test_go_regex_semantics() -> None:
    assert go_regex("^[a-z]+$").search("abc")
    assert not go_regex("^[a-z]+$").search("abc\n")  # Python's `$` would match here
    assert go_regex("[$]").search("$")  # a `$` in a class stays literal
    assert go_regex(r"^\d+\z").search("12")
    assert not go_regex(r"^\d+$").search("١٢")  # \d is ASCII in Go


def test_crd_schema_errors() -> None:
    def crd(*schemas: dict[str, Any] | None) -> dict[str, Any]:
        versions = [
            {"name": f"v{i}", **({"schema": {"openAPIV3Schema": s}} if s is not None else {})}
            for i, s in enumerate(schemas)
        ]
        return {"spec": {"versions": versions}}

    assert crd_schema_errors(crd(SCHEMA, SCHEMA)) == []
    assert [str(e) for e in crd_schema_errors(crd(SCHEMA, None))] == [
        "spec.versions[1].schema.openAPIV3Schema: Required value: schemas are required"
    ]
    assert [str(e) for e in crd_schema_errors(crd({"properties": {}}))] == [
        "spec.validation.openAPIV3Schema.type: Required value: must not be empty at the root"
    ]
    defaults = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "default": 5},
            "b": {
                "type": "object",
                "properties": {"c": {"type": "integer", "minimum": 3}},
                "default": {"c": 1, "d": 2},
            },
            "p": {"type": "string", "pattern": "("},
        },
    }
    root = "spec.versions[1].schema.openAPIV3Schema.properties"
    *errors, pattern = [str(e) for e in crd_schema_errors(crd(SCHEMA, defaults))]
    assert errors == [
        f'{root}[a].default: Invalid value: "integer":  in body must be of type string: "integer"',
        f'{root}[b].default: Invalid value: map[string]interface {{}}{{"c":1, "d":2}}: '
        "must not have unknown fields",
        f"{root}[b].default.c: Invalid value: 1: c in body should be greater than or equal to 3",
    ]
    assert pattern.startswith(
        f'{root}[p].pattern: Invalid value: "(": must be a valid regular expression, but isn\'t: '
    )
