"""Where a graph replica finds its models and dependencies; passed to every deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from contract.graph_config import GraphConfig

RankingPlacement = Literal["deployment", "inline"]
DEFAULT_RANKING_PLACEMENT: RankingPlacement = "inline"


class GraphSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The Triton model repository the build wrote (the user tower's version directory
    #: carries the catalog, features and item index).
    repository: Path
    #: Triton's gRPC and HTTP endpoints (host:port); used for the models and for the
    #: single-model Open Inference Protocol pass-through.
    triton_grpc: str = "localhost:8001"
    triton_http: str = "localhost:8000"
    #: "triton", or "onnxruntime" to run the models in the replicas (no Triton at all).
    runtime: str = "triton"
    graph: GraphConfig = GraphConfig()
    ingress_replicas: int = 1
    ranking_replicas: int = 1
    #: "inline" (the default): ranking runs, still batched, inside each ingress replica,
    #: saving a handle hop (a millisecond or more of CPU per request on a small machine);
    #: "deployment": ranking is its own deployment, scaled on its own (the chart's RayService
    #: asks for it with ``rayService.rankingPlacement``).
    ranking_placement: RankingPlacement = DEFAULT_RANKING_PLACEMENT
    #: An ab_router catalog (YAML/JSON) and the experiment in it that splits this graph's
    #: traffic: each variant's ``config`` overrides fields of ``graph``.
    experiments: Path | None = None
    experiment: str | None = None
    #: Where exposures are logged (a SQLite file or ``redis://...``); None: not logged.
    event_store: str | None = None
