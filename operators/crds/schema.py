"""CustomResourceDefinitions generated from the pydantic specs.

pydantic writes JSON Schema (draft 2020-12); a CRD wants a *structural* OpenAPI v3 schema:
no ``$ref``, no ``anyOf`` for optionals, ``exclusiveMinimum`` as a flag, free-form maps marked
``x-kubernetes-preserve-unknown-fields``. :func:`openapi_schema` does that translation, and
:func:`crd_manifests` wraps it with names, printer columns and the status subresource.

The manifests are committed in the chart (``charts/cascade/crds/``); ``python -m
operators.crds.schema --out charts/cascade/crds`` rewrites them, and a test fails when the
committed files and the specs drift apart.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from operators.crds.specs import (
    EXPERIMENT_NAME,
    GRAPH_NAME,
    GROUP,
    MODEL_NAME,
    VERSION,
    ExperimentSpec,
    InferenceGraphSpec,
    ModelSpec,
    NameRule,
)
from operators.crds.status import ExperimentStatus, GraphStatus, ModelStatus

_DROP = {"title", "$defs", "discriminator"}
#: Keys whose values are data, not schemas: copied as they are, never translated.
_LITERAL = {"enum", "examples", "x-kubernetes-validations"}


@dataclass(frozen=True)
class Kind:
    """One custom resource: its names, spec and status models, and kubectl columns."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[tuple[str, str, str], ...]  # (name, type, jsonPath)
    name_rule: NameRule  # what metadata.name must be, for the names made from it

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def singular(self) -> str:
        return self.kind.lower()


KINDS = (
    Kind(
        "Model",
        "models",
        ("cmodel",),
        ModelSpec,
        ModelStatus,
        (
            ("Version", "integer", ".spec.version"),
            ("Serving", "integer", ".status.servingVersion"),
            ("Canary", "string", ".status.canary.phase"),
            ("Weight", "integer", ".status.canary.weight"),
            ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ),
        MODEL_NAME,
    ),
    Kind(
        "InferenceGraph",
        "inferencegraphs",
        ("ig",),
        InferenceGraphSpec,
        GraphStatus,
        (
            ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
            ("Graph", "integer", ".status.replicas.graph"),
            ("Triton", "integer", ".status.replicas.triton"),
            ("Canary", "string", ".status.canary"),
            ("Endpoint", "string", ".status.endpoint"),
        ),
        GRAPH_NAME,
    ),
    Kind(
        "Experiment",
        "experiments",
        ("cexp",),
        ExperimentSpec,
        ExperimentStatus,
        (
            ("Graph", "string", ".spec.graph"),
            ("Phase", "string", ".status.phase"),
            ("State", "string", ".spec.state"),
        ),
        EXPERIMENT_NAME,
    ),
)


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model`` (as the API server reads it)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs)
    return schema


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _structural({**target, **extra}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:  # Optional[X]: the field is simply not required
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return _structural({**options[0], **rest}, defs)
        raise ValueError(f"unions other than Optional cannot be structural: {node}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _structural(v, defs) for name, v in value.items()}
        elif key == "default":
            default = _without_nulls(value)
            if default is not None:  # a null default only says "unset": leave it out
                out[key] = default
        elif key in _LITERAL:
            out[key] = copy.deepcopy(value)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        else:
            out[key] = _structural(value, defs)
    free_form = out.get("additionalProperties") in (None, True, {})  # a map of Any values
    if out.get("type") == "object" and "properties" not in out and free_form:
        out.pop("additionalProperties", None)
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "object" and "properties" in out:
        out.pop("additionalProperties", None)  # structural schemas prune unknown fields
    return out


def _without_nulls(value: Any) -> Any:
    """``value`` with every ``null`` member of an object removed, at any depth.

    pydantic writes an unset optional as ``null``, also inside the default of a nested model
    (``autoscaling: {default: {targetP99Ms: null, ...}}``); the API server validates each
    default against its schema, where no field is nullable, and refuses the whole CRD. A missing
    key means the same to the operator (the field's default), so the nulls are dropped.
    """
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        if any(v is None for v in value):  # dropping one would change the list's meaning
            raise ValueError(f"a default holds a null list item, which no schema accepts: {value}")
        return [_without_nulls(v) for v in value]
    return value


def _metadata_schema(rule: NameRule) -> dict[str, Any]:
    """``metadata`` with the name rule: the one constraint a structural schema may put there."""
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": rule.pattern, "maxLength": rule.max_length}
        },
    }


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition manifest of ``kind``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "cascade"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["cascade"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": name, "type": type_, "jsonPath": path}
                        for name, type_, path in kind.columns
                    ]
                    + [
                        {
                            "name": "Age",
                            "type": "date",
                            "jsonPath": ".metadata.creationTimestamp",
                        }
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (kind.spec.__doc__ or kind.kind).strip(),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": _metadata_schema(kind.name_rule),
                                "spec": openapi_schema(kind.spec),
                                "status": openapi_schema(kind.status),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_manifests() -> dict[str, str]:
    """File name -> YAML text, for every CRD."""
    header = "# Generated by `python -m operators.crds.schema`; edit operators/crds/specs.py.\n"
    return {
        f"{kind.crd_name}.yaml": header + yaml.safe_dump(crd(kind), sort_keys=False, width=100)
        for kind in KINDS
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the CRD manifests.")
    parser.add_argument("--out", type=Path, default=Path("charts/cascade/crds"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in crd_manifests().items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
