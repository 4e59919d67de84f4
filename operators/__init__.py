"""The Cascade operator: ``Model``, ``InferenceGraph`` and ``Experiment`` resources.

Layers, outermost first: :mod:`operators.handlers` (kopf decorators only, wiring I/O) ->
:mod:`operators.reconcile` (pure decisions: children, canary steps, replica counts) ->
:mod:`operators.k8s` and :mod:`operators.signals` (the Kubernetes API, Prometheus and the
experiment reports). :mod:`operators.crds` holds the resource specs, from which the CRDs'
schemas are generated.
"""
