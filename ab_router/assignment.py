"""Deterministic, stateless assignment of units (users, sessions, requests) to variants.

Hash specification
==================
Every split in the router is driven by one function, reproducible in any language::

    bucket(unit_id, salt) = U64BE(SHA-256(UTF-8(salt + ":" + unit_id))[0:8]) mod 10000

i.e. concatenate the salt, a single colon (0x3A) and the unit id; encode as UTF-8 (no BOM, no
normalisation); take the SHA-256 digest; read its first 8 bytes as a big-endian *unsigned*
64-bit integer; reduce it modulo 10,000. Buckets are therefore integers in [0, 9999], each one
0.01 % of traffic. (2**64 mod 10000 = 1616, so the low buckets are favoured by about 1e-16 --
far below anything a test can see.)

Worked examples (asserted by ``tests/unit/ab_router/test_assignment.py``):

* unit ``"user-1"``, salt ``"exp-a"``: hashed string ``"exp-a:user-1"``; first 8 digest bytes
  ``ec7a654c2453390a`` = 17040043517811046666; mod 10000 -> **bucket 6666**.
* unit ``"user-2"``, salt ``"exp-a"``: hashed string ``"exp-a:user-2"``; first 8 digest bytes
  ``54d1bf651db526cf`` = 6111876610329487055; mod 10000 -> **bucket 7055**.

Two independent splits
======================
1. **Layer split** (which experiment of a layer, if any): salt ``"layer:" + layer.name``.
   Buckets ``[0, H)`` with ``H = round(holdout_percent * 100)`` are the holdout (no experiment
   at all); then each experiment, in list order, owns the next ``round(traffic_percent * 100)``
   buckets (boundaries rounded on cumulative sums); the rest of the layer is unassigned. One
   bucket per unit per layer makes experiments in a layer mutually exclusive.
2. **Variant split** (which arm of the experiment): salt ``experiment.salt``. Because the salt
   differs from the layer's, the variant is independent of the layer bucket, so the arms are
   balanced inside every experiment's slice.

Ramp-sticky variant layout
==========================
The first variant is the control; treatments are anchored at the two *ends* of the bucket
range and the control fills the middle::

    [ T1 | T3 | T5 ... |        control        | ... T6 | T4 | T2 ]
    0 ->                                                         <- 10000

Treatments with odd position (1st, 3rd, ...) stack upward from bucket 0, even ones downward
from bucket 10000; each boundary is ``round(cumulative weight * 100)`` measured from its own
end. Consequently a treatment's range depends only on its own weight and on the weights of
treatments *outside* it, never on the control's. Ramping the innermost treatment of either
stack against the control (90/10 -> 50/50 -> 10/90 for two arms) therefore moves exactly the
``|delta| * 100`` buckets between that treatment and control and no other unit: every unit in
the treatment at 10 % is still in it at 50 %. That is the minimum any scheme can move, since
``|delta|`` % of units must change arm for the shares to change by ``delta``.

With two or three variants every treatment is innermost, so every single-weight ramp against
the control is minimal. With four or more no stateless single-bucket layout can do that for
every treatment (if three nested sets S1(a), S2(b), S3(c) were disjoint for all a + b + c <=
100, then S3(c) would be the complement of both S1(100 - c) and S2(100 - c), forcing S1 = S2);
here the treatments listed last are the ones that ramp minimally, so list the arm you intend
to ramp last.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from ab_router.design import Catalog, Experiment, Layer

__all__ = [
    "NUM_BUCKETS",
    "Assignment",
    "Reason",
    "assign",
    "assign_all",
    "bucket",
    "buckets",
    "experiment_ranges",
    "layer_salt",
    "layer_table",
    "variant_ranges",
    "variant_table",
]

#: Size of the hash space: one bucket is 0.01 % of traffic, the resolution of every percentage.
NUM_BUCKETS = 10_000

#: Sentinels in :func:`layer_table` for buckets that pick no experiment.
HOLDOUT = -1
UNASSIGNED = -2

Reason = Literal["allow_list", "hash", "holdout", "not_in_experiment", "not_running"]


class Assignment(BaseModel):
    """Which variant a unit gets in one experiment, and why (kept for exposure logging)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment: str = Field(description="The experiment's name.")
    variant: str | None = Field(
        description="The variant served, or None when the unit takes the default path."
    )
    bucket: int = Field(
        ge=0,
        lt=NUM_BUCKETS,
        description="The unit's variant bucket: bucket(unit_id, experiment.salt).",
    )
    layer_bucket: int = Field(
        ge=0,
        lt=NUM_BUCKETS,
        description="The unit's layer bucket: bucket(unit_id, 'layer:' + layer name).",
    )
    holdout: bool = Field(
        description="True iff the unit fell in the layer's holdout and so got no variant."
    )
    reason: Reason = Field(
        description="allow_list: QA override; hash: normal assignment; holdout: in the "
        "layer's holdout; not_in_experiment: the layer bucket belongs to another experiment "
        "or to no one; not_running: the experiment is draft or stopped."
    )


