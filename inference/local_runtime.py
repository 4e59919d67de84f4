"""``OnnxRuntime``: the in-process runtime, for where Triton cannot run.

Where Triton cannot start (a laptop, CI without the server binary, a one-container demo), the
graph still needs the same models with the same contract. ``OnnxRuntime`` runs each model's
``model.onnx`` from the canonical repository with onnxruntime and validates requests against
the same ``config.pbtxt`` Triton would read, through the same :mod:`inference.validation`
code, so a request that Triton rejects is rejected here with the same message. Like Triton it
hands the graph the config's ``reshape`` shapes and returns outputs in the config's ``dims``.

A graph runs on it when its settings name the "onnxruntime" runtime (nothing falls back to it
on its own); its ``kind`` ("onnxruntime") shows in ``cascade_model_runtime_info``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from contract.errors import RepositoryError
from contract.model_config import MODEL_FILENAME
from contract.repository import RepositoryReader
from contract.signature import Signature
from inference.errors import (
    BadRequest,
    DeadlineExceeded,
    InferenceError,
    ModelNotFound,
    ServerError,
)
from inference.runtime import Tensors
from inference.validation import (
    ModelSpec,
    check_feed,
    check_outputs,
    signature_problems,
    spec_from_config,
)

__all__ = ["OnnxRuntime"]

log = logging.getLogger("cascade.inference")


@dataclass(frozen=True)
class _Loaded:
    """One model served in-process: its version, validation spec and session."""

    version: int
    spec: ModelSpec
    session: Any  # onnxruntime.InferenceSession


class OnnxRuntime:
    """:class:`~inference.runtime.ModelRuntime` running the repository's models in-process.

    Serves one version per model: the latest committed one, or ``versions[model]`` when
    pinned. ``models`` restricts which models are loaded (default: all in the repository).
    A model that cannot be loaded is logged and reported as "not loaded (why)" by
    :meth:`check_models` and as ``ModelNotFound`` by :meth:`infer`, as Triton would.
    Sessions default to one intra-op thread: the graph runs several models concurrently, and
    one thread each matches Triton's ``intra_op_thread_count`` and avoids oversubscription.
    """

    kind = "onnxruntime"

    def __init__(
        self,
        repository: Path,
        *,
        models: Sequence[str] | None = None,
        versions: Mapping[str, int] | None = None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        if intra_op_threads < 1 or inter_op_threads < 1:
            raise ValueError("onnxruntime thread counts must be >= 1")
        self.repository = Path(repository)
        self._intra_op_threads = intra_op_threads
        self._inter_op_threads = inter_op_threads
        self._loaded: dict[str, _Loaded] = {}
        self._failed: dict[str, str] = {}
        if not self.repository.is_dir():
            raise ModelNotFound(f"model repository {self.repository} does not exist")
        try:
            repo = RepositoryReader(self.repository)
            names = list(models) if models is not None else repo.models()
        except RepositoryError as exc:
            raise ServerError(f"cannot open model repository {self.repository}: {exc}") from exc
        pinned = dict(versions or {})
        for name in sorted({*names, *pinned}):
            try:
                self._loaded[name] = self._load(repo, name, pinned.get(name))
            except (RepositoryError, ModelNotFound, ServerError) as exc:
                self._failed[name] = str(exc).removeprefix(f"{name}: ")
                log.warning("onnxruntime: %s not loaded: %s", name, self._failed[name])

    def __repr__(self) -> str:
        return f"OnnxRuntime({str(self.repository)!r}, models={sorted(self._loaded)})"

    @property
    def models(self) -> dict[str, int]:
        """Loaded model -> the version it serves."""
        return {name: loaded.version for name, loaded in sorted(self._loaded.items())}

    def _load(self, repo: RepositoryReader, name: str, pinned: int | None) -> _Loaded:
        available = repo.versions(name)
        if not available:
            raise ModelNotFound("not in the model repository", model=name)
        if pinned is not None and pinned not in available:
            raise ModelNotFound(f"pinned version {pinned} not in the repository {available}")
        version = pinned if pinned is not None else available[-1]
        spec = spec_from_config(repo.config(name))
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._intra_op_threads
        options.inter_op_num_threads = self._inter_op_threads
        options.log_severity_level = 3  # errors only: warnings reach the caller as exceptions
        path = repo.version_dir(name, version) / MODEL_FILENAME
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ServerError(f"version {version}: cannot load {path.name}: {exc}") from exc
        return _Loaded(version, spec, session)

    # ---- ModelRuntime ----------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Mapping[str, npt.NDArray[np.generic]],
        *,
        outputs: Sequence[str] | None = None,
        version: int | None = None,
        timeout_s: float | None = None,
    ) -> Tensors:
        """Validate like Triton, run the session; ``timeout_s`` aborts a run that overruns."""
        loaded = self._get(model, version)
        spec = loaded.spec
        batch = check_feed(spec, inputs)
        names = check_outputs(spec, outputs)
        feed = {
            t.name: _as_model_input(inputs[t.name], t.model_dims, t.dims, batch, spec)
            for t in spec.inputs
        }
        results = self._run(model, loaded.session, names, feed, timeout_s)
        tensors: Tensors = {}
        for name, array in zip(names, results, strict=True):
            meta = spec.output(name)
            if meta is not None and meta.model_dims != meta.dims:
                array = array.reshape((batch, *meta.dims) if spec.batching else meta.dims)
            tensors[name] = array
        return tensors

    def check_models(self, required: Mapping[str, Signature]) -> None:
        """One ``ModelNotFound`` (any model not loaded) or ``BadRequest`` listing every problem."""
        problems: list[str] = []
        missing = False
        for name, signature in required.items():
            loaded = self._loaded.get(name)
            if loaded is None:
                missing = True
                why = self._failed.get(name, "not in the model repository")
                problems.append(f"{name}: not loaded ({why})")
                continue
            problems.extend(f"{name}: {p}" for p in signature_problems(loaded.spec, signature))
        if problems:
            kind: type[InferenceError] = ModelNotFound if missing else BadRequest
            raise kind(f"model check failed: {'; '.join(problems)}")

    def close(self) -> None:
        """Drop the sessions; later calls raise ``ModelNotFound``."""
        self._failed.update({name: "the runtime is closed" for name in self._loaded})
        self._loaded.clear()

    # ---- internals -------------------------------------------------------------------------

    def _get(self, model: str, version: int | None) -> _Loaded:
        loaded = self._loaded.get(model)
        if loaded is None:
            why = self._failed.get(model, "not in the model repository")
            raise ModelNotFound(f"not loaded ({why})", model=model)
        if version is not None and version != loaded.version:
            raise ModelNotFound(
                f"version {version} is not loaded (this runtime serves version {loaded.version})",
                model=model,
            )
        return loaded

    def _run(
        self,
        model: str,
        session: Any,
        names: list[str],
        feed: dict[str, npt.NDArray[np.generic]],
        timeout_s: float | None,
    ) -> list[npt.NDArray[np.generic]]:
        """``session.run`` under an optional deadline, enforced with onnxruntime's terminate
        flag (checked between graph nodes), so an overrunning call stops instead of blocking
        the caller past its deadline."""
        if timeout_s is not None and timeout_s <= 0:
            raise DeadlineExceeded(f"deadline of {timeout_s:g}s passed", model=model)
        options = ort.RunOptions()
        expired = threading.Event()
        timer: threading.Timer | None = None
        if timeout_s is not None:

            def terminate() -> None:
                expired.set()
                options.terminate = True

            timer = threading.Timer(timeout_s, terminate)
            timer.daemon = True
            timer.start()
        try:
            results: list[npt.NDArray[np.generic]] = session.run(names, feed, options)
        except Exception as exc:
            if expired.is_set():
                raise DeadlineExceeded(
                    f"onnxruntime did not finish within {timeout_s:g}s", model=model
                ) from exc
            raise ServerError(f"onnxruntime failed: {exc}", model=model) from exc
        finally:
            if timer is not None:
                timer.cancel()
        return results


def _as_model_input(
    array: npt.NDArray[np.generic],
    model_dims: tuple[int, ...],
    dims: tuple[int, ...],
    batch: int,
    spec: ModelSpec,
) -> npt.NDArray[np.generic]:
    """A validated request tensor in the shape the graph takes (the config's ``reshape``)."""
    if model_dims != dims:
        array = array.reshape((batch, *model_dims) if spec.batching else model_dims)
    return np.ascontiguousarray(array)
