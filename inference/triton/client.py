"""``TritonClient``: the :class:`~inference.runtime.ModelRuntime` over a real Triton server.

Why it looks the way it does:

* One tritonclient object per ``TritonClient``, reused for every call: gRPC multiplexes calls
  on one HTTP/2 channel, HTTP keeps its keep-alive connection, so no call pays a handshake.
* Tensors travel as raw bytes (gRPC always; HTTP with ``binary_data=True`` both ways): JSON
  encoding of a 257x55 float tensor costs more than running the model.
* Requests are validated locally against the model's config (fetched once per model and
  version) so a malformed request fails with a ``BadRequest`` naming the field without a round
  trip, with the same messages as the in-process runtime (:mod:`inference.validation`).
* Every failure becomes an :mod:`inference.errors` kind, keeping Triton's message (it names
  the bad input) and the model; only ``Unavailable`` is retried, with exponential backoff,
  and never past the caller's deadline. A bad request will fail again, and a deadline that
  has passed cannot be met by trying again.
* The retry and error-mapping policy are pure functions (:func:`map_error`,
  :func:`call_with_retry`) and the I/O sits behind a small :class:`Transport` protocol, so
  both are unit-tested without a server.

Deadlines: over gRPC the caller stops waiting when ``timeout_s`` passes, but the call itself is
not cancelled (see :class:`GrpcTransport`: cancellation crashes Triton 2.51). tritonclient's
HTTP client only has per-client socket timeouts (``network_timeout``, fixed at construction)
and a *server-side* ``timeout`` in microseconds that Triton applies to queueing only (a 1 us
value still returns a result), so neither bounds a call's wall time. The HTTP transport runs
each call under a ``gevent.Timeout`` instead (its sockets are gevent sockets) and, when that
fires, replaces the client: an HTTP/1.1 connection abandoned mid-response cannot be reused.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from tritonclient.utils import InferenceServerException

from contract.errors import http_status
from contract.signature import Signature
from inference.errors import (
    BadRequest,
    DeadlineExceeded,
    InferenceError,
    ModelNotFound,
    ServerError,
    Unavailable,
    kind_for_status,
)
from inference.runtime import Tensors
from inference.validation import (
    ModelSpec,
    check_feed,
    check_outputs,
    signature_problems,
    spec_from_config,
)

__all__ = [
    "RepositoryEntry",
    "RetryPolicy",
    "TritonClient",
    "TritonProtocol",
    "call_with_retry",
    "classify_status",
    "grpc_channel_options",
    "map_error",
]

log = logging.getLogger("cascade.inference")

T = TypeVar("T")
TritonProtocol = Literal["grpc", "http"]

# Triton prefixes some messages with a request id that is never set here; it is noise.
_REQUEST_ID = re.compile(r"^\[request id: [^\]]*\]\s*")


# --------------------------------------------------------------------------------------------
# Error mapping and retry policy: pure
# --------------------------------------------------------------------------------------------


def classify_status(status: str | None, message: str = "") -> type[InferenceError]:
    """The error kind for a tritonclient status (``"StatusCode.NOT_FOUND"``, ``"400"``...).

    Message checks come first because they are more specific than some statuses: an unknown
    model or version is ``ModelNotFound`` whatever the transport says, and Triton's own request
    timeout ("Request timeout expired") is a deadline even when reported as unavailable.
    An unknown or missing status is a ``ServerError``: nothing says retrying would help.
    """
    if "Request for unknown model" in message:
        return ModelNotFound
    if "timeout expired" in message.lower():
        return DeadlineExceeded
    if not status:
        return ServerError
    if status.startswith("StatusCode."):
        return kind_for_status(http_status(status.removeprefix("StatusCode.")))
    try:
        return kind_for_status(int(status))
    except ValueError:
        return ServerError


def map_error(exc: BaseException, *, model: str | None = None) -> InferenceError:
    """The :mod:`inference.errors` kind for any failure of a call (the caller chains it).

    ``InferenceServerException`` is classified by status and message, keeping Triton's message.
    Socket timeouts are deadlines; other socket errors (refused, reset, unreachable) mean the
    server is not there now, i.e. ``Unavailable``. Anything else is a ``ServerError``.
    """
    if isinstance(exc, InferenceError):
        return exc
    if isinstance(exc, InferenceServerException):
        raw = exc.message()
        message = _REQUEST_ID.sub("", str(raw) if raw is not None else str(exc))
        status = exc.status()
        kind = classify_status(str(status) if status is not None else None, message)
        return kind(message, model=model)
    if isinstance(exc, TimeoutError):
        return DeadlineExceeded(str(exc) or "timed out", model=model)
    if isinstance(exc, OSError):
        return Unavailable(f"cannot reach the server: {type(exc).__name__}: {exc}", model=model)
    return ServerError(f"client failure: {type(exc).__name__}: {exc}", model=model)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for ``Unavailable``: ``attempts`` calls in all (1 = no retries),
    sleeping ``base_delay_s * multiplier**n`` (capped at ``max_delay_s``) before retry n+1."""

    attempts: int = 3
    base_delay_s: float = 0.05
    multiplier: float = 2.0
    max_delay_s: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be >= 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.multiplier < 1:
            raise ValueError("RetryPolicy delays must be >= 0 and multiplier >= 1")

    def delay(self, retry: int) -> float:
        """Seconds to sleep before retry number ``retry`` (0-based)."""
        return float(min(self.max_delay_s, self.base_delay_s * self.multiplier**retry))


