"""Experiment designs: variants, experiments, layers and the catalog that holds them.

These models are the *declared* shape of every A/B test the router serves. They are frozen
(an assignment must never see a design change under it mid-request) and reject unknown keys
(a typo such as ``wieght`` must fail loudly instead of silently defaulting).

Every cross-field rule (weights summing to 100, unique variant names, allow-lists naming real
variants, a layer's traffic fitting beside its holdout) is checked here, at load time, so that
:mod:`ab_router.assignment` can stay a set of pure, branch-light functions. A broken rule raises
pydantic's ``ValidationError`` whose message starts with the offending field's name; HTTP code
that wants the package's own error kind calls :func:`load_catalog`, which re-raises it as
:class:`~ab_router.errors.InvalidDesign` (422).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ab_router.errors import InvalidDesign, UnknownExperiment

__all__ = [
    "SLUG_PATTERN",
    "WEIGHT_TOLERANCE",
    "Catalog",
    "Experiment",
    "Layer",
    "Variant",
    "load_catalog",
]

#: Lower-case letters and digits in hyphen-separated words (DNS-label-like), so names are safe
#: in URLs, metric labels and hash salts alike.
SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"

#: How far the variant weights may sum from 100: room for decimal fractions such as 33.33...,
#: small enough that no whole bucket (0.01 %) can go missing.
WEIGHT_TOLERANCE = 1e-6

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def _design_error(field: str, detail: str) -> ValueError:
    """Build the ``ValueError`` pydantic wraps into a ``ValidationError`` for a broken rule.

    The text is first formatted as an :class:`InvalidDesign` so it reads the same whether a
    caller sees the pydantic error or the package's own (via :func:`load_catalog`); it starts
    with the field's name because pydantic's ``loc`` is empty for model-level validators.
    """
    return ValueError(str(InvalidDesign(f"{field}: {detail}")))


class Variant(BaseModel):
    """One arm of an experiment and the share of the experiment's traffic it receives."""

    model_config = _FROZEN

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Variant name, unique within its experiment (e.g. 'control', 'treatment').",
    )
    weight: float = Field(
        ge=0,
        le=100,
        description="Percent of the experiment's units that get this variant; the weights of "
        "an experiment sum to 100. Resolution is one bucket, i.e. 0.01 %.",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Opaque settings the serving path applies for this variant "
        "(e.g. a model version or a threshold).",
    )


class Metric(BaseModel):
    """A metric the analysis reports: a primary or secondary outcome, or a guardrail.

    Its value per unit is the sum of the unit's outcome values under this name (a click counts
    1.0), so the unit of analysis is the unit of randomisation.
    """

    model_config = _FROZEN

    name: str = Field(min_length=1, max_length=64, description="Outcome name in the event log.")
    role: Literal["primary", "secondary", "guardrail"] = Field(
        default="primary",
        description="Primary and secondary metrics are tested for an effect (with multiple-"
        "testing control across them); guardrails must not degrade beyond their margin.",
    )
    mde_relative: float = Field(
        default=0.05,
        gt=0,
        le=10,
        description="Smallest relative effect worth detecting; sets the always-valid test's "
        "mixing prior (tau^2 = (mde x control mean)^2).",
    )
    direction: Literal["increase_is_bad", "decrease_is_bad"] = Field(
        default="increase_is_bad",
        description="For guardrails: which way is a degradation (latency: increase_is_bad).",
    )
    margin_relative: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="For guardrails: the tolerated relative degradation.",
    )


