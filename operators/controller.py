"""Reconcilers: read what a decision needs, call the pure decision, write the result.

Each method takes the object as kopf delivered it, re-reads what it depends on (other
resources, metrics), runs a function from :mod:`operators.reconcile`, applies children and
writes status. Status is written with the resourceVersion it was computed from, so a decision
made on a stale read loses (409, retried) instead of overwriting a newer one.

A spec that does not validate gets a ``Ready=False`` condition whose message names the field,
and nothing is created or changed for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from ab_router.design import Experiment as ExperimentDesign
from operators import metrics
from operators.crds.specs import (
    API_VERSION,
    ExperimentSpec,
    InferenceGraphSpec,
    ModelSpec,
    canary_experiment,
    field_errors,
    graph_name_problem,
)
from operators.crds.status import (
    CanaryStatus,
    Condition,
    ExperimentStatus,
    GraphStatus,
    ModelStatus,
    parse_timestamp,
    read_status,
    set_condition,
)
from operators.k8s.client import KINDS, Kube, NotFound, resource
from operators.reconcile import autoscale, canary, rollout
from operators.reconcile.children import (
    GRAPH_HTTP,
    GRAPH_LABEL,
    MANAGER,
    GraphInputs,
    child_name,
    fingerprint,
    render,
)
from operators.reconcile.versions import serving_plan
from operators.signals import Observer

log = logging.getLogger("cascade.operator")

MODELS = resource(API_VERSION, "Model")
GRAPHS = resource(API_VERSION, "InferenceGraph")
EXPERIMENTS = resource(API_VERSION, "Experiment")

#: The kinds a graph owns, for pruning children a new rendering no longer has.
OWNED = [
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
]

#: Re-apply unchanged children at least this often (seconds), to undo manual edits.
RESYNC_S = 60.0

#: How long a discovery answer (is the ServiceMonitor CRD installed?) is trusted, seconds.
DISCOVERY_TTL_S = 5.0

#: Optional APIs a graph's children use, as (apiVersion, plural) for discovery.
SERVICE_MONITORS = ("monitoring.coreos.com/v1", "servicemonitors")
DISRUPTION_BUDGETS = ("policy/v1", "poddisruptionbudgets")

S = TypeVar("S", bound=BaseModel)

#: Emits a Kubernetes event on an object: (body, type, reason, message).
EventSink = Callable[[dict[str, Any], Literal["Normal", "Warning"], str, str], None]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class OperatorSettings:
    #: The serving image (no torch): the graph's and Triton's containers.
    image: str = "cascade:0.1.0"
    #: The factory image (torch): the init container that runs ``cascade build``.
    factory_image: str = "cascade-factory:0.1.0"
    #: How often in-flight canaries are judged and graphs re-scaled.
    tick_s: float = 10.0


class Controller:
    def __init__(
        self,
        kube: Kube,
        observer: Observer,
        settings: OperatorSettings,
        *,
        events: EventSink | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.kube, self.observer, self.settings = kube, observer, settings
        self.clock = clock
        self._events = events
        self._applied: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._discovered: dict[tuple[str, str], tuple[bool, float]] = {}
        # One reconcile per object at a time: handlers, ticks and model changes all reconcile
        # graphs, and concurrent ones would only fail each other's status writes with 409s.
        self._locks: defaultdict[tuple[str, str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    # ---- shared -------------------------------------------------------------------------

    def _event(
        self, body: dict[str, Any], type_: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None:
        if self._events is not None:
            self._events(body, type_, reason, message)

    async def _write_status(
        self, res_kind: str, body: dict[str, Any], old: BaseModel, new: BaseModel
    ) -> None:
        if old == new:
            return
        meta = body["metadata"]
        await self.kube.patch_status(
            resource(API_VERSION, res_kind),
            meta["namespace"],
            meta["name"],
            new.model_dump(mode="json", by_alias=True),
            resource_version=meta.get("resourceVersion"),
        )

    def _ready(
        self,
        conditions: list[Condition],
        ok: bool,
        reason: str,
        message: str,
        generation: int | None,
    ) -> list[Condition]:
        return set_condition(
            conditions,
            "Ready",
            "True" if ok else "False",
            reason,
            message,
            generation=generation,
            now=self.clock(),
        )

    async def _load(
        self, kind: str, body: dict[str, Any], status_model: type[S]
    ) -> tuple[dict[str, Any], S] | None:
        """The object as the API has it now (kopf's copy may be a few events old) and its
        status; ``None`` once it is gone or going."""
        meta = body["metadata"]
        fresh = await self.kube.get(resource(API_VERSION, kind), meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return None
        return fresh, read_status(status_model, fresh.get("status"))

    # ---- InferenceGraph -------------------------------------------------------------------

    def _lock(self, kind: str, body: dict[str, Any]) -> asyncio.Lock:
        meta = body["metadata"]
        return self._locks[(kind, meta["namespace"], meta["name"])]

    async def reconcile_graph(self, body: dict[str, Any], *, rescale: bool = False) -> None:
        """Render and apply the graph's children; with ``rescale``, autoscale first."""
        async with self._lock("InferenceGraph", body):
            await self._reconcile_graph(body, rescale)

    async def _reconcile_graph(self, body: dict[str, Any], rescale: bool) -> None:
        loaded = await self._load("InferenceGraph", body, GraphStatus)
        if loaded is None:
            return
        body, status = loaded
        ns, name, generation = _identity(body)
        try:
            spec = InferenceGraphSpec.model_validate(body.get("spec") or {})
        except ValidationError as err:
            await self._invalid("InferenceGraph", body, status, field_errors("spec", err))
            return
        problem = graph_name_problem(name)  # the CRD refuses these; older objects may remain
        if problem is not None:
            await self._invalid("InferenceGraph", body, status, problem)
            return

        models = {m["metadata"]["name"]: m for m in await self.kube.list(MODELS, ns)}
        plan = serving_plan(spec, models)
        versions, route = plan.versions, plan.canary
        if plan.problem is not None:
            conditions = self._ready(
                status.conditions, False, "ModelNotReady", plan.problem, generation
            )
            new = status.model_copy(
                update={"conditions": conditions, "observed_generation": generation}
            )
            await self._write_status("InferenceGraph", body, status, new)
            return

        experiments = await self._experiments_for(ns, name)
        deployments = await self._live_deployments(ns, name)
        replicas = {
            role: int(d["spec"]["replicas"])
            for role, d in deployments.items()
            if d is not None and d.get("spec", {}).get("replicas") is not None
        }
        new_status = status
        if rescale and spec.autoscaling.enabled:
            new_status, replicas = await self._rescale(ns, name, spec, status, replicas)
        monitors_served = await self._serves(*SERVICE_MONITORS)
        budgets_served = await self._serves(*DISRUPTION_BUDGETS)
        inputs = GraphInputs(
            name=name,
            namespace=ns,
            uid=body["metadata"]["uid"],
            spec=spec,
            image=spec.image or self.settings.image,
            factory_image=self.settings.factory_image,
            model_versions=versions,
            canary=route,
            experiments=tuple(experiments),
            replicas=replicas,
            service_monitor=monitors_served,
            disruption_budget=budgets_served,
        )
        children = render(inputs)
        for child in children:
            await self._apply(child)
        await self._prune(ns, name, children)

        rendered = {
            c["metadata"]["name"].removeprefix(f"{name}-"): int(c["spec"]["replicas"])
            for c in children
            if c["kind"] == "Deployment"
        }
        for deployment, n in rendered.items():
            metrics.REPLICAS.labels(namespace=ns, graph=name, deployment=deployment).set(n)
        message = f"{len(children)} children applied; serving {_versions_text(versions)}"
        if route is not None:
            message += f"; canary {route.model} v{route.version} at {route.weight}%"
        state = rollout.judge(deployments, rendered)
        conditions = new_status.conditions
        for type_, view in (("Available", state.available), ("Progressing", state.progressing)):
            conditions = self._condition(conditions, type_, view, generation)
        if state.serving:
            conditions = self._ready(conditions, True, "Reconciled", message, generation)
        else:
            reason = state.available.reason
            conditions = self._ready(conditions, False, reason, state.available.message, generation)
        conditions = self._optional_api_condition(
            body,
            conditions,
            "ServiceMonitor",
            spec.monitoring.service_monitor,
            monitors_served,
            generation,
            "monitoring.coreos.com/v1 ServiceMonitor is not served (is the Prometheus Operator "
            "installed?): none created; scrape the graph's pods another way or set "
            "spec.monitoring.serviceMonitor: false",
        )
        conditions = self._optional_api_condition(
            body,
            conditions,
            "DisruptionBudget",
            spec.disruption_budget.enabled,
            budgets_served,
            generation,
            "policy/v1 PodDisruptionBudget is not served (Kubernetes < 1.21): none created; "
            "set spec.disruptionBudget.enabled: false to silence this",
        )
        new_status = new_status.model_copy(
            update={
                "replicas": rendered,
                "model_versions": versions,
                "canary": route.model if route else "",
                "endpoint": f"http://{child_name(name, 'graph')}.{ns}.svc:{GRAPH_HTTP}",
                "conditions": conditions,
                "observed_generation": generation,
            }
        )
        await self._write_status("InferenceGraph", body, status, new_status)

    def _condition(
        self,
        conditions: list[Condition],
        type_: str,
        view: rollout.ConditionView,
        generation: int | None,
    ) -> list[Condition]:
        return set_condition(
            conditions,
            type_,
            view.status,
            view.reason,
            view.message,
            generation=generation,
            now=self.clock(),
        )

    def _optional_api_condition(
        self,
        body: dict[str, Any],
        conditions: list[Condition],
        kind: str,
        wanted: bool,
        served: bool,
        generation: int | None,
        missing: str,
    ) -> list[Condition]:
        """A condition of type ``kind``: whether the child of an optional API was created.

        A cluster without the Prometheus Operator (the kind quickstart) or without
        ``policy/v1`` is normal: the graph serves all the same, and the condition says why
        the child does not exist. Logged once per change, not per reconcile.
        """
        if not wanted:
            return [c for c in conditions if c.type != kind]
        if served:
            view = rollout.ConditionView("True", "Created", f"{kind} applied")
        else:
            view = rollout.ConditionView("False", "APINotServed", missing)
        before = next((c for c in conditions if c.type == kind), None)
        if before is None or before.status != view.status:
            meta = body["metadata"]
            log.info("%s/%s: %s", meta["namespace"], meta["name"], view.message)
        return self._condition(conditions, kind, view, generation)

    async def _apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply, skipped when the same rendering was applied recently.

        Every tick re-renders every graph; re-sending identical manifests would be a write
        per child per tick. A full re-apply every ``RESYNC_S`` still repairs manual edits.
        """
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        digest, now = fingerprint(obj), time.monotonic()
        last = self._applied.get(key)
        if last is not None and last[0] == digest and now - last[1] < RESYNC_S:
            return
        await self.kube.apply(obj)
        self._applied[key] = (digest, now)

    async def _serves(self, api_version: str, plural: str) -> bool:
        """Whether the cluster serves an optional API (discovery, cached briefly)."""
        now = time.monotonic()
        cached = self._discovered.get((api_version, plural))
        if cached is None or now - cached[1] > DISCOVERY_TTL_S:
            cached = (await self.kube.serves(api_version, plural), now)
            self._discovered[(api_version, plural)] = cached
        return cached[0]

    async def _live_deployments(self, ns: str, graph: str) -> dict[str, dict[str, Any] | None]:
        """The graph's Deployments as they are now (``None``: not created yet): their replicas
        are the autoscaler's starting point, kept on re-render, and their status says whether
        the graph serves."""
        deployments = resource("apps/v1", "Deployment")
        return {
            role: await self.kube.get(deployments, ns, child_name(graph, role))
            for role in ("graph", "triton")
        }

    async def _experiments_for(self, ns: str, graph: str) -> list[ExperimentDesign]:
        designs = []
        for body in await self.kube.list(EXPERIMENTS, ns):
            try:
                spec = ExperimentSpec.model_validate(body.get("spec") or {})
                if spec.graph == graph:
                    designs.append(spec.design(body["metadata"]["name"]))
            except ValidationError:
                continue  # the Experiment's own reconcile reports it
        return sorted(designs, key=lambda d: d.name)

    async def _rescale(
        self,
        ns: str,
        name: str,
        spec: InferenceGraphSpec,
        status: GraphStatus,
        replicas: dict[str, int],
    ) -> tuple[GraphStatus, dict[str, int]]:
        scaling = spec.autoscaling
        s = spec.stages
        signals = await self.observer.scaling(
            ns,
            name,
            {
                d: replicas.get(d, autoscale.bounds_of(scaling, d).min_replicas)
                for d in ("graph", "triton")
            },
            budgets={
                "retrieval": s.retrieval.budget_ms,
                "ranking": s.ranking.budget_ms,
                "rerank": s.rerank.budget_ms,
            },
            target_p99_ms=scaling.target_p99_ms or spec.deadline_ms,
            fallback_target=scaling.target_fallback_rate,
            in_flight_target=scaling.target_in_flight_per_replica,
            queue_target=scaling.target_queue_depth_per_replica,
        )
        if signals is None:
            return status, replicas
        decision = autoscale.decide(scaling, signals, status.recommendations, self.clock())
        changed = decision.changed({d: sig.replicas for d, sig in signals.items()})
        for deployment, n in changed.items():
            before = signals[deployment].replicas
            direction = "up" if n > before else "down"
            metrics.SCALE_EVENTS.labels(deployment=deployment, direction=direction).inc()
            log.info(
                "%s/%s: %s %d -> %d (%s)",
                ns,
                name,
                deployment,
                before,
                n,
                decision.reasons[deployment],
            )
        reason = "; ".join(f"{d}: {r}" for d, r in sorted(decision.reasons.items()))
        new = status.model_copy(
            update={
                "recommendations": decision.history,
                "last_scale_reason": reason if changed else status.last_scale_reason,
            }
        )
        return new, {**replicas, **decision.replicas}

    async def _prune(self, ns: str, graph: str, children: Iterable[dict[str, Any]]) -> None:
        keep = {(c["apiVersion"], c["kind"], c["metadata"]["name"]) for c in children}
        selector = f"{GRAPH_LABEL}={graph},app.kubernetes.io/managed-by={MANAGER}"
        for api_version, kind in OWNED:
            res = KINDS[(api_version, kind)]
            try:
                found = await self.kube.list(res, ns, label_selector=selector)
            except NotFound:  # an optional API this cluster does not serve: nothing to prune
                continue
            for obj in found:
                if (api_version, kind, obj["metadata"]["name"]) not in keep:
                    log.info("%s/%s: deleting %s %s", ns, graph, kind, obj["metadata"]["name"])
                    await self.kube.delete(res, ns, obj["metadata"]["name"])
                    self._applied.pop((kind, ns, obj["metadata"]["name"]), None)

    async def _invalid(
        self, kind: str, body: dict[str, Any], status: Any, message: str, **update: Any
    ) -> None:
        metrics.INVALID_SPECS.labels(kind=kind).inc()
        generation = body["metadata"].get("generation")
        conditions = self._ready(status.conditions, False, "InvalidSpec", message, generation)
        new = status.model_copy(
            update={**update, "conditions": conditions, "observed_generation": generation}
        )
        if new != status:
            self._event(body, "Warning", "InvalidSpec", message)
        await self._write_status(kind, body, status, new)

    async def graphs_using(self, ns: str, model: str) -> list[dict[str, Any]]:
        out = []
        for body in await self.kube.list(GRAPHS, ns):
            try:
                spec = InferenceGraphSpec.model_validate(body.get("spec") or {})
            except ValidationError:
                continue
            if model in spec.model_names:
                out.append(body)
        return sorted(out, key=lambda b: str(b["metadata"]["name"]))

    # ---- Model ----------------------------------------------------------------------------

    async def reconcile_model(self, body: dict[str, Any]) -> None:
        """Start, skip or judge a rollout of the spec's version; refresh the graphs using it."""
        async with self._lock("Model", body):
            await self._reconcile_model(body)

    async def _reconcile_model(self, body: dict[str, Any]) -> None:
        loaded = await self._load("Model", body, ModelStatus)
        if loaded is None:
            return
        body, status = loaded
        ns, name, generation = _identity(body)
        try:
            spec = ModelSpec.model_validate(body.get("spec") or {})
        except ValidationError as err:
            await self._invalid("Model", body, status, field_errors("spec", err))
            return
        now = self.clock()
        new = canary.plan(spec.version, spec.canary, status, now)
        if new.canary is not None and new.canary != status.canary and new.canary.phase != "Aborted":
            self._event(body, "Normal", "CanaryStarted", new.canary.reason)
        flight = canary.in_flight(new)
        graphs: list[dict[str, Any]] | None = None  # listed once, for judging and refreshing
        if flight is not None:
            graphs = await self.graphs_using(ns, name)
            new = await self._judge(body, spec, new, flight, graphs)
        new = new.model_copy(
            update={
                "conditions": self._model_conditions(new, generation),
                "observed_generation": generation,
            }
        )
        weight = flight.weight if (flight := canary.in_flight(new)) else 0
        metrics.CANARY_WEIGHT.labels(namespace=ns, model=name).set(weight)
        await self._write_status("Model", body, status, new)
        if new.serving_version != status.serving_version or new.canary != status.canary:
            for graph in graphs if graphs is not None else await self.graphs_using(ns, name):
                await self.reconcile_graph(graph)

    async def _judge(
        self,
        body: dict[str, Any],
        spec: ModelSpec,
        status: ModelStatus,
        flight: CanaryStatus,
        graphs: list[dict[str, Any]],
    ) -> ModelStatus:
        ns, name, _ = _identity(body)
        now = self.clock()
        if spec.canary is None:  # the policy was removed mid-rollout: replace at once
            decision = canary.Decision(
                "promote",
                "canary policy removed",
                flight.model_copy(
                    update={
                        "phase": "Promoted",
                        "weight": 100,
                        "last_decision": "promote",
                        "reason": f"v{flight.version} promoted at once: canary policy removed",
                    }
                ),
            )
        else:
            if graphs:
                window = int((now - parse_timestamp(flight.step_started_at)).total_seconds())
                observed = await self.observer.canary(
                    ns,
                    graphs[0]["metadata"]["name"],
                    canary_experiment(name),
                    window,
                    spec.canary.business_metric,
                )
            else:
                observed = canary.CanaryMetrics()
            decision = canary.decide(spec.canary, flight, observed, now)
        metrics.CANARY_DECISIONS.labels(decision=decision.action).inc()
        if decision.action in ("advance", "promote"):
            self._event(body, "Normal", f"Canary{decision.action.title()}", decision.reason)
        elif decision.action == "rollback":
            self._event(body, "Warning", "CanaryRollback", decision.reason)
        new = canary.apply(status, decision)
        if (
            decision.action in ("hold", "pause")
            and new.canary is not None
            and status.canary is not None
        ):
            same_step = new.canary.model_copy(update={"reason": status.canary.reason})
            if same_step == status.canary:
                return status  # nothing new but the elapsed time: no status write
        return new

    def _model_conditions(self, status: ModelStatus, generation: int | None) -> list[Condition]:
        ok, reason, message = canary.readiness(status)
        return self._ready(status.conditions, ok, reason, message, generation)

    # ---- Experiment -----------------------------------------------------------------------

    async def reconcile_experiment(self, body: dict[str, Any], *, report: bool = False) -> None:
        """Validate the design, report the analysis in status, refresh the graph's router."""
        async with self._lock("Experiment", body):
            await self._reconcile_experiment(body, report)

    async def _reconcile_experiment(self, body: dict[str, Any], report: bool) -> None:
        loaded = await self._load("Experiment", body, ExperimentStatus)
        if loaded is None:
            return
        body, status = loaded
        ns, name, generation = _identity(body)
        try:
            spec = ExperimentSpec.model_validate(body.get("spec") or {})
            spec.design(name)
        except ValidationError as err:
            message = field_errors("spec", err)
            await self._invalid("Experiment", body, status, message, phase="Invalid")
            return
        graph = await self.kube.get(GRAPHS, ns, spec.graph)
        phase = {"running": "Running", "stopped": "Stopped", "draft": "Pending"}[spec.state]
        update: dict[str, Any] = {"phase": phase, "observed_generation": generation}
        if graph is None:
            conditions = self._ready(
                status.conditions,
                False,
                "GraphNotFound",
                f"spec.graph: no InferenceGraph {spec.graph} in {ns}",
                generation,
            )
        else:
            conditions = self._ready(
                status.conditions, True, "Routed", f"routed by {spec.graph}", generation
            )
            if report:
                data = await self.observer.reports.report(ns, spec.graph, name)
                if data is not None:
                    update.update(
                        counts={str(k): int(v) for k, v in data.get("counts", {}).items()},
                        decisions={str(k): str(v) for k, v in data.get("decisions", {}).items()},
                        srm_mismatch=bool(data.get("srm_mismatch", False)),
                    )
        new = status.model_copy(update={**update, "conditions": conditions})
        await self._write_status("Experiment", body, status, new)
        if graph is not None and not report:
            await self.reconcile_graph(graph)


def _identity(body: dict[str, Any]) -> tuple[str, str, int | None]:
    meta = body["metadata"]
    return meta["namespace"], meta["name"], meta.get("generation")


def _versions_text(versions: dict[str, int]) -> str:
    return ", ".join(f"{m} v{v}" for m, v in sorted(versions.items())) or "no models"
