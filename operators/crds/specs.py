"""The specs of ``Model``, ``InferenceGraph`` and ``Experiment`` (``serving.cascade.dev``).

These pydantic models are the single source of the resources' shape: the operator validates
every spec with them (a bad one gets a condition naming the field), and
:mod:`operators.crds.schema` generates the CRDs' ``openAPIV3Schema`` from them, so the API server
and the operator cannot disagree. Field names are camelCase on the wire, as in every Kubernetes
API; unknown fields are rejected rather than silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ab_router.design import SLUG_PATTERN
from ab_router.design import Experiment as ExperimentDesign
from ab_router.design import Metric as MetricDesign
from ab_router.design import Variant as VariantDesign
from contract.graph_config import GraphConfig

#: The data plane's defaults, which the resources' defaults are (defined once, in contract).
_GRAPH = GraphConfig()

GROUP = "serving.cascade.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: A Kubernetes object name (RFC 1123 label), the form every referenced resource name takes.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

#: A DNS-1035 label, what a Service name must be: unlike RFC 1123 it starts with a letter.
DNS_1035_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

#: The longest label (and so Service name) Kubernetes accepts.
DNS_LABEL_MAX_LENGTH = 63

#: What gets appended to an InferenceGraph's name to name the objects made for it: the
#: operator's children (:func:`operators.reconcile.children.child_name`) and the chart's
#: NodePort Service. The longest one bounds the graph's name.
GRAPH_CHILD_SUFFIXES = ("-graph", "-triton", "-config", "-router", "-metrics", "-nodeport")

#: A Model under canary is routed as the ab_router experiment ``canary-<model>``.
CANARY_EXPERIMENT_PREFIX = "canary-"


def canary_experiment(model: str) -> str:
    """The ab_router experiment that splits a canary of ``model`` (a Model resource)."""
    return f"{CANARY_EXPERIMENT_PREFIX}{model}"


@dataclass(frozen=True)
class NameRule:
    """What a resource's ``metadata.name`` must look like, because other names are made from it.

    Kubernetes accepts any DNS-1123 subdomain (253 characters, may start with a digit) as a
    custom resource's name, but the names derived from it are stricter: a graph named
    ``2024-recs`` would be stored, and then its ``2024-recs-triton`` Service refused forever.
    The CRD carries the rule (:func:`operators.crds.schema.crd`), so the API server refuses such
    a resource at once; the chart's values schema carries it for the values that become names;
    and the operator checks it too, for a resource stored before the rule existed.
    """

    pattern: str
    max_length: int
    shape: str  # the pattern in words
    why: str  # the derived name; ``{name}`` stands for the name

    def problem(self, name: str) -> str | None:
        """Why ``name`` cannot be used, naming the derived object; ``None`` when it can."""
        why = self.why.format(name=name)
        if len(name) > self.max_length:
            return (
                f"metadata.name: {name!r} has {len(name)} characters, at most "
                f"{self.max_length} fit: {why}"
            )
        if re.fullmatch(self.pattern, name) is None:
            return f"metadata.name: {name!r} must {self.shape}: {why}"
        return None


_SLUG_SHAPE = "be lower-case letters and digits in words joined by single hyphens"

GRAPH_NAME = NameRule(
    DNS_1035_PATTERN,
    DNS_LABEL_MAX_LENGTH - max(len(s) for s in GRAPH_CHILD_SUFFIXES),
    "start with a lower-case letter, hold only lower-case letters, digits and '-', and end "
    "with a letter or digit",
    "its children are Services such as {name}-triton, which must be DNS-1035 labels of at "
    "most 63 characters",
)
MODEL_NAME = NameRule(
    SLUG_PATTERN,
    DNS_LABEL_MAX_LENGTH - len(CANARY_EXPERIMENT_PREFIX),
    _SLUG_SHAPE,
    f"a canary of it is routed as the experiment {CANARY_EXPERIMENT_PREFIX}{{name}}, a slug "
    "of at most 63 characters",
)
EXPERIMENT_NAME = NameRule(
    SLUG_PATTERN,
    DNS_LABEL_MAX_LENGTH,
    _SLUG_SHAPE,
    "the router's experiment {name} is a slug of at most 63 characters",
)


def graph_name_problem(name: str) -> str | None:
    """Why an InferenceGraph cannot be called ``name`` (its children's names would be refused),
    or ``None``. The CRD refuses such names; this catches one stored before it did."""
    return GRAPH_NAME.problem(name)


#: A version bump is judged step by step at these traffic percentages unless a policy says
#: otherwise (the shape Flagger and Argo Rollouts default to).
DEFAULT_STEPS = (5, 25, 50, 100)

_STEPS_RULES: list[JsonValue] = [
    {
        "rule": "self.isSorted() && self.all(x, self.exists_one(y, y == x))",
        "message": "steps must be strictly increasing",
    },
    {"rule": "self[self.size() - 1] == 100", "message": "the last step must be 100"},
]

#: The same check as :meth:`ReplicaBounds._ordered`, for the API server (>= 1.25; older ones
#: ignore it and the operator's condition reports it instead).
_BOUNDS_RULES: list[JsonValue] = [
    {
        "rule": "self.minReplicas <= self.maxReplicas",
        "message": "minReplicas must be less than or equal to maxReplicas",
    },
]

#: Where a graph's repository tarball may come from: what the init container's urllib fetches.
URI_PATTERN = r"^https?://.+"


def field_errors(prefix: str, err: ValidationError) -> str:
    """``spec.stages.ranking.budgetMs: Input should be greater than 0; ...``: each problem
    names its field by the wire (camelCase) path, for a status condition a user can act on."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]))
        parts.append(f"{loc}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


class Spec(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def wire(self) -> dict[str, Any]:
        """The object as the Kubernetes API holds it (camelCase, unset optionals left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- Model --------------------------------------------------------------------------------------


class CanaryPolicy(Spec):
    """How a new version of a model earns its traffic."""

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default=list(DEFAULT_STEPS),
        min_length=1,
        max_length=10,
        description="Percent of traffic the new version gets at each step, strictly "
        "increasing, ending at 100.",
        json_schema_extra={"x-kubernetes-validations": _STEPS_RULES},
    )
    interval_seconds: int = Field(
        default=300, ge=1, le=86_400, description="How long each step runs before it is judged."
    )
    max_p99_ms: float = Field(
        default=50.0, gt=0, description="Roll back when the new version's p99 latency exceeds this."
    )
    max_error_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Roll back when the new version's share of failed requests exceeds this.",
    )
    min_requests: int = Field(
        default=100,
        ge=0,
        description="Requests the new version must have served in a step before it is judged.",
    )
    progress_deadline_seconds: int = Field(
        default=1800,
        ge=10,
        description="Roll back when a step has had too little traffic to judge for this long.",
    )
    business_metric: bool = Field(
        default=True,
        description="Also consult the experiment analysis: a significantly worse primary "
        "metric, or a broken traffic split, rolls back.",
    )
    paused: bool = Field(
        default=False, description="Hold the current step; the step timer restarts on resume."
    )
    abort: bool = Field(default=False, description="Roll back now and keep the last good version.")

    @model_validator(mode="after")
    def _check_steps(self) -> Self:
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"steps: must be strictly increasing, got {self.steps}")
        if self.steps[-1] != 100:
            raise ValueError(f"steps: the last step must be 100, got {self.steps[-1]}")
        return self


class ModelSpec(Spec):
    """One model of the repository and the version that should serve."""

    format: Literal["onnx"] = Field(default="onnx", description="Serialization format.")
    storage_uri: str = Field(
        pattern=r"^(pvc|s3|gs|file|https?)://.+",
        description="Where the model repository lives (pvc://claim/path, s3://bucket/path, ...).",
    )
    repository_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        max_length=128,
        description="The model's directory in the Triton repository; default: the resource "
        "name with '-' read as '_' (resource names cannot hold underscores).",
    )
    version: int = Field(ge=1, description="The version that should serve (a Triton version).")
    runtime: Literal["triton", "onnxruntime"] = Field(
        default="triton", description="What executes the model."
    )
    quantization: Literal["int8", "none"] = Field(
        default="int8", description="Weights as built by the model factory."
    )
    canary: CanaryPolicy | None = Field(
        default=None,
        description="Roll a new version out step by step on evidence; without it a new "
        "version replaces the old one at once.",
    )


# -- InferenceGraph -----------------------------------------------------------------------------


class BuildSource(Spec):
    """Build the repository in an init container (the quickstart: no storage needed)."""

    dataset: Literal["movielens-100k", "synthetic"] = Field(
        default="movielens-100k", description="What the model factory trains on."
    )
    versions: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Builds to run; each adds a version of every model (2 gives a canary "
        "something to roll out to).",
    )


class ModelRepository(Spec):
    """Where the graph's pods get the Triton model repository; exactly one source."""

    pvc: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="A PersistentVolumeClaim holding it."
    )
    uri: str | None = Field(
        default=None,
        description="An HTTP(S) location of a repository tarball, fetched by an init container "
        "with Python's urllib. s3:// and gs:// are not fetched: use an HTTPS (presigned) URL, "
        "or a PVC.",
        # The CRD carries the pattern; _fetchable checks it here, with a message that says
        # what to use instead (pydantic's own would only say "should match pattern").
        json_schema_extra={"pattern": URI_PATTERN},
    )
    build: BuildSource | None = Field(
        default=None, description="Build it in an init container from a bundled dataset."
    )

    @field_validator("uri")
    @classmethod
    def _fetchable(cls, uri: str | None) -> str | None:
        if uri is not None and re.search(URI_PATTERN, uri) is None:
            raise ValueError(
                f"{uri!r}: s3:// and gs:// are not fetched (the init container reads http:// "
                "and https:// only); use an HTTPS (presigned) URL or a PVC"
            )
        return uri

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in ("pvc", "uri", "build") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"modelRepository: set exactly one of pvc, uri, build (got {given or 'none'})"
            )
        return self


class RetrievalStage(Spec):
    """Two-tower retrieval. Fallback when late or failing: popular items for the demographic."""

    model: str = Field(
        default="user-tower",
        pattern=MODEL_NAME.pattern,
        max_length=MODEL_NAME.max_length,
        description="Model resource.",
    )
    budget_ms: float = Field(default=_GRAPH.budgets.retrieval_ms, gt=0, le=10_000)
    candidates: int = Field(default=_GRAPH.candidates, ge=1, le=10_000)


class RankingStage(Spec):
    """Rankers blended by the combiner. Fallbacks: the other ranker, then retrieval order."""

    models: list[
        Annotated[str, Field(pattern=MODEL_NAME.pattern, max_length=MODEL_NAME.max_length)]
    ] = Field(
        default=["ranker-dcn", "ranker-mlp"],
        min_length=1,
        max_length=8,
        description="Ranker Model resources.",
    )
    combiner: str = Field(
        default="combiner", pattern=MODEL_NAME.pattern, max_length=MODEL_NAME.max_length
    )
    budget_ms: float = Field(default=_GRAPH.budgets.ranking_ms, gt=0, le=10_000)


class RerankStage(Spec):
    """Diversity and business rules. Fallback: the ranked order, unchanged."""

    budget_ms: float = Field(default=_GRAPH.budgets.rerank_ms, gt=0, le=10_000)
    mmr_lambda: float = Field(default=_GRAPH.rerank.mmr_lambda, ge=0, le=1)
    deny_items: list[str] = Field(default_factory=list, max_length=10_000)


class SimilarStage(Spec):
    """Similar items (``/v1/similar``). Fallbacks: the embeddings alone, then popular items."""

    budget_ms: float = Field(default=_GRAPH.budgets.similar_ms, gt=0, le=10_000)
    candidates: int = Field(
        default=_GRAPH.similar_candidates,
        ge=1,
        le=10_000,
        description="Items gathered by embedding, besides the neighbours, before re-rank.",
    )


class Stages(Spec):
    retrieval: RetrievalStage = RetrievalStage()
    ranking: RankingStage = RankingStage()
    rerank: RerankStage = RerankStage()
    similar: SimilarStage = SimilarStage()


class ReplicaBounds(Spec):
    """The range the autoscaler keeps a deployment's replicas in."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _BOUNDS_RULES})

    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=4, ge=1, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"maxReplicas ({self.max_replicas}) is below minReplicas ({self.min_replicas})"
            )
        return self


class Autoscaling(Spec):
    """Replica counts from SLO signals, the bottleneck stage first."""

    enabled: bool = Field(default=True, description="Off: each deployment runs minReplicas.")
    target_p99_ms: float | None = Field(
        default=None, gt=0, description="End-to-end p99 target; default: the graph's deadline."
    )
    target_in_flight_per_replica: float = Field(default=8.0, gt=0)
    target_queue_depth_per_replica: float = Field(
        default=4.0, gt=0, description="Triton requests waiting per replica."
    )
    target_fallback_rate: float = Field(
        default=0.01,
        gt=0,
        le=1,
        description="Share of requests a stage may answer with its fallback. Under load the "
        "stages degrade instead of queueing, so latency alone would not show the shortage.",
    )
    scale_up_stabilization_seconds: int = Field(default=30, ge=0, le=3600)
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600)
    graph: ReplicaBounds = ReplicaBounds()
    triton: ReplicaBounds = ReplicaBounds()


class Monitoring(Spec):
    service_monitor: bool = Field(
        default=True,
        description="Create a ServiceMonitor where the Prometheus Operator's CRD exists.",
    )


class DisruptionBudget(Spec):
    """The graph pods' PodDisruptionBudget (``policy/v1``, Kubernetes >= 1.21)."""

    enabled: bool = Field(
        default=True,
        description="Render a PodDisruptionBudget for the graph pods; off for clusters that "
        "manage disruptions otherwise or lack policy/v1.",
    )
    max_unavailable: int = Field(
        default=1,
        ge=1,
        description="Graph pods a voluntary disruption (drain, upgrade) may take down at once.",
    )


class InferenceGraphSpec(Spec):
    """The recommender graph: its stages, their models and budgets, and how it scales."""

    model_repository: ModelRepository
    stages: Stages = Stages()
    deadline_ms: float = Field(
        default=_GRAPH.budgets.total_ms, gt=0, le=60_000, description="End-to-end budget."
    )
    autoscaling: Autoscaling = Autoscaling()
    experiment: str | None = Field(
        default=None,
        pattern=EXPERIMENT_NAME.pattern,
        max_length=EXPERIMENT_NAME.max_length,
        description="The Experiment resource that splits this graph's traffic.",
    )
    event_store: str | None = Field(
        default=None,
        pattern=r"^redis://.+",
        description="Exposure log for experiments and canaries (a Redis URL).",
    )
    image: str | None = Field(
        default=None,
        description=(
            "Serving image of the graph's pods; default: the operator's own setting. The model"
            " build (source build) runs the operator's factory image."
        ),
    )
    monitoring: Monitoring = Monitoring()
    disruption_budget: DisruptionBudget = DisruptionBudget()

    @property
    def model_names(self) -> list[str]:
        """Every Model resource the graph serves, in stage order."""
        ranking = self.stages.ranking
        return [self.stages.retrieval.model, *ranking.models, ranking.combiner]

    @model_validator(mode="after")
    def _budgets_fit(self) -> Self:
        s = self.stages
        budgets = (s.retrieval.budget_ms, s.ranking.budget_ms, s.rerank.budget_ms)
        if max(*budgets, s.similar.budget_ms) > self.deadline_ms:
            raise ValueError(f"stages: a stage budget exceeds deadlineMs ({self.deadline_ms:g})")
        return self


# -- Experiment ---------------------------------------------------------------------------------


# The router's own models give the fields, bounds and defaults (written once, in ab_router);
# Spec adds the wire form (camelCase, unknown keys rejected).
class Variant(Spec, VariantDesign):
    """One arm of the experiment; its config overrides fields of the graph's config."""

    @field_validator("config")
    @classmethod
    def _graph_overrides(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Checked with the data plane's own schema at reconcile time: a typo is an
        ``InvalidSpec`` naming the field, not pods that crash-loop when they start."""
        try:
            GraphConfig().with_overrides(config)
        except ValidationError as err:
            where = (".".join(map(str, e["loc"])) or "config" for e in err.errors())
            problems = (f"{w}: {e['msg']}" for w, e in zip(where, err.errors(), strict=True))
            raise ValueError("; ".join(problems)) from None
        return config


class Metric(Spec, MetricDesign):
    """A metric the analysis reports: a primary or secondary outcome, or a guardrail."""


class ExperimentSpec(Spec):
    """An A/B test on a graph; the router's design (:mod:`ab_router.design`) as a resource."""

    graph: str = Field(
        pattern=GRAPH_NAME.pattern,
        max_length=GRAPH_NAME.max_length,
        description="The InferenceGraph it runs on.",
    )
    variants: list[Variant] = Field(
        min_length=2, max_length=16, description="Control first; weights sum to 100."
    )
    metrics: list[Metric] = Field(default_factory=list, max_length=32)
    salt: str | None = Field(default=None, min_length=1, description="Default: the name.")
    traffic_percent: float = Field(default=100, ge=0, le=100)
    allow_list: dict[str, str] = Field(
        default_factory=dict, description="Unit id -> variant (for QA)."
    )
    state: Literal["draft", "running", "stopped"] = "running"

    def design(self, name: str) -> ExperimentDesign:
        """The router's design; raises pydantic's ``ValidationError`` on a cross-field rule."""
        return ExperimentDesign.model_validate(
            {
                "name": name,
                "salt": self.salt,
                "variants": [v.model_dump() for v in self.variants],
                "metrics": [m.model_dump() for m in self.metrics],
                "traffic_percent": self.traffic_percent,
                "allow_list": self.allow_list,
                "status": self.state,
            }
        )
