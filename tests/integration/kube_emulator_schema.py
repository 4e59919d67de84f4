"""What kube-apiserver 1.20 checks and rewrites in an object's body, as pure functions.

Why: the operator's integration tests run against ``kube_emulator``, and an emulator that accepts
what a real API server refuses hides bugs until a cluster finds them. This module holds the
server's rules for the body of a write, apart from the emulator's HTTP and storage, so that they
can be tested on their own:

- ``CrdSchema``: a CRD version's structural ``openAPIV3Schema`` applied like the apiextensions
  server applies it: unknown fields pruned (unless ``x-kubernetes-preserve-unknown-fields``),
  non-nullable nulls dropped, ``default``s filled in, then validation with go-openapi's messages.
  Validation runs on ``jsonschema``'s Draft 4 validator (OpenAPI v3's ``exclusiveMinimum: true``
  is Draft 4's), with Go's regexp semantics for ``pattern`` and Go's acceptance of ``2.0`` as an
  integer.
- ``crd_schema_errors``: what the server checks in a CRD's schemas (present, an object at the
  root, patterns that compile, defaults that are pruned and valid).
- ``name_errors``: the ``metadata.name`` rules of each kind (DNS-1035 labels for Services, ...).
- ``FieldError``/``invalid_message``: the ``field.Error`` list and the 422 message built from it.

The messages are 1.20's, checked against a real 1.20.2 server, quirks included: an error inside
an array names the array, not the item (go-openapi's item validators keep the parent's path), and
``x-kubernetes-validations`` (CEL) rules are ignored, since 1.20 does not evaluate them. Formats
(``format: date-time``, ...) are not checked: the chart's CRDs use none.
"""

from __future__ import annotations

import copy
import decimal
import functools
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
import jsonschema.validators

Obj = dict[str, Any]

INVALID = "FieldValueInvalid"
REQUIRED = "FieldValueRequired"
NOT_SUPPORTED = "FieldValueNotSupported"
FORBIDDEN = "FieldValueForbidden"
# field.ErrorType -> how ErrorBody() names it; these types print no value (only the detail).
_TYPE_TEXT = {
    INVALID: "Invalid value",
    REQUIRED: "Required value",
    NOT_SUPPORTED: "Unsupported value",
    FORBIDDEN: "Forbidden",
}
_VALUELESS = frozenset({REQUIRED, FORBIDDEN})

# ObjectMeta's fields: the server decodes metadata into the typed struct, dropping anything else.
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "clusterName",
        "managedFields",
    }
)
_META_FIELDS = ("apiVersion", "kind", "metadata")  # never pruned at a resource's root


# -- Go's formatting ----------------------------------------------------------------------------


def go_float(value: float) -> str:
    """``fmt.Sprintf("%v", float64)``: shortest digits, exponent form from 1e+06 and below 1e-04."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    digits_tuple, exponent = decimal.Decimal(repr(abs(value))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_tuple))
    assert isinstance(exponent, int)
    point = len(digits) + exponent  # the decimal point sits after this many digits
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GO_ESCAPES |= {"\v": "\\v", '"': '\\"', "\\": "\\\\"}


def go_quote(text: str) -> str:
    """``strconv.Quote``: printable characters as they are, the rest escaped."""
    out = []
    for char in text:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        elif not char.isprintable():
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _go_sharp(value: Any) -> str:
    """``%#v`` of a decoded JSON value (how field errors print maps and lists)."""
    if isinstance(value, dict):
        items = ", ".join(f"{go_quote(k)}:{_go_sharp(value[k])}" for k in sorted(value))
        return "map[string]interface {}{" + items + "}"
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(_go_sharp(v) for v in value) + "}"
    if value is None:
        return "interface {}(nil)"
    return _go_value(value)


def _go_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return go_quote(value)
    return _go_sharp(value)


def json_type(value: Any) -> str:
    """The JSON type go-openapi names in its messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# -- field errors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """One ``field.Error``: what a 422 ``Status`` lists in ``details.causes``."""

    reason: str
    field: str
    value: Any = ""
    detail: str = ""

    def body(self) -> str:
        """``ErrorBody()``: the cause's message, e.g. ``Invalid value: -5: <detail>``."""
        text = _TYPE_TEXT.get(self.reason, self.reason)
        if self.reason not in _VALUELESS:
            value = "null" if self.value is None else self.value
            text += f": {_go_value(value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> Obj:
        return {"reason": self.reason, "message": self.body(), "field": self.field}


