"""The Experiment reconciler: validate the design, mirror its analysis, refresh its graph.

An Experiment names its one graph, so it reads that graph by name; the graph's reconcile puts
the design into the router.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from operators.controllers.base import GRAPHS, identity
from operators.controllers.graph import GraphInputReconciler
from operators.crds.specs import ExperimentSpec, field_errors
from operators.crds.status import ExperimentStatus

#: The phase an Experiment reports for each ``spec.state``.
PHASES = {"running": "Running", "stopped": "Stopped", "draft": "Pending"}


class ExperimentReconciler(GraphInputReconciler):
    kind = "Experiment"

    async def reconcile(self, body: dict[str, Any], *, report: bool = False) -> None:
        """Validate the design, report the analysis in status, refresh the graph's router."""
        async with self._lock(body):
            await self._reconcile(body, report)

    async def _reconcile(self, body: dict[str, Any], report: bool) -> None:
        loaded = await self._load(body, ExperimentStatus)
        if loaded is None:
            return
        body, status = loaded
        ns, name, generation = identity(body)
        try:
            spec = ExperimentSpec.model_validate(body.get("spec") or {})
            spec.design(name)
        except ValidationError as err:
            await self._invalid(body, status, field_errors("spec", err), phase="Invalid")
            return
        graph = await self.kube.get(GRAPHS, ns, spec.graph)
        update: dict[str, Any] = {"phase": PHASES[spec.state], "observed_generation": generation}
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
        await self._write_status(body, status, new)
        if graph is not None and not report:
            await self.graphs.reconcile(graph)
