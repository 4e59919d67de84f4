"""Experiments in the graph: routing users to variants and their configs, validating variant
configs at construction, logging exposures through the background writer, and the report.
Also the config overrides a variant's ``config`` is made of."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from ab_router.design import Catalog as ExperimentCatalog
from ab_router.design import load_catalog
from ab_router.errors import StoreError
from ab_router.events import Exposure, Outcome, Summary
from ab_router.stores.sqlite import SqliteEventStore
from contract.graph_config import FaultConfig, GraphConfig, StageBudgets
from inference.errors import InferenceError, ModelNotFound
from inference.graph.experiments import ExperimentRouter, ExposureWriter, report

NAME = "graph-test"
TREATMENT_CONFIG: dict[str, Any] = {"rerank": {"mmr_lambda": 1.0}, "candidates": 500}
N_USERS = 2000


def design(
    treatment_config: dict[str, Any] | None = None, status: str = "running"
) -> dict[str, Any]:
    return {
        "layers": [
            {
                "name": "default",
                "experiments": [
                    {
                        "name": NAME,
                        "status": status,
                        "variants": [
                            {"name": "control", "weight": 50, "config": {}},
                            {
                                "name": "treatment",
                                "weight": 50,
                                "config": TREATMENT_CONFIG
                                if treatment_config is None
                                else treatment_config,
                            },
                        ],
                    }
                ],
            }
        ]
    }


@pytest.fixture
def catalog() -> ExperimentCatalog:
    return load_catalog(design())


def exposures_counted(variant: str) -> float:
    value = REGISTRY.get_sample_value("cascade_exposures_total", {"variant": variant})
    return value or 0.0


# ---- routing --------------------------------------------------------------------------------


def test_routing_is_deterministic_and_splits_about_half_and_half(
    catalog: ExperimentCatalog,
) -> None:
    base = GraphConfig()
    router = ExperimentRouter(catalog, NAME, base, None)
    users = [f"user-{i}" for i in range(N_USERS)]
    routes = [router.route(u) for u in users]
    again = ExperimentRouter(load_catalog(design()), NAME, base, None)
    assert [r.variant for r in routes] == [again.route(u).variant for u in users]
    treated = sum(r.variant == "treatment" for r in routes)
    assert sum(r.variant == "control" for r in routes) == N_USERS - treated
    # Binomial(2000, 0.5): sd 22.4; 5 sd either side of 1000.
    assert 888 <= treated <= 1112
    for user, route in zip(users, routes, strict=True):
        assert route.assignment == {
            "experiment": NAME,
            "variant": route.variant or "",
            "reason": "hash",
        }, user


def test_each_variant_gets_its_config(catalog: ExperimentCatalog) -> None:
    base = GraphConfig(budgets=StageBudgets(retrieval_ms=20, total_ms=60))
    router = ExperimentRouter(catalog, NAME, base, None)
    assert set(router.configs) == {"control", "treatment"}
    assert router.configs["control"] == base
    treatment = router.configs["treatment"]
    assert treatment.rerank.mmr_lambda == 1.0
    assert treatment.candidates == 500
    # Everything the variant does not override is the base's, nested fields included.
    assert treatment.budgets == base.budgets
    assert treatment.rerank.deny_items == base.rerank.deny_items
    assert treatment.model_dump(exclude={"rerank", "candidates"}) == base.model_dump(
        exclude={"rerank", "candidates"}
    )
    users = [f"user-{i}" for i in range(50)]
    for user in users:
        route = router.route(user)
        assert route.variant is not None
        assert route.config is router.configs[route.variant]


def test_a_stopped_experiment_serves_everyone_the_base_config() -> None:
    base = GraphConfig()
    router = ExperimentRouter(load_catalog(design(status="stopped")), NAME, base, None)
    route = router.route("user-1")
    assert route.variant is None
    assert route.config is base
    assert route.assignment == {"experiment": NAME, "variant": "", "reason": "not_running"}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"rerank": {"mmr_lamda": 0.5}}, "mmr_lamda"),  # unknown nested field
        ({"candidate": 500}, "candidate"),  # unknown top-level field
        ({"rerank": {"mmr_lambda": 1.5}}, "mmr_lambda"),  # out of range
        ({"candidates": 0}, "candidates"),
        ({"faults": {"delay_ms": {"rerank": 5}}}, "rerank"),
    ],
)
def test_a_bad_variant_config_fails_at_construction_naming_variant_and_field(
    config: dict[str, Any], field: str
) -> None:
    catalog = load_catalog(design(treatment_config=config))
    with pytest.raises(InferenceError, match=r"variant treatment: config:") as raised:
        ExperimentRouter(catalog, NAME, GraphConfig(), None)
    message = str(raised.value)
    assert field in message
    assert NAME in message
    assert isinstance(raised.value.__cause__, ValidationError)


def test_an_unknown_experiment_is_an_inference_error(catalog: ExperimentCatalog) -> None:
    with pytest.raises(InferenceError, match="no-such-test"):
        ExperimentRouter(catalog, "no-such-test", GraphConfig(), None)


# ---- exposures ------------------------------------------------------------------------------


def test_served_writes_exposures_to_the_store(catalog: ExperimentCatalog, tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteEventStore(path)
    router = ExperimentRouter(catalog, NAME, GraphConfig(), store, clock=lambda: 1234.5)
    users = [f"user-{i}" for i in range(20)]
    variants = {u: router.route(u).variant for u in users}
    before = {v: exposures_counted(v) for v in ("control", "treatment")}
    for user in users:
        variant = variants[user]
        assert variant is not None
        router.served(user, variant)
    writer = router._writer
    assert writer is not None
    writer.flush()
    router.close()  # drains the queue (joins the writer) and closes the store
    with pytest.raises(StoreError, match="closed"):
        store.exposures(NAME)
    reopened = SqliteEventStore(path)
    try:
        stored = reopened.exposures(NAME)
    finally:
        reopened.close()
    assert sorted(e.unit_id for e in stored) == sorted(users)
    assert {e.unit_id: e.variant for e in stored} == variants
    assert all(e.experiment == NAME and e.timestamp == 1234.5 for e in stored)
    assert len({e.event_id for e in stored}) == len(users)
    for variant in ("control", "treatment"):
        served = sum(v == variant for v in variants.values())
        assert exposures_counted(variant) == before[variant] + served


def test_flush_then_read_sees_every_exposure(catalog: ExperimentCatalog, tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    router = ExperimentRouter(catalog, NAME, GraphConfig(), store)
    try:
        router.served("user-a", "control")
        router.served("user-b", "treatment")
        assert router._writer is not None
        router._writer.flush()
        # flush() returns once the queue is empty, possibly while the last write is still in
        # progress (see test_flush_waits_for_the_write_in_progress); allow it to land.
        seen: list[Exposure] = []
        for _ in range(200):
            seen = store.exposures(NAME)
            if len(seen) == 2:
                break
            threading.Event().wait(0.01)
        assert {(e.unit_id, e.variant) for e in seen} == {
            ("user-a", "control"),
            ("user-b", "treatment"),
        }
    finally:
        router.close()


class BlockingStore:
    """An event store whose writes wait until the test releases them."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.recorded: list[Exposure] = []
        self.closed = False

    def record_exposure(self, exposure: Exposure) -> bool:
        self.release.wait(5.0)
        self.recorded.append(exposure)
        return True

    def record_outcome(self, outcome: Outcome) -> bool:
        raise NotImplementedError

    def exposures(self, experiment: str) -> list[Exposure]:
        return list(self.recorded)

    def outcomes(self, experiment: str, metric: str | None = None) -> list[Outcome]:
        return []

    def summary(self, experiment: str, metric: str) -> Summary:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


