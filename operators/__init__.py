"""The Cascade operator: ``Model``, ``InferenceGraph`` and ``Experiment`` resources.

Layers, outermost first: :mod:`operators.handlers` (kopf decorators only) ->
:mod:`operators.controllers` (one reconciler per kind: read, decide, write) -> the pure
decisions of :mod:`operators.reconcile` (children, canary steps, replica counts), and the I/O of
:mod:`operators.k8s` and :mod:`operators.signals` (the Kubernetes API, Prometheus and the
experiment reports). :mod:`operators.crds` holds the resource specs, from which the CRDs'
schemas are generated.
"""