def bucket(unit_id: str, salt: str) -> int:
    """Hash ``(unit_id, salt)`` to a bucket in [0, 10000) as the module docstring specifies."""
    digest = hashlib.sha256(f"{salt}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % NUM_BUCKETS


def buckets(unit_ids: Sequence[str], salt: str) -> npt.NDArray[np.int64]:
    """Buckets of many units at once (for simulations); equal to ``[bucket(u, salt) ...]``.

    SHA-256 itself cannot be vectorised in numpy, so the digests are computed in one tight
    loop and only their 8-byte prefixes are decoded and reduced in bulk.
    """
    if len(unit_ids) == 0:
        return np.zeros(0, dtype=np.int64)
    sha = hashlib.sha256
    prefix = b"".join(sha(f"{salt}:{u}".encode()).digest()[:8] for u in unit_ids)
    words = np.frombuffer(prefix, dtype=">u8")
    return (words % np.uint64(NUM_BUCKETS)).astype(np.int64)


def layer_salt(layer: Layer) -> str:
    """The salt of a layer's split; distinct from experiment salts by its ``layer:`` prefix."""
    return f"layer:{layer.name}"


def _edge(percent: float) -> int:
    """A percentage as a bucket boundary, clamped so rounding never leaves [0, 10000]."""
    return min(NUM_BUCKETS, max(0, round(percent * 100)))


def variant_ranges(experiment: Experiment) -> list[tuple[str, int, int]]:
    """``(variant name, start, end)`` bucket ranges, half-open, in variant order.

    Layout (see the module docstring): treatments alternate between a stack growing up from
    bucket 0 and one growing down from 10000; the control takes what lies between. Each edge
    is rounded from its own end, so a treatment's range never depends on the control's weight.
    """
    treatments = experiment.variants[1:]
    ranges: dict[str, tuple[int, int]] = {}
    low_total = 0.0
    high_total = 0.0
    low = 0
    high = NUM_BUCKETS
    for i, variant in enumerate(treatments):
        if i % 2 == 0:
            low_total += variant.weight
            end = max(low, _edge(low_total))
            ranges[variant.name] = (low, end)
            low = end
        else:
            high_total += variant.weight
            start = min(high, NUM_BUCKETS - _edge(high_total))
            ranges[variant.name] = (start, high)
            high = start
    if high < low:
        # Only when the control's weight rounds to nothing and the two stacks' roundings
        # overlap by a bucket: the top stack yields the overlap, the control stays empty.
        for variant in treatments[1::2]:
            s, e = ranges[variant.name]
            ranges[variant.name] = (max(s, low), max(e, low))
        high = low
    ranges[experiment.control.name] = (low, high)
    return [(v.name, *ranges[v.name]) for v in experiment.variants]


def experiment_ranges(layer: Layer) -> list[tuple[str, int, int]]:
    """``(experiment name, start, end)`` layer-bucket ranges after the holdout, in list order."""
    holdout_end = _edge(layer.holdout_percent)
    out: list[tuple[str, int, int]] = []
    total = 0.0
    start = holdout_end
    for exp in layer.experiments:
        total += exp.traffic_percent
        end = max(start, min(NUM_BUCKETS, holdout_end + _edge(total)))
        out.append((exp.name, start, end))
        start = end
    return out


def variant_table(experiment: Experiment) -> npt.NDArray[np.int64]:
    """Bucket -> variant index lookup (length 10000), for vectorised simulations."""
    table = np.full(NUM_BUCKETS, -1, dtype=np.int64)
    for index, (_, start, end) in enumerate(variant_ranges(experiment)):
        table[start:end] = index
    return table


def layer_table(layer: Layer) -> npt.NDArray[np.int64]:
    """Layer bucket -> experiment index; ``HOLDOUT`` (-1) or ``UNASSIGNED`` (-2) otherwise."""
    table = np.full(NUM_BUCKETS, UNASSIGNED, dtype=np.int64)
    table[: _edge(layer.holdout_percent)] = HOLDOUT
    for index, (_, start, end) in enumerate(experiment_ranges(layer)):
        table[start:end] = index
    return table


def _variant_for(experiment: Experiment, variant_bucket: int) -> str:
    for name, start, end in variant_ranges(experiment):
        if start <= variant_bucket < end:
            return name
    raise AssertionError("variant ranges cover every bucket")  # pragma: no cover


def _assign_in_layer(layer: Layer, experiment: Experiment, unit_id: str) -> Assignment:
    """Apply the precedence allow-list > status > holdout > layer range > variant hash."""
    variant_bucket = bucket(unit_id, experiment.salt)
    layer_bucket = bucket(unit_id, layer_salt(layer))

    def result(variant: str | None, reason: Reason) -> Assignment:
        return Assignment(
            experiment=experiment.name,
            variant=variant,
            bucket=variant_bucket,
            layer_bucket=layer_bucket,
            holdout=reason == "holdout",
            reason=reason,
        )

    # QA overrides come first, even for drafts: testing a variant before launch is their point.
    override = experiment.allow_list.get(unit_id)
    if override is not None:
        return result(override, "allow_list")
    if experiment.status != "running":
        return result(None, "not_running")
    if layer_bucket < _edge(layer.holdout_percent):
        return result(None, "holdout")
    for name, start, end in experiment_ranges(layer):
        if name == experiment.name:
            if start <= layer_bucket < end:
                return result(_variant_for(experiment, variant_bucket), "hash")
            break
    return result(None, "not_in_experiment")


def assign(catalog: Catalog, unit_id: str, experiment_name: str) -> Assignment:
    """The unit's assignment in one experiment; ``UnknownExperiment`` if there is no such one.

    Pure and deterministic: the same catalog and unit always give the same answer, on any
    host or process, so no assignment ever needs to be stored.
    """
    experiment = catalog.experiment(experiment_name)
    return _assign_in_layer(catalog.layer_of(experiment_name), experiment, unit_id)


def assign_all(catalog: Catalog, unit_id: str) -> dict[str, Assignment]:
    """Every experiment the unit is actually in (a variant served), at most one per layer.

    Per layer, an allow-list override (first experiment in list order naming the unit) wins;
    otherwise the experiment owning the unit's layer bucket, if it is running. Holdout,
    unassigned and not-running outcomes are omitted; call :func:`assign` to see them.
    """
    out: dict[str, Assignment] = {}
    for layer in catalog.layers:
        chosen = next((e for e in layer.experiments if unit_id in e.allow_list), None)
        if chosen is None:
            layer_bucket = bucket(unit_id, layer_salt(layer))
            for exp, (_, start, end) in zip(
                layer.experiments, experiment_ranges(layer), strict=True
            ):
                if start <= layer_bucket < end:
                    chosen = exp
                    break
        if chosen is None:
            continue
        result = _assign_in_layer(layer, chosen, unit_id)
        if result.variant is not None:
            out[chosen.name] = result
    return out
