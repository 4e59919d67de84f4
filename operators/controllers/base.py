"""What every reconciler shares: the client, the settings, per-object locks and status writes.

A reconciler takes the object as kopf delivered it, re-reads it and what it depends on, runs a
function from :mod:`operators.reconcile` and writes the result. Status is written with the
resourceVersion it was computed from, so a decision made on a stale read loses (409, retried)
instead of overwriting a newer one. A spec that does not validate gets a ``Ready=False``
condition whose message names the field, and nothing is created or changed for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel

from operators import metrics
from operators.crds.specs import API_VERSION
from operators.crds.status import Condition, read_status, set_condition
from operators.k8s.client import Kube, Resource, resource
from operators.signals import Observer

log = logging.getLogger("cascade.operator")

MODELS = resource(API_VERSION, "Model")
GRAPHS = resource(API_VERSION, "InferenceGraph")
EXPERIMENTS = resource(API_VERSION, "Experiment")

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


def identity(body: dict[str, Any]) -> tuple[str, str, int | None]:
    """(namespace, name, generation) of an object."""
    meta = body["metadata"]
    return meta["namespace"], meta["name"], meta.get("generation")


class Reconciler:
    """The I/O a reconciler of ``kind`` shares with the others; subclasses add ``reconcile``."""

    kind: ClassVar[str]

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
        # One reconcile per object at a time: handlers, ticks and changes of other objects all
        # reconcile graphs, and concurrent ones would only fail each other's status writes (409).
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    @property
    def resource(self) -> Resource:
        return resource(API_VERSION, self.kind)

    def _lock(self, body: dict[str, Any]) -> asyncio.Lock:
        meta = body["metadata"]
        return self._locks[(meta["namespace"], meta["name"])]

    def _event(
        self, body: dict[str, Any], type_: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None:
        if self._events is not None:
            self._events(body, type_, reason, message)

    async def _load(
        self, body: dict[str, Any], status_model: type[S]
    ) -> tuple[dict[str, Any], S] | None:
        """The object as the API has it now (kopf's copy may be a few events old) and its
        status; ``None`` once it is gone or going."""
        meta = body["metadata"]
        fresh = await self.kube.get(self.resource, meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return None
        return fresh, read_status(status_model, fresh.get("status"))

    async def _write_status(self, body: dict[str, Any], old: BaseModel, new: BaseModel) -> None:
        if old == new:
            return
        meta = body["metadata"]
        await self.kube.patch_status(
            self.resource,
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

    async def _invalid(
        self, body: dict[str, Any], status: Any, message: str, **update: Any
    ) -> None:
        metrics.INVALID_SPECS.labels(kind=self.kind).inc()
        generation = body["metadata"].get("generation")
        conditions = self._ready(status.conditions, False, "InvalidSpec", message, generation)
        new = status.model_copy(
            update={**update, "conditions": conditions, "observed_generation": generation}
        )
        if new != status:
            self._event(body, "Warning", "InvalidSpec", message)
        await self._write_status(body, status, new)
