"""The InferenceGraph reconciler: render the graph's children, apply them, prune the rest.

It reads only what the rendering needs: the Models the spec names (by name), the Experiments
that run on this graph, the graph's own two Deployments and, with ``rescale``, the scaling
signals. Unchanged children are not re-sent on every tick (see :meth:`GraphReconciler._apply`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ab_router.design import Experiment as ExperimentDesign
from operators import metrics
from operators.controllers.base import (
    EXPERIMENTS,
    MODELS,
    EventSink,
    OperatorSettings,
    Reconciler,
    identity,
    log,
    utcnow,
)
from operators.crds.specs import (
    ExperimentSpec,
    InferenceGraphSpec,
    field_errors,
    graph_name_problem,
)
from operators.crds.status import Condition, GraphStatus, set_condition
from operators.k8s.client import KINDS, Kube, NotFound, resource
from operators.reconcile import autoscale, rollout
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


class GraphReconciler(Reconciler):
    kind = "InferenceGraph"

    def __init__(
        self,
        kube: Kube,
        observer: Observer,
        settings: OperatorSettings,
        *,
        events: EventSink | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(kube, observer, settings, events=events, clock=clock)
        # What was applied when (kind, namespace, name) -> (digest, monotonic seconds), and
        # which optional APIs discovery found: both spare the API server a write or a read.
        self._applied: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._discovered: dict[tuple[str, str], tuple[bool, float]] = {}

    async def reconcile(self, body: dict[str, Any], *, rescale: bool = False) -> None:
        """Render and apply the graph's children; with ``rescale``, autoscale first."""
        async with self._lock(body):
            await self._reconcile(body, rescale)

    async def _reconcile(self, body: dict[str, Any], rescale: bool) -> None:
        loaded = await self._load(body, GraphStatus)
        if loaded is None:
            return
        body, status = loaded
        ns, name, generation = identity(body)
        try:
            spec = InferenceGraphSpec.model_validate(body.get("spec") or {})
        except ValidationError as err:
            await self._invalid(body, status, field_errors("spec", err))
            return
        problem = graph_name_problem(name)  # the CRD refuses these; older objects may remain
        if problem is not None:
            await self._invalid(body, status, problem)
            return

        plan = serving_plan(spec, await self._models(ns, spec))
        versions, route = plan.versions, plan.canary
        if plan.problem is not None:
            conditions = self._ready(
                status.conditions, False, "ModelNotReady", plan.problem, generation
            )
            new = status.model_copy(
                update={"conditions": conditions, "observed_generation": generation}
            )
            await self._write_status(body, status, new)
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
        await self._write_status(body, status, new_status)

    # ---- what a reconcile reads ---------------------------------------------------------

    async def _models(self, ns: str, spec: InferenceGraphSpec) -> dict[str, dict[str, Any]]:
        """The Model resources the graph names, by name; a missing one is left out (the
        serving plan reports it)."""
        names = list(dict.fromkeys(spec.model_names))
        found = await asyncio.gather(*(self.kube.get(MODELS, ns, n) for n in names))
        return {n: body for n, body in zip(names, found, strict=True) if body is not None}

    async def _experiments_for(self, ns: str, graph: str) -> list[ExperimentDesign]:
        """The designs of the Experiments that name this graph in ``spec.graph``.

        Listed and filtered here because the API cannot select them: an Experiment carries no
        label for its graph, and a field selector on a custom resource's spec needs
        ``selectableFields`` (Kubernetes 1.31+; the chart supports 1.27).
        """
        designs = []
        for body in await self.kube.list(EXPERIMENTS, ns):
            try:
                spec = ExperimentSpec.model_validate(body.get("spec") or {})
                if spec.graph == graph:
                    designs.append(spec.design(body["metadata"]["name"]))
            except ValidationError:
                continue  # the Experiment's own reconcile reports it
        return sorted(designs, key=lambda d: d.name)

    async def _live_deployments(self, ns: str, graph: str) -> dict[str, dict[str, Any] | None]:
        """The graph's Deployments as they are now (``None``: not created yet): their replicas
        are the autoscaler's starting point, kept on re-render, and their status says whether
        the graph serves."""
        deployments = resource("apps/v1", "Deployment")
        return {
            role: await self.kube.get(deployments, ns, child_name(graph, role))
            for role in ("graph", "triton")
        }

    async def _serves(self, api_version: str, plural: str) -> bool:
        """Whether the cluster serves an optional API (discovery, cached briefly)."""
        now = time.monotonic()
        cached = self._discovered.get((api_version, plural))
        if cached is None or now - cached[1] > DISCOVERY_TTL_S:
            cached = (await self.kube.serves(api_version, plural), now)
            self._discovered[(api_version, plural)] = cached
        return cached[0]

    # ---- what a reconcile writes --------------------------------------------------------

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

    # ---- conditions ---------------------------------------------------------------------

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


def _versions_text(versions: dict[str, int]) -> str:
    return ", ".join(f"{m} v{v}" for m, v in sorted(versions.items())) or "no models"


class GraphInputReconciler(Reconciler):
    """A reconciler of what graphs read (Models, Experiments): a change it makes reaches the
    graphs through the one :class:`GraphReconciler`, whose locks keep one reconcile per graph."""

    def __init__(
        self,
        kube: Kube,
        observer: Observer,
        settings: OperatorSettings,
        graphs: GraphReconciler,
        *,
        events: EventSink | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(kube, observer, settings, events=events, clock=clock)
        self.graphs = graphs
