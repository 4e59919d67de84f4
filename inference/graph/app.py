"""The graph as a Ray Serve application: an ingress and, optionally, a ranking deployment.

Two deployments at most, not one per stage: on a small machine every Serve hop costs about a
millisecond of CPU, so the cheap steps (features, retrieval, re-rank) run inside the ingress
(:mod:`~inference.graph.ingress`), and only ranking, the expensive stage that gains from
batching concurrent requests into one Triton call per model
(:mod:`~inference.graph.ranking`), may be its own deployment, scaled separately.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from inference.graph.ingress import IngressView
from inference.graph.ranking import RankingService
from inference.graph.settings import GraphSettings

_QUIET = {"enable_access_log": False, "log_level": "WARNING"}


def build_app(settings: GraphSettings) -> Any:
    """The application: ingress -> ranking (or the ingress alone, ranking inline)."""
    ingress = serve.deployment(
        name="ingress",
        num_replicas=settings.ingress_replicas,
        max_ongoing_requests=settings.graph.admission.max_in_flight * 2,
        ray_actor_options={"num_cpus": 0.1},
        logging_config=_QUIET,
    )(IngressView)
    if settings.ranking_placement == "inline":
        return ingress.bind(None, settings)
    ranking = serve.deployment(
        name="ranking",
        num_replicas=settings.ranking_replicas,
        max_ongoing_requests=256,
        ray_actor_options={"num_cpus": 0.1},
        logging_config=_QUIET,
    )(RankingService)
    return ingress.bind(ranking.bind(settings), settings)


def build_app_from_args(args: dict[str, Any]) -> Any:
    """The Ray Serve app builder for ``import_path`` configs (KubeRay's RayService).

    Serve hands a builder its ``args`` as a plain dict; they are the fields of
    :class:`GraphSettings`, validated here so a typo fails the deploy with the field's name.
    """
    return build_app(GraphSettings.model_validate(args))


__all__ = ["build_app", "build_app_from_args"]