def call_with_retry(
    attempt: Callable[[float | None], T],
    *,
    model: str | None = None,
    policy: RetryPolicy = RetryPolicy(),
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``attempt(remaining_s)`` until it succeeds or fails for good; raise a mapped error.

    ``attempt`` gets the seconds left of ``timeout_s`` (None: no deadline) and should bound
    its I/O by them. Failures are mapped with :func:`map_error` and chained (``from``); only
    ``Unavailable`` is retried, at most ``policy.attempts`` calls in all. The deadline covers
    the retries too: when the next backoff would end past it, the call fails with
    ``DeadlineExceeded`` naming the last failure instead of sleeping in vain.
    """
    deadline = None if timeout_s is None else clock() + timeout_s
    for number in range(policy.attempts):
        remaining = None if deadline is None else deadline - clock()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the deadline passed before the request was sent", model=model)
        try:
            return attempt(remaining)
        except Exception as exc:
            error = map_error(exc, model=model)
            if not isinstance(error, Unavailable) or number + 1 >= policy.attempts:
                if error is exc:
                    raise
                raise error from exc
            delay = policy.delay(number)
            if deadline is not None and clock() + delay >= deadline:
                raise DeadlineExceeded(
                    f"deadline of {timeout_s:g}s passed while retrying "
                    f"(attempt {number + 1}): {_reason(error)}",
                    model=model,
                ) from exc
            log.warning(
                "%s unavailable (attempt %d of %d), retrying in %.3gs: %s",
                model or "Triton",
                number + 1,
                policy.attempts,
                delay,
                _reason(error),
            )
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover


def _reason(error: InferenceError) -> str:
    """An error's message without the ``<model>: `` prefix that InferenceError adds."""
    text = str(error)
    return text.removeprefix(f"{error.model}: ") if error.model else text


# --------------------------------------------------------------------------------------------
# Transports: the I/O, one per protocol
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepositoryEntry:
    """One row of Triton's repository index: a model (and version, once it was loaded)."""

    name: str
    version: int | None
    state: str
    reason: str


class Transport(Protocol):
    """The calls TritonClient makes; each bounds its wall time by ``timeout_s`` when given.

    ``version`` is Triton's string form ("" = latest). Failures are raised as tritonclient or
    socket exceptions and mapped by :func:`call_with_retry`.
    """

    def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, npt.NDArray[np.generic]],
        outputs: Sequence[str],
        timeout_s: float | None,
    ) -> Tensors: ...

    def model_config(self, model: str, version: str, timeout_s: float | None) -> Any:
        """The model's ``model_config_pb2.ModelConfig``."""
        ...

    def is_model_ready(self, model: str, version: str, timeout_s: float | None) -> bool: ...

    def is_server_ready(self, timeout_s: float | None) -> bool: ...

    def load_model(self, model: str, timeout_s: float | None) -> None: ...

    def unload_model(self, model: str, timeout_s: float | None) -> None: ...

    def repository_index(self, timeout_s: float | None) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def request_tensors(
    module: Any, inputs: Mapping[str, npt.NDArray[np.generic]], **options: Any
) -> list[Any]:
    """``InferInput`` objects of a tritonclient ``module`` (grpc, grpc.aio or http) holding
    ``inputs``."""
    from tritonclient.utils import np_to_triton_dtype

    request = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, **options)
        request.append(tensor)
    return request


