"""Tests for experiment designs and deterministic assignment.

Statistical checks use fixed id sets (``user-0`` ... ``user-N``) so they are reproducible: a
p-value threshold of 0.001 then tests the hash, not the luck of a random draw.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError
from scipy import stats

from ab_router.assignment import (
    HOLDOUT,
    NUM_BUCKETS,
    UNASSIGNED,
    assign,
    assign_all,
    bucket,
    buckets,
    layer_salt,
    layer_table,
    variant_ranges,
    variant_table,
)
from ab_router.design import Catalog, Experiment, Layer, load_catalog
from ab_router.errors import InvalidDesign, UnknownExperiment

N_UNITS = 200_000
IDS = [f"user-{i}" for i in range(N_UNITS)]


def _exp(name: str = "exp-a", weights: tuple[float, ...] = (50, 50), **kw: Any) -> Experiment:
    """An experiment with variants control, t1, t2, ... carrying ``weights``."""
    names = ["control"] + [f"t{i}" for i in range(1, len(weights))]
    variants = [{"name": n, "weight": w} for n, w in zip(names, weights, strict=True)]
    return Experiment.model_validate({"name": name, "variants": variants, **kw})


def _moved(
    old: Experiment, new: Experiment, ids_buckets: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Per unit: did its variant change between the two designs?"""
    old_names = np.array([v.name for v in old.variants])[variant_table(old)[ids_buckets]]
    new_names = np.array([v.name for v in new.variants])[variant_table(new)[ids_buckets]]
    return np.asarray(old_names != new_names)


@pytest.fixture(scope="module")
def exp_buckets() -> npt.NDArray[np.int64]:
    return buckets(IDS, "exp-a")


# --- hash spec ------------------------------------------------------------------------------


def test_documented_examples() -> None:
    assert bucket("user-1", "exp-a") == 6666
    assert bucket("user-2", "exp-a") == 7055
    assert list(buckets(["user-1", "user-2"], "exp-a")) == [6666, 7055]


def test_vectorised_matches_scalar() -> None:
    ids = [f"u-{i}" for i in range(500)] + ["", "ünïcode-ß", "a:b"]
    assert list(buckets(ids, "s")) == [bucket(u, "s") for u in ids]
    assert buckets([], "s").shape == (0,)


