"""Reading a model's Triton ``config.pbtxt``, and the names that may appear in a repository.

Parsed with Triton's own model-config protobuf (shipped in tritonclient), so a config Cascade
reads is one Triton can parse. Building and checking a config against its ONNX graph is the
factory's (``training.model_config``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from contract.errors import RepositoryError

PLATFORM: Final = "onnxruntime_onnx"
MODEL_FILENAME: Final = "model.onnx"

MODEL_NAME = re.compile(r"[A-Za-z0-9_-]+")


def validate_model_name(name: str) -> str:
    """Return ``name`` if it is a safe model directory name, else raise RepositoryError.

    The name becomes a path component under the root and Triton's model name, so anything that
    could escape the root or need quoting (``/``, ``..``, spaces, dots) is refused.
    """
    if not MODEL_NAME.fullmatch(name):
        raise RepositoryError(f"model name {name!r} must match ^[a-zA-Z0-9_-]+$")
    return name


def parse_config_text(text: str, *, source: str = "<text>") -> Any:
    """Parse ``config.pbtxt`` text into a ``ModelConfig``; RepositoryError names ``source``."""
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise RepositoryError(f"{source}: not a valid Triton model config: {exc}") from exc
    return config


def parse_config(path: Path) -> Any:
    """Read and parse one ``config.pbtxt`` into a ``model_config_pb2.ModelConfig``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RepositoryError(f"{path}: cannot read model config: {exc}") from exc
    return parse_config_text(text, source=str(path))
