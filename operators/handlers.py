"""kopf wiring: which events call which reconciler. No decisions here.

:func:`register` builds a registry for one operator run (the tick interval is a run setting,
so the decorators are applied at run time, not at import). Every handler re-reads its object
and calls the reconciler of its kind (:mod:`operators.controllers`); API conflicts and
unreachable dependencies become ``kopf.TemporaryError`` so kopf retries with back-off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from operators import metrics
from operators.controllers import Controllers
from operators.crds.specs import GROUP, VERSION
from operators.k8s.client import KubeError

Handler = Callable[..., Awaitable[None]]
Reconcile = Callable[[Controllers, dict[str, Any]], Awaitable[None]]

#: Where kopf keeps its own bookkeeping: annotations, so ``status`` holds only ours.
PREFIX = "serving.cascade.dev"


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # Our own events (canary steps, invalid specs) are posted explicitly; kopf's per-handler
    # "succeeded" messages would be an event per object per tick.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30


def _guarded(kind: str, fn: Reconcile) -> Handler:
    async def handler(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        controllers: Controllers = memo["controllers"]
        started = time.perf_counter()
        try:
            await fn(controllers, {"metadata": dict(body.metadata)})
        except KubeError as exc:
            metrics.RECONCILE_ERRORS.labels(kind=kind).inc()
            raise kopf.TemporaryError(
                f"{kind} reconcile: {exc}", delay=max(1.0, controllers.settings.tick_s)
            ) from exc
        finally:
            metrics.RECONCILE_SECONDS.labels(kind=kind).observe(time.perf_counter() - started)

    return handler


def _ticking(kind: str, fn: Reconcile, every: float) -> Handler:
    """A per-object daemon calling ``fn`` every ``every`` seconds until the object goes.

    A daemon rather than a kopf timer: a timer logs (and would post) a line per tick.
    """

    async def daemon(
        body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: kopf.Logger, **_: Any
    ) -> None:
        controllers: Controllers = memo["controllers"]
        await stopped.wait(every)
        while not stopped:
            started = time.perf_counter()
            try:
                await fn(controllers, {"metadata": dict(body.metadata)})
            except KubeError as exc:
                metrics.RECONCILE_ERRORS.labels(kind=kind).inc()
                logger.warning("%s tick failed, retrying: %s", kind, exc)
            except Exception:  # a bug must not stop this object's ticks for good
                metrics.RECONCILE_ERRORS.labels(kind=kind).inc()
                if stopped:
                    return  # shutting down: clients may already be closed
                logger.exception("%s tick failed unexpectedly, retrying", kind)
            finally:
                metrics.RECONCILE_SECONDS.labels(kind=kind).observe(time.perf_counter() - started)
            await stopped.wait(every)

    return daemon


def register(registry: kopf.OperatorRegistry, tick_s: float) -> kopf.OperatorRegistry:
    """Attach the handlers for the three resources to ``registry``."""

    async def graph(c: Controllers, body: dict[str, Any]) -> None:
        await c.graphs.reconcile(body)

    async def graph_tick(c: Controllers, body: dict[str, Any]) -> None:
        await c.graphs.reconcile(body, rescale=True)

    async def model(c: Controllers, body: dict[str, Any]) -> None:
        await c.models.reconcile(body)

    async def experiment(c: Controllers, body: dict[str, Any]) -> None:
        await c.experiments.reconcile(body)

    async def experiment_tick(c: Controllers, body: dict[str, Any]) -> None:
        await c.experiments.reconcile(body, report=True)

    for plural, kind, on_change, on_tick, every in (
        ("inferencegraphs", "InferenceGraph", graph, graph_tick, tick_s),
        ("models", "Model", model, model, tick_s),
        ("experiments", "Experiment", experiment, experiment_tick, max(tick_s, 30.0)),
    ):
        changed = _guarded(kind, on_change)
        for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
            decorator(GROUP, VERSION, plural, id="reconcile", registry=registry)(changed)
        # On deletion or shutdown: a sleeping daemon exits at once; one mid-reconcile gets a
        # second to finish before it is cancelled. (kopf re-checks after the backoff before it
        # releases the object's finalizer, so a long backoff would hold up every deletion.)
        kopf.daemon(
            GROUP,
            VERSION,
            plural,
            id="tick",
            cancellation_backoff=1,
            cancellation_timeout=5,
            registry=registry,
        )(_ticking(kind, on_tick, every))
    return registry