def _result_tensors(result: Any, outputs: Sequence[str]) -> Tensors:
    """Named outputs of an InferResult as writable arrays (as onnxruntime returns them)."""
    tensors: Tensors = {}
    for name in outputs:
        array = result.as_numpy(name)
        if array is None:
            raise ServerError(f"the response has no output {name!r}")
        tensors[name] = array if array.flags.writeable else array.copy()
    return tensors


def grpc_channel_options() -> list[tuple[str, int]]:
    """The settings of every gRPC channel to Triton (this client's and the pass-through's)."""
    import tritonclient.grpc as grpcclient

    keepalive = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_receive_message_length", 2**31 - 1),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        # A restarted server is back within seconds: gRPC's default reconnect backoff (up to
        # two minutes) would keep the graph on fallbacks long after it is.
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


class GrpcTransport:
    """tritonclient.grpc: one channel.

    Inference is never cancelled from here. A call whose caller gives up (its ``timeout_s``
    passes) is abandoned: the caller gets a ``TimeoutError`` at once, the RPC runs on and its
    late answer is dropped. Cancelling in-flight calls into Triton 2.51's python backend
    (what a short RPC deadline does) crashes the server under concurrent load (SIGSEGV in
    ``pthread_mutex_lock``); the RPC's own deadline is ``abandon_after_s``, far beyond any
    caller's budget, and at most ``max_abandoned`` abandoned calls may be outstanding, so
    a server that stopped answering is not buried under more work (``Unavailable``).
    """

    def __init__(
        self, url: str, *, abandon_after_s: float = 30.0, max_abandoned: int = 256
    ) -> None:
        import tritonclient.grpc as grpcclient

        self._module: Any = grpcclient
        self._client: Any = grpcclient.InferenceServerClient(
            url, channel_args=grpc_channel_options()
        )
        self._abandon_after_s = abandon_after_s
        self._max_abandoned = max_abandoned
        self._abandoned = 0
        self._lock = threading.Lock()

    @property
    def abandoned(self) -> int:
        """Calls whose caller gave up and whose answer has not come yet."""
        return self._abandoned

    def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, npt.NDArray[np.generic]],
        outputs: Sequence[str],
        timeout_s: float | None,
    ) -> Tensors:
        if self._abandoned >= self._max_abandoned:
            raise Unavailable(
                f"{self._abandoned} calls to the server are still unanswered past their "
                "callers' deadlines; not sending more",
                model=model,
            )
        request = request_tensors(self._module, inputs)
        wanted = [self._module.InferRequestedOutput(name) for name in outputs]
        call = _PendingCall(self)
        self._client.async_infer(
            model,
            request,
            call.finish,
            model_version=version,
            outputs=wanted,
            client_timeout=self._abandon_after_s,
        )
        result = call.wait(timeout_s)
        return _result_tensors(result, outputs)

    def _count_abandoned(self, change: int) -> None:
        with self._lock:
            self._abandoned += change

    def model_config(self, model: str, version: str, timeout_s: float | None) -> Any:
        return self._client.get_model_config(model, version, client_timeout=timeout_s).config

    def is_model_ready(self, model: str, version: str, timeout_s: float | None) -> bool:
        return bool(self._client.is_model_ready(model, version, client_timeout=timeout_s))

    def is_server_ready(self, timeout_s: float | None) -> bool:
        return bool(self._client.is_server_ready(client_timeout=timeout_s))

    def load_model(self, model: str, timeout_s: float | None) -> None:
        self._client.load_model(model, client_timeout=timeout_s)

    def unload_model(self, model: str, timeout_s: float | None) -> None:
        self._client.unload_model(model, client_timeout=timeout_s)

    def repository_index(self, timeout_s: float | None) -> list[dict[str, Any]]:
        index = self._client.get_model_repository_index(as_json=True, client_timeout=timeout_s)
        return list(index.get("models", []))

    def close(self) -> None:
        self._client.close()


