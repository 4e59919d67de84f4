"""The recommendation graph: retrieval -> ranking -> combiner -> re-rank, with budgets and
fallbacks. Stage logic here is plain Python over a :class:`~inference.runtime.ModelRuntime`;
:mod:`inference.graph.app` wraps it in Ray Serve deployments."""
