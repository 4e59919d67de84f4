"""The package's root error and its kinds.

Every failure the factory reports carries machine-readable fields, so the CLI can print one
clear line and tests can assert on the field rather than on message text.
"""

from __future__ import annotations

from pathlib import Path

from contract.errors import CascadeError


class FactoryError(CascadeError):
    """Root of every error the model factory raises on purpose."""

    status = 400  # what the factory refuses is its input's to fix


class DataError(FactoryError):
    """Input data is missing, corrupt or malformed; names the file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.reason = message
        parts = [p for p in (self.path, None if line is None else f"line {line}") if p]
        if field:
            parts.append(f"field {field!r}")
        super().__init__(f"{', '.join(parts)}: {message}" if parts else message)


class ChecksumError(DataError):
    """A downloaded or cached artifact does not have the expected sha256."""


class ExportError(FactoryError):
    """ONNX export or its parity check against torch failed."""


class QualityError(FactoryError):
    """The models built lose to a baseline the build was told they must beat."""
