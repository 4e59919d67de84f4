"""The model factory: interaction data -> torch -> ONNX -> INT8 -> Triton model repository."""

__version__ = "0.1.0"