class _PendingCall:
    """One asynchronous gRPC inference: its caller waits at most its own deadline."""

    def __init__(self, transport: GrpcTransport) -> None:
        self._transport = transport
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._result: Any = None
        self._error: BaseException | None = None
        self._abandoned = False

    def finish(self, result: Any, error: BaseException | None) -> None:
        """tritonclient's callback (on its thread): keep the answer, or drop a late one."""
        with self._lock:
            self._result, self._error = result, error
            self._done.set()
            late = self._abandoned
        if late:
            self._transport._count_abandoned(-1)

    def wait(self, timeout_s: float | None) -> Any:
        if not self._done.wait(None if timeout_s is None else max(timeout_s, 0.0)):
            with self._lock:
                if not self._done.is_set():
                    self._abandoned = True
                    self._transport._count_abandoned(+1)
                    raise TimeoutError(f"no response within {timeout_s:g}s")
        if self._error is not None:
            raise self._error
        return self._result


class HttpTransport:
    """tritonclient.http: one keep-alive connection, binary tensors, gevent-bounded calls.

    ``connection_timeout_s`` bounds connecting and ``network_timeout_s`` every socket read or
    write (a ceiling for calls without a deadline); a call's own ``timeout_s`` is enforced
    with ``gevent.Timeout`` (see the module docstring). Like tritonclient's HTTP client, an
    instance belongs to one thread (gevent's hub and the connection pool are per thread).
    """

    def __init__(
        self, url: str, *, connection_timeout_s: float = 5.0, network_timeout_s: float = 60.0
    ) -> None:
        import tritonclient.http as httpclient
        from geventhttpclient.response import HTTPConnectionClosed

        # gevent ships no type stubs; it comes with tritonclient[http].
        self._gevent: Any = importlib.import_module("gevent")
        self._module: Any = httpclient
        self._closed_error: type[Exception] = HTTPConnectionClosed
        self._url = url
        self._connection_timeout_s = connection_timeout_s
        self._network_timeout_s = network_timeout_s
        self._client: Any = self._connect()

    def _connect(self) -> Any:
        return self._module.InferenceServerClient(
            self._url,
            connection_timeout=self._connection_timeout_s,
            network_timeout=self._network_timeout_s,
        )

    def _bounded(self, call: Callable[[], T], timeout_s: float | None) -> T:
        """Run ``call`` within ``timeout_s`` of wall time, else raise TimeoutError."""
        if timeout_s is None:
            return self._plain(call)
        timer = self._gevent.Timeout(max(timeout_s, 0.0))
        timer.start()
        try:
            return self._plain(call)
        except self._gevent.Timeout as exc:
            if exc is not timer:
                raise
            # The connection may hold half a response; only a new one is safe to use.
            self._reset()
            raise TimeoutError(f"no response within {timeout_s:g}s") from None
        finally:
            timer.close()

    def _plain(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except self._closed_error as exc:
            raise ConnectionResetError(f"the server closed the connection: {exc}") from exc

    def _reset(self) -> None:
        old, self._client = self._client, self._connect()
        try:
            old.close()
        except Exception:  # pragma: no cover - best effort on a connection being discarded
            log.debug("closing an abandoned HTTP client failed", exc_info=True)

    def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, npt.NDArray[np.generic]],
        outputs: Sequence[str],
        timeout_s: float | None,
    ) -> Tensors:
        request = request_tensors(self._module, inputs, binary_data=True)
        wanted = [self._module.InferRequestedOutput(name, binary_data=True) for name in outputs]

        def call() -> Tensors:
            result = self._client.infer(model, request, model_version=version, outputs=wanted)
            return _result_tensors(result, outputs)

        return self._bounded(call, timeout_s)

    def model_config(self, model: str, version: str, timeout_s: float | None) -> Any:
        from google.protobuf import json_format
        from tritonclient.grpc import model_config_pb2

        body = self._bounded(lambda: self._client.get_model_config(model, version), timeout_s)
        config = model_config_pb2.ModelConfig()
        json_format.ParseDict(body, config, ignore_unknown_fields=True)
        return config

    def is_model_ready(self, model: str, version: str, timeout_s: float | None) -> bool:
        return bool(self._bounded(lambda: self._client.is_model_ready(model, version), timeout_s))

    def is_server_ready(self, timeout_s: float | None) -> bool:
        return bool(self._bounded(lambda: self._client.is_server_ready(), timeout_s))

    def load_model(self, model: str, timeout_s: float | None) -> None:
        self._bounded(lambda: self._client.load_model(model), timeout_s)

    def unload_model(self, model: str, timeout_s: float | None) -> None:
        self._bounded(lambda: self._client.unload_model(model), timeout_s)

    def repository_index(self, timeout_s: float | None) -> list[dict[str, Any]]:
        return list(self._bounded(lambda: self._client.get_model_repository_index(), timeout_s))

    def close(self) -> None:
        self._client.close()