def test_bucket_uniformity(exp_buckets: npt.NDArray[np.int64]) -> None:
    counts = np.bincount(exp_buckets // 100, minlength=100)  # 100 coarse bins of 1 %
    assert stats.chisquare(counts).pvalue > 0.001
    assert exp_buckets.min() >= 0
    assert exp_buckets.max() < NUM_BUCKETS


def test_determinism_across_processes() -> None:
    ids = IDS[:100]
    code = (
        "import json; from ab_router.assignment import buckets; "
        f"print(json.dumps(buckets({ids!r}, 'exp-a').tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert json.loads(out.stdout) == [bucket(u, "exp-a") for u in ids]


# --- variant split --------------------------------------------------------------------------


def test_variant_shares_uniform(exp_buckets: npt.NDArray[np.int64]) -> None:
    exp = _exp(weights=(50, 20, 30))
    counts = np.bincount(variant_table(exp)[exp_buckets], minlength=3)
    expected = np.array([0.5, 0.2, 0.3]) * N_UNITS
    assert stats.chisquare(counts, expected).pvalue > 0.001


def test_two_variant_layout_anchors_treatment_at_zero() -> None:
    assert variant_ranges(_exp(weights=(90, 10))) == [
        ("control", 1000, 10000),
        ("t1", 0, 1000),
    ]


def test_ranges_partition_buckets() -> None:
    for weights in [
        (50, 50),
        (40, 15, 15, 15, 15),
        (0, 33.335, 66.665),
        (33.3333334, 33.3333333, 33.3333333),
    ]:
        table = variant_table(_exp(weights=weights))
        assert (table >= 0).all()


@pytest.mark.parametrize(("old", "new"), [(10, 50), (50, 90), (90, 10), (10, 10.01)])
def test_two_variant_ramp_moves_exactly_delta(old: float, new: float) -> None:
    """Minimality, proved over the whole bucket space (not sampled): the moved buckets are
    exactly |delta| * 100, and every move is between the ramped treatment and control."""
    a, b = _exp(weights=(100 - old, old)), _exp(weights=(100 - new, new))
    all_buckets = np.arange(NUM_BUCKETS)
    moved = _moved(a, b, all_buckets)
    assert moved.sum() == round(abs(new - old) * 100)
    # No scheme can move fewer: the treatment's share must change by |delta|.
    ta, tb = variant_table(a)[all_buckets] == 1, variant_table(b)[all_buckets] == 1
    assert moved.sum() == abs(int(tb.sum()) - int(ta.sum()))


def test_ramp_10_50_90_is_sticky(exp_buckets: npt.NDArray[np.int64]) -> None:
    designs = [_exp(weights=(100 - w, w)) for w in (10, 50, 90)]
    in_t = [variant_table(d)[exp_buckets] == 1 for d in designs]
    # Once in treatment, always in treatment while it grows.
    assert not (in_t[0] & ~in_t[1]).any()
    assert not (in_t[1] & ~in_t[2]).any()
    for d0, d1 in itertools.pairwise(designs):
        frac = _moved(d0, d1, exp_buckets).mean()
        assert frac == pytest.approx(0.4, abs=0.005)


@pytest.mark.parametrize("ramped", [1, 2])
def test_three_variant_ramp_moves_only_delta(
    exp_buckets: npt.NDArray[np.int64], ramped: int
) -> None:
    """With three arms, ramping either treatment against control moves |delta| of units and
    never touches the other treatment."""
    before = [60.0, 20.0, 20.0]
    after = list(before)
    after[ramped] += 15
    after[0] -= 15
    a, b = _exp(weights=tuple(before)), _exp(weights=tuple(after))
    moved = _moved(a, b, exp_buckets)
    assert moved.mean() == pytest.approx(0.15, abs=0.005)
    other = 3 - ramped
    assert (variant_table(a)[exp_buckets] == other).sum() == (
        variant_table(b)[exp_buckets] == other
    ).sum()
    untouched = variant_table(a)[exp_buckets] == other
    assert (variant_table(b)[exp_buckets][untouched] == other).all()
    # Exact over the whole space as well.
    assert _moved(a, b, np.arange(NUM_BUCKETS)).sum() == 1500


# --- layers, holdout, overrides -------------------------------------------------------------


def _catalog() -> Catalog:
    return Catalog.model_validate(
        {
            "layers": [
                {
                    "name": "ranking",
                    "holdout_percent": 10,
                    "experiments": [
                        {
                            "name": "exp-a",
                            "layer": "ranking",
                            "traffic_percent": 30,
                            "variants": [
                                {"name": "control", "weight": 50},
                                {"name": "treatment", "weight": 50},
                            ],
                            "allow_list": {"qa-1": "treatment"},
                        },
                        {
                            "name": "exp-b",
                            "layer": "ranking",
                            "traffic_percent": 40,
                            "variants": [
                                {"name": "control", "weight": 80},
                                {"name": "treatment", "weight": 20},
                            ],
                        },
                        {
                            "name": "exp-draft",
                            "layer": "ranking",
                            "traffic_percent": 10,
                            "status": "draft",
                            "variants": [
                                {"name": "control", "weight": 50},
                                {"name": "treatment", "weight": 50},
                            ],
                            "allow_list": {"qa-2": "treatment"},
                        },
                    ],
                },
                {
                    "name": "ui",
                    "experiments": [
                        {
                            "name": "exp-ui",
                            "layer": "ui",
                            "variants": [
                                {"name": "blue", "weight": 50},
                                {"name": "green", "weight": 50},
                            ],
                        }
                    ],
                },
            ]
        }
    )


def test_layer_shares_holdout_and_exclusion() -> None:
    catalog = _catalog()
    layer = catalog.layers[0]
    idx = layer_table(layer)[buckets(IDS, layer_salt(layer))]
    counts = np.array([(idx == HOLDOUT).sum(), *[(idx == i).sum() for i in range(3)]])
    counts = np.append(counts, (idx == UNASSIGNED).sum())
    expected = np.array([0.10, 0.30, 0.40, 0.10, 0.10]) * N_UNITS
    assert stats.chisquare(counts, expected).pvalue > 0.001
    # Scalar path agrees with the table and never puts a unit in two experiments of a layer.
    for unit in IDS[:3000]:
        hashed = [n for n in ("exp-a", "exp-b") if assign(catalog, unit, n).reason == "hash"]
        assert len(hashed) <= 1
        chosen = assign_all(catalog, unit)
        assert sum(name in chosen for name in ("exp-a", "exp-b", "exp-draft")) <= 1
        assert "exp-ui" in chosen  # a different layer overlaps orthogonally
        for name in ("exp-a", "exp-b"):
            assert (name in chosen) == (assign(catalog, unit, name).reason == "hash")


def test_holdout_units_get_no_variant() -> None:
    catalog = _catalog()
    held = [u for u in IDS[:20_000] if assign(catalog, u, "exp-a").reason == "holdout"]
    assert len(held) / 20_000 == pytest.approx(0.10, abs=0.01)
    for unit in held[:500]:
        for name in ("exp-a", "exp-b"):
            a = assign(catalog, unit, name)
            assert a.holdout
            assert a.variant is None
        assert "exp-a" not in assign_all(catalog, unit)
        assert "exp-b" not in assign_all(catalog, unit)


def test_allow_list_wins_and_draft_is_not_running() -> None:
    catalog = _catalog()
    qa = assign(catalog, "qa-1", "exp-a")
    assert (qa.variant, qa.reason, qa.holdout) == ("treatment", "allow_list", False)
    assert assign_all(catalog, "qa-1")["exp-a"].variant == "treatment"
    qa2 = assign(catalog, "qa-2", "exp-draft")
    assert (qa2.variant, qa2.reason) == ("treatment", "allow_list")
    for unit in IDS[:200]:
        a = assign(catalog, unit, "exp-draft")
        assert (a.variant, a.reason) == (None, "not_running")
    reasons = {assign(catalog, u, "exp-a").reason for u in IDS[:2000]}
    assert reasons == {"hash", "holdout", "not_in_experiment"}


def test_assign_is_deterministic_and_matches_tables() -> None:
    catalog = _catalog()
    exp = catalog.experiment("exp-b")
    names = [v.name for v in exp.variants]
    for unit in IDS[:2000]:
        a = assign(catalog, unit, "exp-b")
        assert a == assign(catalog, unit, "exp-b")
        assert a.bucket == bucket(unit, "exp-b")
        assert a.layer_bucket == bucket(unit, "layer:ranking")
        if a.reason == "hash":
            assert a.variant == names[variant_table(exp)[a.bucket]]


def test_unknown_experiment() -> None:
    with pytest.raises(UnknownExperiment):
        assign(_catalog(), "user-1", "nope")
    with pytest.raises(UnknownExperiment):
        _catalog().experiment("nope")
    assert UnknownExperiment.status == 404


# --- bad designs ----------------------------------------------------------------------------


def _variants(*weights: float) -> list[dict[str, Any]]:
    return [{"name": f"v{i}", "weight": w} for i, w in enumerate(weights)]


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        ({"name": "e", "variants": _variants(50, 49)}, "variants", "sum to 99"),
        ({"name": "e", "variants": _variants(50, 51)}, "variants", "sum to 101"),
        (
            {"name": "e", "variants": [{"name": "a", "weight": 50}, {"name": "a", "weight": 50}]},
            "variants",
            "duplicate",
        ),
        (
            {"name": "e", "variants": _variants(50, 50), "allow_list": {"u": "ghost"}},
            "allow_list",
            "ghost",
        ),
        ({"name": "e", "variants": _variants(100)}, "variants", "at least 2"),
        ({"name": "Bad Name", "variants": _variants(50, 50)}, "name", "pattern"),
        ({"name": "e", "variants": _variants(50, 50), "color": 1}, "color", "Extra"),
    ],
)
def test_bad_experiment(data: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Experiment.model_validate(data)
    text = str(info.value)
    assert field in text
    assert fragment in text


def test_weights_message_names_weights_and_sum() -> None:
    with pytest.raises(ValidationError, match=r"weights \[50\.0, 49\.0\] sum to 99"):
        Experiment.model_validate({"name": "e", "variants": _variants(50, 49)})


def test_layer_traffic_over_100() -> None:
    exp = {"layer": "l", "variants": _variants(50, 50)}
    data = {
        "name": "l",
        "holdout_percent": 10,
        "experiments": [
            {"name": "a", "traffic_percent": 50, **exp},
            {"name": "b", "traffic_percent": 45, **exp},
        ],
    }
    with pytest.raises(ValidationError, match="traffic_percent"):
        Layer.model_validate(data)
    with pytest.raises(InvalidDesign, match="traffic_percent"):
        load_catalog({"layers": [data]})
    data["holdout_percent"] = 5
    assert Layer.model_validate(data).experiments[1].salt == "b"


def test_cross_catalog_rules() -> None:
    exp = {"name": "a", "variants": _variants(50, 50)}
    with pytest.raises(ValidationError, match="experiments"):
        Layer.model_validate({"name": "other", "experiments": [exp]})  # layer mismatch
    layer = {"name": "default", "experiments": [exp]}
    with pytest.raises(ValidationError, match="layers"):
        Catalog.model_validate({"layers": [layer, layer]})