def exposure(unit: str) -> Exposure:
    return Exposure(
        event_id=f"e-{unit}", experiment=NAME, unit_id=unit, variant="control", timestamp=0.0
    )


def test_flush_waits_for_the_write_in_progress() -> None:
    store = BlockingStore()
    writer = ExposureWriter(store, queue_size=10)
    try:
        writer.submit(exposure("a"))
        timer = threading.Timer(0.3, store.release.set)
        timer.start()
        assert writer.flush(timeout_s=2.0)
        assert [e.unit_id for e in store.recorded] == ["a"]
    finally:
        store.release.set()
        writer.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    store = BlockingStore()
    writer = ExposureWriter(store, queue_size=1)
    dropped = REGISTRY.get_sample_value("cascade_exposures_dropped_total") or 0.0
    try:
        for unit in "abcdef":
            writer.submit(exposure(unit))  # must return at once, store blocked or not
        after = REGISTRY.get_sample_value("cascade_exposures_dropped_total") or 0.0
        # One may be in the writer's hands and one in the queue; the rest are dropped.
        assert 4 <= after - dropped <= 5
    finally:
        store.release.set()
        writer.close()
    assert store.closed
    assert 1 <= len(store.recorded) <= 2


def test_served_without_a_store_only_counts(catalog: ExperimentCatalog) -> None:
    router = ExperimentRouter(catalog, NAME, GraphConfig(), None)
    before = exposures_counted("treatment")
    router.served("user-1", "treatment")
    router.served("user-2", "treatment")
    assert exposures_counted("treatment") == before + 2
    assert router._writer is None
    router.close()  # nothing to close; must not fail


