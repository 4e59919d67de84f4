"""``cascade operator``: run the reconcilers under kopf.

Two replicas share a peering object (``--peering``, the chart creates it): kopf lets only the
highest-priority live peer act, so a standby never double-applies a canary step.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from operators.controllers.base import OperatorSettings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "operator",
        help="run the Kubernetes operator (Model, InferenceGraph, Experiment)",
        description="Reconcile Cascade's custom resources: children, canaries, SLO autoscaling.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    where.add_argument("--all-namespaces", action="store_true", help="watch the whole cluster")
    peers = p.add_mutually_exclusive_group()
    peers.add_argument(
        "--peering", default="cascade", help="kopf peering object (default: cascade)"
    )
    peers.add_argument("--standalone", action="store_true", help="no peering (a single replica)")
    p.add_argument("--priority", type=int, default=0, help="peering priority (highest acts)")
    p.add_argument(
        "--image", default=OperatorSettings.image, help="serving image of the graph's pods"
    )
    p.add_argument(
        "--factory-image",
        default=OperatorSettings.factory_image,
        help="factory image of the init container that builds the models (source build)",
    )
    p.add_argument("--prometheus-url", default=None, help="Prometheus for canary and scaling")
    p.add_argument(
        "--reports-url",
        default=None,
        help="base URL of the experiment reports (default: each graph's Service)",
    )
    p.add_argument("--tick", type=float, default=OperatorSettings.tick_s, help="seconds")
    p.add_argument("--metrics-port", type=int, default=8080, help="0 disables /metrics")
    p.add_argument("--liveness-port", type=int, default=8081, help="0 disables /healthz")
    p.add_argument(
        "--log-format",
        choices=["full", "plain", "json"],
        default="full",
        help="log lines, each prefixed with the object it is about (json: for log shippers)",
    )
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import logging

    import kopf

    if not args.namespace and not args.all_namespaces:
        args.namespace = ["default"]
    # kopf's formatter prefixes each line with the object it concerns ("[ns/name] ...").
    logging.getLogger().handlers.clear()
    kopf.configure(
        verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()], log_prefix=True
    )
    asyncio.run(_operate(args))
    return 0


async def _operate(args: argparse.Namespace) -> None:
    import aiohttp
    import kopf
    from prometheus_client import start_http_server

    from operators.controllers import Controllers
    from operators.handlers import configure, register
    from operators.k8s.client import Kube
    from operators.signals import Observer, Prometheus, Reports

    registry = register(kopf.OperatorRegistry(), args.tick)
    closers: list[Callable[[], Awaitable[None]]] = []  # after kopf stopped every daemon

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In a pod its service account, elsewhere the kubeconfig (as kubectl does).

        Through the ``kubernetes`` client, the same loading :meth:`Kube.from_environment` uses:
        in a pod it finds the API server from ``KUBERNETES_SERVICE_HOST``/``_PORT`` as client-go
        does (kopf's own service-account login assumes ``kubernetes.default.svc:443``, which a
        pod with host networking or its own DNS policy cannot resolve).
        """
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings)
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        kube = Kube.from_environment()
        prometheus = Prometheus(args.prometheus_url, session) if args.prometheus_url else None
        memo["controllers"] = Controllers.create(
            kube,
            Observer(prometheus, Reports(session, args.reports_url)),
            OperatorSettings(image=args.image, factory_image=args.factory_image, tick_s=args.tick),
            events=lambda body, type_, reason, message: kopf.event(
                kopf.Body(cast(kopf.RawBody, body)), type=type_, reason=reason, message=message
            ),
        )
        closers.extend([kube.close, session.close])

    if args.metrics_port:
        start_http_server(args.metrics_port)
    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=args.all_namespaces,
            namespaces=args.namespace,
            standalone=args.standalone,
            peering_name=None if args.standalone else args.peering,
            priority=args.priority,
            liveness_endpoint=liveness,
            memo=kopf.Memo(),
        )
    finally:
        for close in closers:
            await close()
