"""The exposure/outcome log: the events an experiment's analysis is computed from.

Why a log of events rather than counters: counters cannot be deduplicated after the fact, so a
client retrying a write it never saw acknowledged would double count. Every event therefore
carries a client-chosen ``event_id``; a store keeps the first write of an id and ignores replays,
which makes "retry until acknowledged" safe.

Why acknowledgement means durable: an analysis that silently loses exposures after a crash is
biased in a way nobody can detect (losses cluster around the crash, not evenly across
variants). A store's ``record_*`` method returns only after the event has reached stable
storage; if it cannot promise that it raises :class:`~ab_router.errors.StoreError` and the
client must retry with the same ``event_id``.

Why an outcome for an unexposed unit is refused: it is a data error upstream (wrong experiment
name, wrong unit id, or an outcome logged before its exposure). Keeping it silently would
either be dropped by the analysis later or, worse, counted; raising
:class:`~ab_router.errors.EventError` surfaces the bug at the source.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EventStore",
    "Exposure",
    "Outcome",
    "Summary",
    "VariantStats",
    "count_conflicts",
    "first_exposures",
    "summarize",
    "unit_totals",
]


class _Event(BaseModel):
    """Fields every event carries; frozen so a recorded event cannot be mutated in place."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(min_length=1)
    experiment: str = Field(min_length=1)
    unit_id: str = Field(min_length=1)
    timestamp: float


class Exposure(_Event):
    """A unit was shown ``variant`` of ``experiment``.

    ``pre_metric`` is the unit's value of the primary metric before the experiment, kept for
    variance reduction (CUPED) in the analysis.
    """

    variant: str = Field(min_length=1)
    pre_metric: float | None = None


class Outcome(_Event):
    """A unit produced ``value`` of ``metric`` after being exposed in ``experiment``."""

    metric: str = Field(min_length=1)
    value: float


class VariantStats(NamedTuple):
    """Per-unit sufficient statistics of one variant for one metric.

    A unit's value is the sum of its outcomes for the metric (0 if it has none), so ``sum`` and
    ``sum_sq`` are over units, not events: the unit is the randomisation unit, and treating
    events as independent would understate the variance.
    """

    n_units: int
    n_units_with_outcome: int
    sum: float
    sum_sq: float


@dataclass(frozen=True)
class Summary:
    """What :meth:`EventStore.summary` returns.

    ``conflicts`` counts units exposed to more than one variant (a bug in assignment or in the
    caller). Such a unit is still counted once, under the variant of its first exposure, so
    the totals stay consistent with the exposure log; a non-zero ``conflicts`` is a signal to
    investigate before trusting the result.
    """

    variants: dict[str, VariantStats] = field(default_factory=dict)
    conflicts: int = 0


@runtime_checkable
class EventStore(Protocol):
    """A durable, idempotent log of exposures and outcomes.

    Every method that writes returns only after the write is durable, and raises
    :class:`~ab_router.errors.StoreError` (never a backend exception) when the backend fails.
    """

    def record_exposure(self, exposure: Exposure) -> bool:
        """Store ``exposure``; True if newly written, False if its ``event_id`` was seen."""
        ...

    def record_outcome(self, outcome: Outcome) -> bool:
        """Store ``outcome``; True if new, False if a replay.

        Raises :class:`~ab_router.errors.EventError` (and stores nothing) if the unit was never
        exposed in the outcome's experiment.
        """
        ...

    def exposures(self, experiment: str) -> list[Exposure]:
        """Every stored exposure of ``experiment``, in the order they were stored."""
        ...

    def outcomes(self, experiment: str, metric: str | None = None) -> list[Outcome]:
        """Every stored outcome of ``experiment`` (only ``metric``'s if given), in order."""
        ...

    def summary(self, experiment: str, metric: str) -> Summary:
        """Per-variant, per-unit statistics of ``metric``; see :func:`summarize`."""
        ...

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


def summarize(exposures: Iterable[Exposure], outcomes: Iterable[Outcome], metric: str) -> Summary:
    """Reduce an experiment's events to per-variant sufficient statistics.

    Shared by every store so that backends cannot disagree on the analysis semantics. The
    first exposure (earliest ``timestamp``, then storage order) defines a unit's variant;
    outcomes of other metrics are ignored.
    """
    exposures = list(exposures)
    first = first_exposures(exposures)
    per_unit = unit_totals(first, outcomes, metric)

    acc: dict[str, list[float]] = {}
    for unit, exposure in first.items():
        row = acc.setdefault(exposure.variant, [0, 0, 0.0, 0.0])
        row[0] += 1
        if unit in per_unit:
            value = per_unit[unit]
            row[1] += 1
            row[2] += value
            row[3] += value * value
    return Summary(
        variants={
            v: VariantStats(int(r[0]), int(r[1]), r[2], r[3]) for v, r in sorted(acc.items())
        },
        conflicts=count_conflicts(exposures),
    )


def first_exposures(exposures: Iterable[Exposure]) -> dict[str, Exposure]:
    """Each unit's first exposure (earliest ``timestamp``, then storage order): its variant."""
    first: dict[str, Exposure] = {}
    for e in exposures:
        current = first.get(e.unit_id)
        if current is None or e.timestamp < current.timestamp:
            first[e.unit_id] = e
    return first


def unit_totals(
    first: Mapping[str, Exposure], outcomes: Iterable[Outcome], metric: str
) -> dict[str, float]:
    """Per exposed unit with an outcome of ``metric``, the sum of its values."""
    totals: dict[str, float] = {}
    for o in outcomes:
        if o.metric == metric and o.unit_id in first:
            totals[o.unit_id] = totals.get(o.unit_id, 0.0) + o.value
    return totals


def count_conflicts(exposures: Iterable[Exposure]) -> int:
    """Units exposed to more than one variant."""
    variants: dict[str, set[str]] = {}
    for e in exposures:
        variants.setdefault(e.unit_id, set()).add(e.variant)
    return sum(1 for seen in variants.values() if len(seen) > 1)
