"""The tensor signature of a served model: names, dtypes and per-example dims.

One description feeds the ONNX export (input/output names, dynamic batch axis), the Triton
``config.pbtxt`` (``max_batch_size`` > 0 means dims exclude the batch axis) and the parity and
calibration feeds, so the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

DType = Literal["FP32", "INT64"]

_NUMPY: dict[DType, type[np.generic]] = {"FP32": np.float32, "INT64": np.int64}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor; ``dims`` exclude the leading batch axis and may use -1 for variable."""

    name: str
    dtype: DType
    dims: tuple[int, ...]

    @property
    def numpy_dtype(self) -> type[np.generic]:
        return _NUMPY[self.dtype]

    @property
    def triton_dtype(self) -> str:
        """The Triton model-config enum name (``TYPE_FP32``...)."""
        return f"TYPE_{self.dtype}"


@dataclass(frozen=True)
class Signature:
    """Inputs and outputs of one model, in the order the ONNX graph declares them."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def check_feed(self, feed: dict[str, npt.NDArray[np.generic]]) -> None:
        """Raise ValueError naming the first input that is missing or has the wrong dtype/dims."""
        for spec in self.inputs:
            if spec.name not in feed:
                raise ValueError(f"input {spec.name!r} is missing")
            array = feed[spec.name]
            if array.dtype != spec.numpy_dtype:
                raise ValueError(f"input {spec.name!r} has dtype {array.dtype}, want {spec.dtype}")
            got = tuple(array.shape[1:])
            if len(got) != len(spec.dims) or any(
                want not in (-1, have) for want, have in zip(spec.dims, got, strict=True)
            ):
                raise ValueError(f"input {spec.name!r} has dims {got}, want {spec.dims}")
