"""The Model reconciler: start, skip or judge a rollout of the spec's version.

The graphs serving the Model are read only when a rollout is in flight (to judge it on the
graph's metrics) or the served version or canary changed (to re-render them); a Model at rest
reads nothing but itself.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from operators import metrics
from operators.controllers.base import GRAPHS, identity
from operators.controllers.graph import GraphInputReconciler
from operators.crds.specs import InferenceGraphSpec, ModelSpec, canary_experiment, field_errors
from operators.crds.status import CanaryStatus, Condition, ModelStatus, parse_timestamp
from operators.reconcile import canary


class ModelReconciler(GraphInputReconciler):
    kind = "Model"

    async def reconcile(self, body: dict[str, Any]) -> None:
        """Start, skip or judge a rollout of the spec's version; refresh the graphs using it."""
        async with self._lock(body):
            await self._reconcile(body)

    async def _reconcile(self, body: dict[str, Any]) -> None:
        loaded = await self._load(body, ModelStatus)
        if loaded is None:
            return
        body, status = loaded
        ns, name, generation = identity(body)
        try:
            spec = ModelSpec.model_validate(body.get("spec") or {})
        except ValidationError as err:
            await self._invalid(body, status, field_errors("spec", err))
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
                "conditions": self._conditions(new, generation),
                "observed_generation": generation,
            }
        )
        weight = flight.weight if (flight := canary.in_flight(new)) else 0
        metrics.CANARY_WEIGHT.labels(namespace=ns, model=name).set(weight)
        await self._write_status(body, status, new)
        if new.serving_version != status.serving_version or new.canary != status.canary:
            for graph in graphs if graphs is not None else await self.graphs_using(ns, name):
                await self.graphs.reconcile(graph)

    async def graphs_using(self, ns: str, model: str) -> list[dict[str, Any]]:
        """The InferenceGraphs whose stages name ``model``, by name.

        Listed and filtered here because the API cannot select them: a graph names its Models
        in a list inside its spec, which neither labels nor a field selector can match.
        """
        out = []
        for body in await self.kube.list(GRAPHS, ns):
            try:
                spec = InferenceGraphSpec.model_validate(body.get("spec") or {})
            except ValidationError:
                continue
            if model in spec.model_names:
                out.append(body)
        return sorted(out, key=lambda b: str(b["metadata"]["name"]))

    async def _judge(
        self,
        body: dict[str, Any],
        spec: ModelSpec,
        status: ModelStatus,
        flight: CanaryStatus,
        graphs: list[dict[str, Any]],
    ) -> ModelStatus:
        ns, name, _ = identity(body)
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

    def _conditions(self, status: ModelStatus, generation: int | None) -> list[Condition]:
        ok, reason, message = canary.readiness(status)
        return self._ready(status.conditions, ok, reason, message, generation)
