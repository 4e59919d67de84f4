"""The reconcilers, one per kind, over a shared :mod:`~operators.controllers.base`.

:class:`Controllers` builds the three on one client: a Model or Experiment change refreshes
its graphs through the one graph reconciler, under that graph's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from operators.controllers.base import EventSink, OperatorSettings, utcnow
from operators.controllers.experiment import ExperimentReconciler
from operators.controllers.graph import GraphReconciler
from operators.controllers.model import ModelReconciler
from operators.k8s.client import Kube
from operators.signals import Observer

__all__ = [
    "Controllers",
    "EventSink",
    "ExperimentReconciler",
    "GraphReconciler",
    "ModelReconciler",
    "OperatorSettings",
]


@dataclass(frozen=True)
class Controllers:
    """What one operator run reconciles with; the handlers find it in kopf's memo."""

    settings: OperatorSettings
    graphs: GraphReconciler
    models: ModelReconciler
    experiments: ExperimentReconciler

    @classmethod
    def create(
        cls,
        kube: Kube,
        observer: Observer,
        settings: OperatorSettings,
        *,
        events: EventSink | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> Controllers:
        graphs = GraphReconciler(kube, observer, settings, events=events, clock=clock)
        return cls(
            settings=settings,
            graphs=graphs,
            models=ModelReconciler(kube, observer, settings, graphs, events=events, clock=clock),
            experiments=ExperimentReconciler(
                kube, observer, settings, graphs, events=events, clock=clock
            ),
        )