class Experiment(BaseModel):
    """A named test: which variants exist, how traffic is split and who is forced where.

    The first variant is the *control*. :mod:`ab_router.assignment` lays the others out around
    it so that ramping a treatment against the control moves only the units that must move.
    """

    model_config = _FROZEN

    name: str = Field(
        max_length=63,
        pattern=SLUG_PATTERN,
        description="Unique experiment name (slug: lower-case words joined by hyphens).",
    )
    salt: str = Field(
        min_length=1,
        description="Hash salt for the variant split; defaults to the name. Changing it "
        "reshuffles every unit, so keep it fixed for the experiment's lifetime.",
    )
    layer: str = Field(
        default="default",
        max_length=63,
        pattern=SLUG_PATTERN,
        description="Name of the layer this experiment belongs to; must match the Layer "
        "that lists it.",
    )
    variants: list[Variant] = Field(
        min_length=2,
        description="The arms, control first; at least two, unique names, weights summing to 100.",
    )
    allow_list: dict[str, str] = Field(
        default_factory=dict,
        description="Unit id -> variant name overrides (for QA); they win over hashing, "
        "holdout and status.",
    )
    status: Literal["draft", "running", "stopped"] = Field(
        default="running",
        description="Only a running experiment assigns variants by hash; draft and stopped "
        "ones serve every unit the default path (variant None).",
    )
    traffic_percent: float = Field(
        default=100,
        ge=0,
        le=100,
        description="Percent of the layer's traffic this experiment owns, as one contiguous "
        "range after the layer's holdout.",
    )
    metrics: list[Metric] = Field(
        default_factory=list,
        description="What the analysis reports; metric names are unique.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_salt(cls, data: Any) -> Any:
        """Fill ``salt`` from ``name`` so an experiment is reproducible without naming one."""
        if isinstance(data, Mapping) and data.get("salt") is None and "name" in data:
            return {**data, "salt": data["name"]}
        return data

    @field_validator("variants")
    @classmethod
    def _check_variants(cls, variants: list[Variant]) -> list[Variant]:
        """Reject duplicate names and weights that do not cover exactly 100 % of units."""
        names = [v.name for v in variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise _design_error("variants", f"duplicate variant names {duplicates}")
        weights = [v.weight for v in variants]
        total = sum(weights)
        if abs(total - 100.0) > WEIGHT_TOLERANCE:
            raise _design_error(
                "variants",
                f"weights {weights} sum to {total:g}, not 100 (tolerance {WEIGHT_TOLERANCE:g})",
            )
        return variants

    @model_validator(mode="after")
    def _check_allow_list(self) -> Self:
        """An override naming a variant that does not exist would silently serve nothing."""
        known = {v.name for v in self.variants}
        unknown = {unit: name for unit, name in self.allow_list.items() if name not in known}
        if unknown:
            raise _design_error(
                "allow_list",
                f"{unknown} name unknown variants; known variants are {sorted(known)}",
            )
        return self

    @property
    def control(self) -> Variant:
        """The baseline arm (the first variant)."""
        return self.variants[0]

    def variant(self, name: str) -> Variant:
        """Return the variant called ``name`` (``KeyError`` if there is none)."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


class Layer(BaseModel):
    """A set of mutually exclusive experiments sharing one slice of traffic.

    A unit's layer bucket picks at most one experiment: first the holdout range (no experiment
    at all, the clean baseline), then each experiment's ``traffic_percent`` in list order; any
    rest is unassigned. Experiments in *different* layers are hashed independently, so they
    overlap orthogonally.
    """

    model_config = _FROZEN

    name: str = Field(
        max_length=63,
        pattern=SLUG_PATTERN,
        description="Unique layer name; it salts the layer split ('layer:<name>').",
    )
    holdout_percent: float = Field(
        default=0,
        ge=0,
        le=100,
        description="Percent of the layer's units kept out of every experiment in it.",
    )
    experiments: list[Experiment] = Field(
        default_factory=list,
        description="Mutually exclusive experiments, each owning a contiguous share of the "
        "layer; their traffic_percent sum to at most 100 - holdout_percent.",
    )

    @model_validator(mode="after")
    def _check_experiments(self) -> Self:
        """Keep the layer's ranges disjoint and inside [0, 100 %]; names must agree."""
        wrong_layer = [e.name for e in self.experiments if e.layer != self.name]
        if wrong_layer:
            raise _design_error(
                "experiments",
                f"{wrong_layer} declare a layer other than {self.name!r}",
            )
        names = [e.name for e in self.experiments]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise _design_error("experiments", f"duplicate experiment names {duplicates}")
        traffic = [e.traffic_percent for e in self.experiments]
        total = sum(traffic)
        room = 100.0 - self.holdout_percent
        if total > room + WEIGHT_TOLERANCE:
            raise _design_error(
                "traffic_percent",
                f"experiments' traffic {traffic} sums to {total:g} but layer {self.name!r} has "
                f"only {room:g} % beside its holdout_percent {self.holdout_percent:g}",
            )
        return self


class Catalog(BaseModel):
    """Every layer the router serves; experiment names are unique across the catalog."""

    model_config = _FROZEN

    layers: list[Layer] = Field(
        default_factory=list,
        description="The layers; each experiment appears in exactly one.",
    )

    @model_validator(mode="after")
    def _check_unique(self) -> Self:
        """A name must resolve to exactly one experiment and one layer."""
        layer_names = [layer.name for layer in self.layers]
        dup_layers = sorted({n for n in layer_names if layer_names.count(n) > 1})
        if dup_layers:
            raise _design_error("layers", f"duplicate layer names {dup_layers}")
        names = [e.name for layer in self.layers for e in layer.experiments]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise _design_error("layers", f"experiments {dup} appear more than once")
        return self

    def experiment(self, name: str) -> Experiment:
        """Return the experiment called ``name``; raise ``UnknownExperiment`` (404) if none."""
        for layer in self.layers:
            for exp in layer.experiments:
                if exp.name == name:
                    return exp
        raise UnknownExperiment(f"no experiment named {name!r}")

    def layer_of(self, name: str) -> Layer:
        """Return the layer holding experiment ``name``; ``UnknownExperiment`` if none."""
        for layer in self.layers:
            if any(exp.name == name for exp in layer.experiments):
                return layer
        raise UnknownExperiment(f"no experiment named {name!r}")


def load_catalog(data: Mapping[str, Any]) -> Catalog:
    """Validate raw config into a :class:`Catalog`, raising ``InvalidDesign`` (422) if broken.

    For callers (HTTP handlers, config reloads) that map the package's errors to statuses and
    should not need to know pydantic's error type.
    """
    try:
        return Catalog.model_validate(data)
    except ValidationError as err:
        raise InvalidDesign(str(err)) from err