# ---- report ---------------------------------------------------------------------------------


def test_report_counts_the_exposed_units(catalog: ExperimentCatalog, tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    try:
        for i in range(6):
            variant = "control" if i < 4 else "treatment"
            store.record_exposure(
                Exposure(
                    event_id=f"x{i}", experiment=NAME, unit_id=f"u{i}", variant=variant, timestamp=i
                )
            )
        # A replayed exposure of a unit counts once.
        store.record_exposure(
            Exposure(
                event_id="x0-again", experiment=NAME, unit_id="u0", variant="control", timestamp=9
            )
        )
        result = report(catalog, store, NAME)
    finally:
        store.close()
    assert result["experiment"] == NAME
    assert result["counts"] == {"control": 4, "treatment": 2}


def test_report_on_an_unknown_experiment_is_model_not_found(
    catalog: ExperimentCatalog, tmp_path: Path
) -> None:
    store = SqliteEventStore(tmp_path / "events.db")
    try:
        with pytest.raises(ModelNotFound, match="nope") as raised:
            report(catalog, store, "nope")
    finally:
        store.close()
    assert raised.value.status == 404


# ---- config overrides -----------------------------------------------------------------------


def test_with_overrides_merges_nested_fields_and_leaves_the_base_alone() -> None:
    base = GraphConfig(model_versions={"ranker_dcn": 2})
    merged = base.with_overrides({"budgets": {"ranking_ms": 30}, "model_versions": {"combiner": 4}})
    assert merged.budgets.ranking_ms == 30
    assert merged.budgets.retrieval_ms == base.budgets.retrieval_ms
    assert merged.model_versions == {"ranker_dcn": 2, "combiner": 4}
    assert base.budgets.ranking_ms == 25.0
    assert base.model_versions == {"ranker_dcn": 2}


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"budgets": {"retrieval_msx": 1}}, "budgets.retrieval_msx"),
        ({"rerank": {"rules": [{"name": "r", "factr": 2}]}}, "rerank.rules.0.factr"),
        ({"cache": {"ttl_s": -1}}, "cache.ttl_s"),
        ({"admission": {"max_in_flight": 0}}, "admission.max_in_flight"),
        ({"budgets": {"total_ms": 5}}, "total_ms"),
        ({"max_k": 2000}, "max_k"),
    ],
)
def test_with_overrides_rejects_bad_fields_naming_them(
    overrides: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        GraphConfig().with_overrides(overrides)
    assert named in str(raised.value)


def test_fault_config_rejects_unknown_stages_and_negative_delays() -> None:
    with pytest.raises(ValidationError, match=r"unknown stage\(s\) \['rerank'\]"):
        FaultConfig(delay_ms={"rerank": 5})
    with pytest.raises(ValidationError, match="delays must be >= 0"):
        FaultConfig(delay_ms={"ranking": -1})
    assert FaultConfig(delay_ms={"retrieval": 5, "ranking": 0}).delay_ms["retrieval"] == 5


def weighted(control: float) -> ExperimentCatalog:
    data = design()
    variants = data["layers"][0]["experiments"][0]["variants"]
    variants[0]["weight"], variants[1]["weight"] = control, 100 - control
    return load_catalog(data)


def share(router: ExperimentRouter, variant: str) -> float:
    routed = [router.route(f"user-{i}").variant for i in range(N_USERS)]
    return routed.count(variant) / N_USERS


def test_new_weights_apply_in_place(catalog: ExperimentCatalog) -> None:
    """A canary step reaches a running graph without a restart."""
    router = ExperimentRouter(catalog, NAME, GraphConfig(), None)
    assert 0.45 < share(router, "treatment") < 0.55
    treated = {
        f"user-{i}" for i in range(N_USERS) if router.route(f"user-{i}").variant == "treatment"
    }
    assert router.update(weighted(control=10)) is None
    assert 0.86 < share(router, "treatment") < 0.94
    # Ramping up moves only units that must move: everyone treated before still is.
    assert all(router.route(u).variant == "treatment" for u in treated)


def test_a_changed_variant_config_or_a_missing_experiment_is_refused(
    catalog: ExperimentCatalog,
) -> None:
    router = ExperimentRouter(catalog, NAME, GraphConfig(), None)
    before = router.experiment
    changed = load_catalog(design(treatment_config={"candidates": 10}))
    assert "variant configs changed" in str(router.update(changed))
    assert "no longer in the catalog" in str(router.update(load_catalog({"layers": []})))
    assert router.experiment is before


def _replace(path: Path, text: str) -> None:
    """Write as the kubelet swaps a ConfigMap's files: all of it at once."""
    staged = path.with_suffix(".tmp")
    staged.write_text(text)
    staged.replace(path)


def test_the_watcher_hands_on_a_changed_file_and_skips_a_broken_one(tmp_path: Path) -> None:
    import json

    from inference.graph.experiments import CatalogWatcher

    path = tmp_path / "experiments.yaml"
    _replace(path, json.dumps(design()))
    seen: list[ExperimentCatalog] = []
    watcher = CatalogWatcher(path, seen.append, interval_s=3600)  # polled by the test
    try:
        assert (watcher.poll(), seen) == (False, [])  # unchanged content is not a change
        _replace(path, "layers: [{name: 0}]")  # invalid: logged, skipped
        assert (watcher.poll(), seen) == (False, [])
        data = design()
        data["layers"][0]["experiments"][0]["variants"][0]["weight"] = 20
        data["layers"][0]["experiments"][0]["variants"][1]["weight"] = 80
        _replace(path, json.dumps(data))
        assert watcher.poll()
        assert [v.weight for v in seen[0].experiment(NAME).variants] == [20, 80]
        assert (watcher.poll(), len(seen)) == (False, 1)  # handed on once
    finally:
        watcher.close()


def test_the_watcher_takes_an_empty_read_for_a_file_being_written(tmp_path: Path) -> None:
    """A writer truncates before it writes: the watcher must not hand on "no experiments"."""
    import json

    from inference.graph.experiments import CatalogWatcher

    path = tmp_path / "experiments.yaml"
    path.write_text(json.dumps(design()))
    seen: list[ExperimentCatalog] = []
    watcher = CatalogWatcher(path, seen.append, interval_s=3600)  # polled by the test
    try:
        path.write_text("")  # mid-write, as a poll may see it
        assert (watcher.poll(), seen) == (False, [])
        data = design()
        data["layers"][0]["experiments"][0]["variants"][0]["weight"] = 30
        data["layers"][0]["experiments"][0]["variants"][1]["weight"] = 70
        path.write_text(json.dumps(data))
        assert watcher.poll()
        assert [v.weight for v in seen[0].experiment(NAME).variants] == [30, 70]
    finally:
        watcher.close()


def test_the_watcher_polls_on_its_own_thread(tmp_path: Path) -> None:
    import json

    from inference.graph.experiments import CatalogWatcher

    path = tmp_path / "experiments.yaml"
    _replace(path, json.dumps(design()))
    changed = threading.Event()
    watcher = CatalogWatcher(path, lambda _: changed.set(), interval_s=0.01)
    try:
        data = design()
        data["layers"][0]["experiments"][0]["variants"][0]["weight"] = 40
        data["layers"][0]["experiments"][0]["variants"][1]["weight"] = 60
        _replace(path, json.dumps(data))
        assert changed.wait(5)
    finally:
        watcher.close()
