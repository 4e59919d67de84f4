"""What the factory (``training``), the data plane (``inference``) and the operator
(``operators``) share, and nothing else: the model repository's format and its read-only
reader, the model and artifact names, tensor signatures, the feature tables' layout, and the
root error. Torch-free and side-effect-free; none of the three sides imports another."""