def not_supported(field: str, value: Any, supported: Sequence[Any]) -> FieldError:
    names = [v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for v in supported]
    detail = "supported values: " + ", ".join(go_quote(n) for n in names) if names else ""
    return FieldError(NOT_SUPPORTED, field, value, detail)


def invalid_message(qualified_kind: str, name: str, errors: Sequence[FieldError]) -> str:
    """``apierrors.NewInvalid``'s message: one error as is, several in brackets, repeats once."""
    unique = list(dict.fromkeys(str(e) for e in errors))
    joined = unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"
    return f'{qualified_kind} "{name}" is invalid: {joined}'


# -- object names -------------------------------------------------------------------------------

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + r"(\." + _DNS1123_LABEL + r")*"
_DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
# (regex, max length, the message apimachinery's validation.go gives for a mismatch)
SUBDOMAIN = (
    _DNS1123_SUBDOMAIN,
    253,
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    f"for validation is '{_DNS1123_SUBDOMAIN}')",
)
LABEL = (
    _DNS1123_LABEL,
    63,
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    f"used for validation is '{_DNS1123_LABEL}')",
)
DNS1035 = (
    _DNS1035_LABEL,
    63,
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    f"'abc-123', regex used for validation is '{_DNS1035_LABEL}')",
)
NameRule = tuple[str, int, str] | None  # None: only what any URL path segment needs


def name_rule(group: str, plural: str) -> NameRule:
    """The name validation of a resource: Services take DNS-1035 labels, Namespaces DNS-1123
    labels, core/v1 Events anything (their legacy validation checks no name), the rest (custom
    resources included) DNS-1123 subdomains."""
    if group == "":
        return {"services": DNS1035, "namespaces": LABEL, "events": None}.get(plural, SUBDOMAIN)
    return SUBDOMAIN


def _name_messages(value: str, rule: NameRule, *, prefix: bool) -> list[str]:
    if rule is None:
        if value in (".", "..") and not prefix:
            return [f"may not be {value!r}"]
        bad = [c for c in ("/", "%") if c in value]
        return [f"may not contain {c!r}" for c in bad]
    pattern, limit, message = rule
    if prefix and value.endswith("-"):
        value = value[:-1] + "a"  # maskTrailingDash: a generateName may end in '-'
    found = [f"must be no more than {limit} characters"] if len(value) > limit else []
    if not re.fullmatch(pattern, value):
        found.append(message)
    return found


def name_errors(meta: Mapping[str, Any], rule: NameRule) -> list[FieldError]:
    """``ValidateObjectMetaAccessor``'s name checks (after name generation)."""
    errors = [
        FieldError(INVALID, "metadata.generateName", meta["generateName"], message)
        for message in (
            _name_messages(meta["generateName"], rule, prefix=True)
            if meta.get("generateName")
            else []
        )
    ]
    name = meta.get("name") or ""
    if not name:
        errors.append(
            FieldError(REQUIRED, "metadata.name", detail="name or generateName is required")
        )
    else:
        messages = _name_messages(name, rule, prefix=False)
        errors += [FieldError(INVALID, "metadata.name", name, m) for m in messages]
    return errors


