"""The recommendation graph: retrieval -> ranking -> combiner -> re-rank, with budgets and
fallbacks. Stage logic here is plain Python over a :class:`~inference.runtime.ModelRuntime`;
:mod:`inference.graph.app` wires it into Ray Serve deployments
(:mod:`~inference.graph.ingress`, :mod:`~inference.graph.ranking`)."""