# --------------------------------------------------------------------------------------------
# The runtime
# --------------------------------------------------------------------------------------------


class TritonClient:
    """:class:`~inference.runtime.ModelRuntime` over Triton via gRPC (default) or HTTP.

    ``url`` is ``host:port`` without a scheme. ``default_timeout_s`` applies to calls that
    pass no ``timeout_s`` (None: unbounded, apart from HTTP's ``network_timeout_s``). ``sleep``
    and ``clock`` are injectable for tests, as is ``transport`` (the I/O; built from
    ``protocol`` and ``url`` when None). The gRPC client is safe to share between threads;
    an HTTP one, like tritonclient's, belongs to the thread that uses it (one per thread).
    """

    def __init__(
        self,
        url: str,
        protocol: TritonProtocol = "grpc",
        *,
        retry: RetryPolicy = RetryPolicy(),
        default_timeout_s: float | None = None,
        connection_timeout_s: float = 5.0,
        network_timeout_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: Transport | None = None,
    ) -> None:
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        self.url = url
        self.protocol: TritonProtocol = protocol
        self.kind = f"triton-{protocol}"
        self.retry = retry
        self.default_timeout_s = default_timeout_s
        self._sleep = sleep
        self._clock = clock
        self._specs: dict[tuple[str, int | None], ModelSpec] = {}
        self._lock = threading.Lock()
        self._closed = False
        if transport is not None:
            self._transport: Transport = transport
        elif protocol == "grpc":
            self._transport = GrpcTransport(url)
        else:
            self._transport = HttpTransport(
                url, connection_timeout_s=connection_timeout_s, network_timeout_s=network_timeout_s
            )

    def __repr__(self) -> str:
        return f"TritonClient({self.url!r}, {self.protocol!r})"

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

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
        """Validate ``inputs`` against the model's config, then run the model on Triton.

        The deadline (``timeout_s``, else ``default_timeout_s``) covers the whole call: the
        first-use config fetch, the inference and any retries.
        """
        budget = self.default_timeout_s if timeout_s is None else timeout_s
        deadline = None if budget is None else self._clock() + budget
        wire_version = _wire_version(model, version)
        spec = self._spec(model, version, deadline)
        check_feed(spec, inputs)
        names = check_outputs(spec, outputs)
        try:
            return self._call(
                lambda t: self._transport.infer(model, wire_version, inputs, names, t),
                model=model,
                deadline=deadline,
            )
        except (BadRequest, ModelNotFound):
            # The server disagrees with what we validated against: the model was reloaded.
            self._forget(model)
            raise

    def check_models(self, required: Mapping[str, Signature]) -> None:
        """Raise one error listing every required model that is not ready or does not match.

        ``ModelNotFound`` if any model is not loaded (other problems are listed too), else
        ``BadRequest`` if any served signature differs. Configs are fetched fresh. An
        unreachable server raises ``Unavailable`` rather than a list of "not loaded".
        """
        problems: list[str] = []
        missing = False
        index: dict[str, RepositoryEntry] | None = None
        for name, signature in required.items():
            ready = self._call(self._ready_probe(name), model=name)
            if not ready:
                missing = True
                if index is None:
                    index = {entry.name: entry for entry in self.repository_index()}
                problems.append(f"{name}: not loaded{_not_ready_detail(index.get(name))}")
                continue
            self._forget(name)
            spec = self._spec(name, None, None)
            problems.extend(f"{name}: {problem}" for problem in signature_problems(spec, signature))
        if problems:
            kind: type[InferenceError] = ModelNotFound if missing else BadRequest
            raise kind(f"model check failed: {'; '.join(problems)}")

    def close(self) -> None:
        """Close the connection; idempotent. Later calls raise ``Unavailable``."""
        if not self._closed:
            self._closed = True
            self._transport.close()

    # ---- repository API --------------------------------------------------------------------

    def server_ready(self, timeout_s: float | None = None) -> bool:
        """Whether the server answers and is ready; never raises for an unreachable server."""
        return self.readiness(timeout_s) is None

    def readiness(self, timeout_s: float | None = None) -> str | None:
        """None when the server is ready, else why not (for logs); one attempt, no retries."""
        if self._closed:
            return "the client is closed"
        try:
            ready = self._transport.is_server_ready(timeout_s)
        except Exception as exc:
            return str(map_error(exc))
        return None if ready else "the server answers but is not ready"

    def load_model(self, name: str, *, timeout_s: float | None = None) -> None:
        """Load (or reload) ``name`` from the server's repository (explicit model control)."""
        self._forget(name)
        self._call(lambda t: self._transport.load_model(name, t), model=name, budget=timeout_s)

    def unload_model(self, name: str, *, timeout_s: float | None = None) -> None:
        """Unload ``name``; Triton finishes in-flight requests first."""
        self._forget(name)
        self._call(lambda t: self._transport.unload_model(name, t), model=name, budget=timeout_s)

    def repository_index(self, *, timeout_s: float | None = None) -> list[RepositoryEntry]:
        """Every model in the server's repository, loaded or not (one row per version)."""
        rows = self._call(lambda t: self._transport.repository_index(t), budget=timeout_s)
        return [_entry(row) for row in rows]

    def model_versions(self, name: str, *, timeout_s: float | None = None) -> dict[int, str]:
        """Version -> state (``READY``, ``UNAVAILABLE``, ...) of ``name``, ascending.

        Empty when the model is in the repository but was never loaded; ``ModelNotFound``
        when the repository has no such model.
        """
        rows = [e for e in self.repository_index(timeout_s=timeout_s) if e.name == name]
        if not rows:
            raise ModelNotFound("not in the server's model repository", model=name)
        return {e.version: e.state for e in sorted(rows, key=_version_key) if e.version is not None}

    # ---- internals -------------------------------------------------------------------------

    def _call(
        self,
        attempt: Callable[[float | None], T],
        *,
        model: str | None = None,
        deadline: float | None = None,
        budget: float | None = None,
    ) -> T:
        """One call with the retry policy, bounded by ``deadline`` (absolute) or ``budget``."""
        if self._closed:
            raise Unavailable("the Triton client is closed", model=model)
        if deadline is not None:
            budget = max(0.0, deadline - self._clock())
        elif budget is None:
            budget = self.default_timeout_s
        return call_with_retry(
            attempt,
            model=model,
            policy=self.retry,
            timeout_s=budget,
            sleep=self._sleep,
            clock=self._clock,
        )

    def _ready_probe(self, model: str) -> Callable[[float | None], bool]:
        return lambda t: self._transport.is_model_ready(model, "", t)

    def _spec(self, model: str, version: int | None, deadline: float | None) -> ModelSpec:
        """The cached spec of (model, version); fetched on first use (an unknown model or
        version is ``ModelNotFound`` here, before any tensor is sent)."""
        key = (model, version)
        with self._lock:
            spec = self._specs.get(key)
        if spec is not None:
            return spec
        wire_version = _wire_version(model, version)
        config = self._call(
            lambda t: self._transport.model_config(model, wire_version, t),
            model=model,
            deadline=deadline,
        )
        spec = spec_from_config(config)
        with self._lock:
            self._specs[key] = spec
        return spec

    def _forget(self, model: str) -> None:
        with self._lock:
            for key in [k for k in self._specs if k[0] == model]:
                del self._specs[key]


def _wire_version(model: str, version: int | None) -> str:
    if version is None:
        return ""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BadRequest(f"version must be a positive integer, got {version!r}", model=model)
    return str(version)


def _entry(row: Mapping[str, Any]) -> RepositoryEntry:
    version = str(row.get("version", ""))
    return RepositoryEntry(
        name=str(row.get("name", "")),
        version=int(version) if version.isdigit() else None,
        state=str(row.get("state", "")) or "UNLOADED",
        reason=str(row.get("reason", "")),
    )


def _version_key(entry: RepositoryEntry) -> int:
    return entry.version or 0


def _not_ready_detail(entry: RepositoryEntry | None) -> str:
    if entry is None:
        return " (not in the server's model repository)"
    if entry.reason:
        return f" ({entry.state}: {entry.reason})"
    return ""