def coerce_metadata(obj: Obj) -> Obj:
    """The object with only ObjectMeta's fields left in its metadata (a copy if any went)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or meta.keys() <= OBJECT_META_FIELDS:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k in OBJECT_META_FIELDS}}


def go_json_numbers(value: Any) -> Any:
    """A decoded custom resource as the server sends it back: Go encodes float64 ``50.0`` as
    ``50``, so whole floats read back as integers."""
    if isinstance(value, dict):
        return {k: go_json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [go_json_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


# -- structural schemas: pruning, nulls, defaults -----------------------------------------------


def _additional(schema: Obj) -> tuple[bool, Obj | None]:
    """``additionalProperties`` as the structural schema sees it: whether other keys are
    allowed, and their schema (``None`` for ``true``: any value, itself pruned empty)."""
    extra = schema.get("additionalProperties", False)
    if extra is True:
        return True, None
    return (True, extra) if isinstance(extra, dict) else (False, None)


def prune(value: Any, schema: Obj | None, *, root: bool = False) -> None:
    """Drop (in place) the fields ``schema`` does not specify, like ``pruning.Prune``.

    At a resource's root, and in ``x-kubernetes-embedded-resource`` objects, ``apiVersion``,
    ``kind`` and ``metadata`` stay (metadata is coerced separately)."""
    if schema is not None and schema.get("x-kubernetes-preserve-unknown-fields"):
        _skip_prune(value, schema, embedded=root)
        return
    if isinstance(value, dict):
        if schema is None:
            value.clear()
            return
        embedded = root or bool(schema.get("x-kubernetes-embedded-resource"))
        properties, (other, extra) = schema.get("properties") or {}, _additional(schema)
        for key in list(value):
            if embedded and key in _META_FIELDS:
                continue
            if key in properties:
                prune(value[key], properties[key])
            elif other:
                prune(value[key], extra)
            else:
                del value[key]
    elif isinstance(value, list):
        for item in value:
            prune(item, None if schema is None else schema.get("items"))


def _skip_prune(value: Any, schema: Obj | None, *, embedded: bool = False) -> None:
    """Under ``x-kubernetes-preserve-unknown-fields``: unknown fields stay, known ones are
    pruned by their own schemas."""
    if schema is None:
        return
    if isinstance(value, dict):
        embedded = embedded or bool(schema.get("x-kubernetes-embedded-resource"))
        properties, (other, extra) = schema.get("properties") or {}, _additional(schema)
        for key, item in value.items():
            if embedded and key in _META_FIELDS:
                continue
            if key in properties:
                prune(item, properties[key])
            elif other:
                prune(item, extra)
    elif isinstance(value, list):
        for item in value:
            _skip_prune(item, schema.get("items"))


def _has_default(schema: Obj | None) -> bool:
    return schema is not None and schema.get("default") is not None


def _nullable(schema: Obj | None) -> bool:
    return schema is not None and bool(schema.get("nullable"))


def _field_schema(schema: Obj | None, key: str) -> Obj | None:
    if schema is None:
        return None
    properties = schema.get("properties") or {}
    if key in properties:
        sub: Obj = properties[key]
        return sub
    return _additional(schema)[1]


def prune_nulls(value: Any, schema: Obj | None) -> None:
    """Drop (in place) ``null``s of non-nullable fields that have no default (the others are
    defaulted), like ``PruneNonNullableNullsWithoutDefaults``."""
    if isinstance(value, dict):
        for key in list(value):
            sub = _field_schema(schema, key)
            if value[key] is None and sub is not None and not _nullable(sub):
                if not _has_default(sub):
                    del value[key]
            else:
                prune_nulls(value[key], sub)
    elif isinstance(value, list):
        for item in value:
            prune_nulls(item, None if schema is None else schema.get("items"))


def apply_defaults(value: Any, schema: Obj | None) -> None:
    """Fill in (in place) missing fields, and non-nullable nulls, from the schema's defaults;
    like ``structuraldefaulting.Default``: only inside objects that exist."""
    if schema is None:
        return
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if _has_default(sub) and (
                key not in value or (value[key] is None and not _nullable(sub))
            ):
                value[key] = copy.deepcopy(sub["default"])
        extra = _additional(schema)[1]
        for key in value:
            if key in properties:
                apply_defaults(value[key], properties[key])
            elif extra is not None:
                if value[key] is None and not _nullable(extra):
                    value[key] = copy.deepcopy(extra.get("default"))
                apply_defaults(value[key], extra)
    elif isinstance(value, list):
        items = schema.get("items")
        if not isinstance(items, dict):
            return
        for index, item in enumerate(value):
            if item is None and not _nullable(items):
                value[index] = copy.deepcopy(items.get("default"))
            apply_defaults(value[index], items)


# -- validation ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def go_regex(pattern: str) -> re.Pattern[str]:
    """A Go (RE2) pattern for Python's ``re``: ``$`` and ``\\z`` match only at the very end
    (Python's ``$`` also matches before a final newline), ``\\d``/``\\w`` are ASCII."""
    out, in_class, i = [], False, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            pair = pattern[i : i + 2]
            out.append(r"\Z" if pair == r"\z" else pair)
            i += 2
            continue
        if in_class:
            in_class = char != "]" or out[-1] in ("[", "[^")
        elif char == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "^":
                out.append("[^")
                i += 2
                continue
        elif char == "$":
            char = r"\Z"
        out.append(char)
        i += 1
    return re.compile("".join(out), re.ASCII)


def _go_pattern(
    validator: Any, pattern: str, instance: Any, schema: Obj
) -> Iterator[jsonschema.ValidationError]:
    if isinstance(instance, str) and not go_regex(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _is_integer(checker: Any, instance: Any) -> bool:
    # go-openapi takes a whole float64 (JSON `2.0`) for an integer.
    if isinstance(instance, bool):
        return False
    return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())


_Draft4 = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    validators={"pattern": _go_pattern},
    type_checker=jsonschema.Draft4Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)
