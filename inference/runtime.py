"""The interface every model runtime offers the graph: Triton over gRPC or HTTP, or the
in-process onnxruntime. The graph depends on this protocol only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from contract.signature import Signature

Tensors = dict[str, npt.NDArray[np.generic]]


class ModelRuntime(Protocol):
    """Runs named models on named tensors. Implementations raise ``InferenceError`` kinds."""

    #: What serves the models, for metrics: "triton-grpc", "triton-http", or "onnxruntime"
    #: (in-process).
    kind: str

    def infer(
        self,
        model: str,
        inputs: Mapping[str, npt.NDArray[np.generic]],
        *,
        outputs: Sequence[str] | None = None,
        version: int | None = None,
        timeout_s: float | None = None,
    ) -> Tensors:
        """All (or the named) outputs of one call; ``version`` None means the latest served."""
        ...

    def check_models(self, required: Mapping[str, Signature]) -> None:
        """Fail fast (``ModelNotFound`` / ``BadRequest``) naming every model that is missing,
        not ready, or whose inputs/outputs differ from the signature the graph expects."""
        ...

    def close(self) -> None: ...
