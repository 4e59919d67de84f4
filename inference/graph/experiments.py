"""Experiments in the graph: each request's variant picks its graph configuration, the
response says which variant served it, and an exposure is logged once it was served.

Assignment is :func:`ab_router.assignment.assign` (a pure hash, so nothing is stored per
user); a variant's ``config`` holds overrides of :class:`GraphConfig` (model versions,
budgets, re-rank parameters), validated when the graph starts so a typo fails the deploy,
not a request. Exposures go to the event store from a background thread: a durable write
costs a fsync, which the request must not wait for; the store's idempotency on event ids
keeps a retried write from counting twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ab_router.assignment import assign
from ab_router.design import Catalog as ExperimentCatalog
from ab_router.design import Experiment, load_catalog
from ab_router.errors import ExperimentError
from ab_router.events import EventStore, Exposure
from contract.graph_config import GraphConfig
from inference import metrics
from inference.errors import InferenceError, ModelNotFound

log = logging.getLogger("cascade.inference")


@dataclass(frozen=True)
class Route:
    """Which configuration serves a request, and the assignment the response reports."""

    variant: str | None
    config: GraphConfig
    assignment: dict[str, str]


def read_catalog(path: Path) -> ExperimentCatalog:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InferenceError(f"experiments file {path}: {exc}") from exc
    return parse_catalog(text, path)


def parse_catalog(text: str, path: Path) -> ExperimentCatalog:
    import yaml

    try:
        return load_catalog(yaml.safe_load(text) or {})
    except (yaml.YAMLError, ValidationError, ExperimentError) as exc:
        raise InferenceError(f"experiments file {path}: {exc}") from exc


def find_experiment(catalog: ExperimentCatalog, name: str) -> Experiment:
    try:
        return catalog.experiment(name)
    except ExperimentError as exc:
        raise InferenceError(f"experiment: {exc}") from exc


def variant_configs(design: Experiment, base: GraphConfig) -> dict[str, GraphConfig]:
    """Each variant's graph config: ``base`` with the variant's overrides; a variant whose
    overrides do not validate fails naming the variant and the field."""
    configs: dict[str, GraphConfig] = {}
    for variant in design.variants:
        try:
            configs[variant.name] = base.with_overrides(variant.config)
        except ValidationError as exc:
            raise InferenceError(
                f"experiment {design.name}: variant {variant.name}: config: {exc}"
            ) from exc
    return configs


class ExperimentRouter:
    def __init__(
        self,
        catalog: ExperimentCatalog,
        experiment: str,
        base: GraphConfig,
        store: EventStore | None,
        *,
        clock: Callable[[], float] = time.time,
        queue_size: int = 10_000,
    ) -> None:
        design = find_experiment(catalog, experiment)
        # Read as one pair so a request never mixes an old catalog with a new design.
        self._design = (catalog, design)
        self.base = base
        self.configs = variant_configs(design, base)
        self._clock = clock
        self._writer = ExposureWriter(store, queue_size) if store is not None else None

    @property
    def catalog(self) -> ExperimentCatalog:
        return self._design[0]

    @property
    def experiment(self) -> Experiment:
        return self._design[1]

    def update(self, catalog: ExperimentCatalog) -> str | None:
        """Take new weights (or allow-list, traffic share) of the served experiment in place.

        This is how a canary's traffic steps reach a running graph without a restart. Returns
        why an update was refused, or ``None``: variant configs cannot change in place (their
        recommenders were built at start), so such a change keeps the old design until the
        pods restart, which the operator does for it.
        """
        name = self.experiment.name
        try:
            design = catalog.experiment(name)
        except ExperimentError:
            return f"experiment {name!r} is no longer in the catalog"
        if {v.name: v.config for v in design.variants} != {
            v.name: v.config for v in self.experiment.variants
        }:
            return f"experiment {name!r}: variant configs changed (a restart applies them)"
        self._design = (catalog, design)
        return None

    def route(self, user_id: str) -> Route:
        catalog, design = self._design
        assignment = assign(catalog, user_id, design.name)
        reported = {
            "experiment": design.name,
            "variant": assignment.variant or "",
            "reason": assignment.reason,
        }
        if assignment.variant is None:
            return Route(None, self.base, reported)
        return Route(assignment.variant, self.configs[assignment.variant], reported)

    def served(self, user_id: str, variant: str) -> None:
        """Log that ``variant`` was served to ``user_id`` (call only after a success)."""
        metrics.EXPOSURES.labels(variant=variant).inc()
        if self._writer is None:
            return
        self._writer.submit(
            Exposure(
                event_id=f"{self.experiment.name}:{user_id}:{uuid.uuid4().hex}",
                experiment=self.experiment.name,
                unit_id=user_id,
                variant=variant,
                timestamp=self._clock(),
            )
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class CatalogWatcher:
    """Re-reads an experiments file when its content changes and hands the catalog on.

    A mounted ConfigMap changes under a running pod (the kubelet swaps the files in place), so
    polling the content, a few hundred bytes, is simpler and more reliable than file events.
    An unreadable or invalid file is logged and skipped: the running design stays. The bytes
    compared are the bytes parsed (a second read could catch a writer mid-write), and an
    empty read is a file being written, never "no experiments".
    """

    def __init__(
        self, path: Path, on_change: Callable[[ExperimentCatalog], None], interval_s: float = 5.0
    ) -> None:
        self.path, self.on_change, self.interval_s = Path(path), on_change, interval_s
        self._seen = self._read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="catalog-watcher", daemon=True)
        self._thread.start()

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> bool:
        """Read the file once; hand on its catalog if it changed and parses (True if so)."""
        content = self._read()
        if content is None or not content.strip() or content == self._seen:
            return False
        self._seen = content
        try:
            catalog = parse_catalog(content.decode("utf-8", errors="replace"), self.path)
        except InferenceError as exc:
            log.warning("experiments file changed but is not usable, keeping the old: %s", exc)
            return False
        self.on_change(catalog)
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class ExposureWriter:
    """A bounded queue drained by one thread into the event store. When the store falls
    behind, new exposures are dropped and counted rather than slowing every request."""

    def __init__(self, store: EventStore, queue_size: int) -> None:
        self.store = store
        self._queue: queue.Queue[Exposure | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._drain, name="exposures", daemon=True)
        self._thread.start()

    def submit(self, exposure: Exposure) -> None:
        try:
            self._queue.put_nowait(exposure)
        except queue.Full:
            metrics.EXPOSURES_DROPPED.inc()

    def _drain(self) -> None:
        while True:
            exposure = self._queue.get()
            try:
                if exposure is None:
                    return
                self.store.record_exposure(exposure)
            except Exception as exc:  # the store's own errors; never kill the writer
                metrics.EXPOSURES_DROPPED.inc()
                log.warning("exposure %s not logged: %s", getattr(exposure, "event_id", ""), exc)
            finally:
                self._queue.task_done()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every submitted exposure is written (True) or ``timeout_s`` passes."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, then stop; the store is closed only once the writer is."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            log.warning(
                "exposure writer did not drain in %.0fs; pending exposures are lost", timeout_s
            )
            return
        self._thread.join(timeout=timeout_s)
        if not self._thread.is_alive():
            self.store.close()


def report(catalog: ExperimentCatalog, store: EventStore, name: str) -> dict[str, Any]:
    """The experiment's analysis as JSON: what the operator's canary analysis reads."""
    from ab_router.analysis import analyze

    try:
        experiment = catalog.experiment(name)
    except ExperimentError as exc:
        raise ModelNotFound(str(exc)) from exc
    result: dict[str, Any] = analyze(store, experiment).to_dict()
    return result