_NODE_LISTS = ("allOf", "anyOf", "oneOf")


def _for_jsonschema(schema: Any) -> Any:
    """The schema in Draft 4 terms: ``nullable`` and ``x-kubernetes-int-or-string`` as types."""
    if not isinstance(schema, dict):
        return schema
    node = dict(schema)
    if node.get("x-kubernetes-int-or-string") and "type" not in node:
        node["type"] = ["integer", "string"]
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if isinstance(node.get("properties"), dict):
        node["properties"] = {k: _for_jsonschema(v) for k, v in node["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            node[key] = _for_jsonschema(node[key])
    for key in _NODE_LISTS:
        if isinstance(node.get(key), list):
            node[key] = [_for_jsonschema(v) for v in node[key]]
    return node


def _bound(bound: float, instance: Any) -> str:
    # An integer is checked against int64(bound), and the message prints that.
    return str(int(bound)) if isinstance(instance, int) else go_float(float(bound))


def _to_field_errors(
    error: jsonschema.ValidationError, name: str, field: str, seen_required: set[str]
) -> list[FieldError]:
    """go-openapi's error for one ``jsonschema`` error, as ``ValidateCustomResource`` maps it."""
    keyword, instance, limit = error.validator, error.instance, error.validator_value
    schema = error.schema if isinstance(error.schema, dict) else {}
    detail = f"{name} in body"
    if keyword == "required":
        if field in seen_required:
            return []
        seen_required.add(field)
        missing = [k for k in limit if isinstance(instance, dict) and k not in instance]
        return [FieldError(REQUIRED, f"{field}.{k}" if field else k) for k in missing]
    if keyword == "type":
        types = [limit] if isinstance(limit, str) else [t for t in limit if t != "null"]
        kind = json_type(instance)
        return [
            FieldError(
                INVALID, field, kind, f'{detail} must be of type {",".join(types)}: "{kind}"'
            )
        ]
    if keyword == "enum":
        return [not_supported(field, instance, limit)]
    if keyword in ("minimum", "maximum"):
        exclusive = bool(
            schema.get("exclusiveMinimum" if keyword == "minimum" else "exclusiveMaximum")
        )
        side = "greater" if keyword == "minimum" else "less"
        relation = f"{side} than" if exclusive else f"{side} than or equal to"
        return [
            FieldError(
                INVALID, field, instance, f"{detail} should be {relation} {_bound(limit, instance)}"
            )
        ]
    simple = {
        "minLength": (instance, f"should be at least {limit} chars long"),
        "maxLength": (instance, f"should be at most {limit} chars long"),
        "pattern": (instance, f"should match '{limit}'"),
        "minItems": (
            len(instance) if isinstance(instance, list) else 0,
            f"should have at least {limit} items",
        ),
        "maxItems": (
            len(instance) if isinstance(instance, list) else 0,
            f"should have at most {limit} items",
        ),
        "uniqueItems": ("", "shouldn't contain duplicates"),
        "multipleOf": (instance, f"should be a multiple of {_go_value(limit)}"),
        "minProperties": (limit, f"should have at least {limit} properties"),
        "maxProperties": (limit, f"should have at most {limit} properties"),
    }
    if keyword in simple:
        value, what = simple[keyword]
        return [FieldError(INVALID, field, value, f"{detail} {what}")]
    # anyOf/oneOf/not come back from go-openapi as plain errors, mapped to the caller's path.
    combinator = {
        "anyOf": "must validate at least one schema (anyOf)",
        "oneOf": "must validate one and only one schema (oneOf). Found none valid",
        "not": "must not validate the schema (not)",
    }
    message = f"{go_quote(name)} {combinator[keyword]}" if keyword in combinator else error.message
    return [FieldError(INVALID, "<nil>", "", message)]


class CrdSchema:
    """One CRD version's ``openAPIV3Schema``, ready to normalize and validate objects."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema: Obj = copy.deepcopy(dict(schema))
        _prune_defaults(self.schema)  # the server serves defaults pruned by their own schema
        self._validator = _Draft4(_for_jsonschema(self.schema))

    def normalize(self, obj: Obj) -> Obj:
        """The object as the server decodes a request body or a stored object: pruned, its
        non-nullable nulls dropped, defaulted, its metadata coerced. A new object."""
        result = copy.deepcopy(coerce_metadata(obj))
        prune(result, self.schema, root=True)
        prune_nulls(result, self.schema)
        apply_defaults(result, self.schema)
        return result

    def validate(self, obj: Any) -> list[FieldError]:
        """The schema's field errors for ``obj``, ordered by field."""
        return validate(self._validator, obj, field_root="")


def validate(validator: Any, value: Any, field_root: str) -> list[FieldError]:
    errors: list[FieldError] = []
    seen_required: set[str] = set()
    for error in validator.iter_errors(value):
        # Items report their array's path (go-openapi's item validators keep the parent's path).
        name = ".".join(str(p) for p in error.absolute_path if isinstance(p, str))
        field = ".".join(p for p in (field_root, name) if p)
        errors += _to_field_errors(error, name, field, seen_required)
    return sorted(errors, key=lambda e: e.field)


def _walk(schema: Obj, path: str) -> Iterator[tuple[Obj, str]]:
    """Each schema node with its CRD field path (``.properties[spec].items``); not into
    ``additionalProperties``, where defaults are forbidden."""
    yield schema, path
    for key, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict):
            yield from _walk(sub, f"{path}.properties[{key}]")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}.items")


def _prune_defaults(schema: Obj) -> None:
    for node, _ in _walk(schema, ""):
        if _has_default(node):
            node["default"] = copy.deepcopy(node["default"])
            prune(node["default"], node)


def crd_schema_errors(crd: Mapping[str, Any]) -> list[FieldError]:
    """What the server refuses in a v1 CRD's schemas: a missing schema, a root that is not an
    object, a pattern that does not compile, a default with unknown fields or an invalid value.
    (1.20 holds a schema shared by all versions at ``spec.validation``; the paths say so.)"""
    versions = [v for v in (crd.get("spec") or {}).get("versions") or [] if isinstance(v, dict)]
    schemas = [((v.get("schema") or {}).get("openAPIV3Schema")) for v in versions]
    errors = [
        FieldError(
            REQUIRED,
            f"spec.versions[{i}].schema.openAPIV3Schema",
            detail="schemas are required",
        )
        for i, schema in enumerate(schemas)
        if not isinstance(schema, dict)
    ]
    if errors:
        return errors
    shared = all(s == schemas[0] for s in schemas)
    for index, schema in enumerate(schemas[:1] if shared else schemas):
        assert isinstance(schema, dict)
        root = (
            "spec.validation.openAPIV3Schema"
            if shared
            else f"spec.versions[{index}].schema.openAPIV3Schema"
        )
        if "type" not in schema:
            errors.append(
                FieldError(REQUIRED, f"{root}.type", detail="must not be empty at the root")
            )
        elif schema["type"] != "object":
            errors.append(not_supported(f"{root}.type", schema["type"], ["object"]))
        errors += _node_errors(schema, root)
    return errors


def _node_errors(schema: Obj, root: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for node, path in _walk(schema, root):
        if isinstance(node.get("pattern"), str):
            try:
                go_regex(node["pattern"])
            except re.error as exc:
                detail = f"must be a valid regular expression, but isn't: {exc}"
                errors.append(FieldError(INVALID, f"{path}.pattern", node["pattern"], detail))
                continue
        if not _has_default(node):
            continue
        default = node["default"]
        pruned = copy.deepcopy(default)
        prune(pruned, node)
        if pruned != default:
            errors.append(
                FieldError(INVALID, f"{path}.default", default, "must not have unknown fields")
            )
        try:  # a pattern that does not compile is reported on its own node
            errors += validate(_Draft4(_for_jsonschema(node)), default, f"{path}.default")
        except re.error:
            continue
    return errors
