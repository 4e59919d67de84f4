"""Read-only access to the canonical model repository: what serving code opens, and the
format's file names.

In a cluster the repository is a read-only volume and the pods run with a read-only root
filesystem, so the processes that only read it (Triton's launcher, the graph replicas, the
``cascade models`` listing) must never write, not even a lock file: opening it for reading
touches nothing. Staging, the commit journal and crash recovery belong to the writer,
:class:`training.repository.ModelRepository`, which extends this reader.

A reader sees each model as the writer has published it. A build whose commit was
interrupted after its journal shows up whole the next time a writer opens the repository;
until then a reader may see some of its models and not others, as Triton would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from contract.errors import RepositoryError
from contract.model_config import MODEL_NAME, parse_config, validate_model_name

__all__ = [
    "CONFIG_FILENAME",
    "MANIFEST_FILENAME",
    "RepositoryReader",
    "served_versions",
]

CONFIG_FILENAME: Final = "config.pbtxt"
MANIFEST_FILENAME: Final = "manifest.json"

# Triton loads integer-named version directories; we only ever write canonical positive ones.
_VERSION_NAME = re.compile(r"[1-9][0-9]*")


def served_versions(config: Any, versions: Sequence[int]) -> set[int]:
    """The versions Triton serves among ``versions`` under the config's ``version_policy``.

    An unset policy is Triton's default, ``latest { num_versions: 1 }``.
    """
    ordered = sorted(versions)
    policy = config.version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(ordered)
    if kind == "specific":
        return set(policy.specific.versions) & set(ordered)
    count = policy.latest.num_versions if kind == "latest" else 1
    return set(ordered[-count:]) if count > 0 else set()


def _version_names(model_dir: Path) -> list[int]:
    """The committed version numbers under ``model_dir``, ascending; [] if it is absent."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_dir.iterdir() if _VERSION_NAME.fullmatch(p.name) and p.is_dir()
    )


class RepositoryReader:
    """Reads one Triton model repository, also the model registry; never writes to disk.

    The root must exist: a reader that created it would serve an empty typo.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise RepositoryError(f"no model repository at {self.root}")

    def models(self) -> list[str]:
        """Names of the models in the repository (directories with a config.pbtxt)."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if MODEL_NAME.fullmatch(p.name) and (p / CONFIG_FILENAME).is_file()
        )

    def versions(self, model: str) -> list[int]:
        """Committed versions of ``model``, ascending; [] for an unknown model."""
        return _version_names(self.root / validate_model_name(model))

    def config(self, model: str) -> Any:
        """The parsed ``config.pbtxt`` of ``model``."""
        return parse_config(self.root / validate_model_name(model) / CONFIG_FILENAME)

    def version_dir(self, model: str, version: int) -> Path:
        """The directory of a committed version; RepositoryError if it does not exist."""
        path = self.root / validate_model_name(model) / str(version)
        if version < 1 or not path.is_dir():
            raise RepositoryError(f"{model}: no committed version {version}")
        return path

    def manifest(self, model: str, version: int) -> dict[str, Any]:
        """The registry record (``manifest.json``) of one committed version."""
        path = self.version_dir(model, version) / MANIFEST_FILENAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RepositoryError(f"{path}: cannot read manifest: {exc}") from exc
        if not isinstance(data, dict):
            raise RepositoryError(f"{path}: manifest is not a JSON object")
        return data

    def list_registry(self) -> list[dict[str, Any]]:
        """One row per model/version: its manifest plus ``served`` (per the version_policy).

        A version without a readable manifest still gets a row, with an ``error`` field, so a
        hand-edited repository shows up rather than hiding.
        """
        rows: list[dict[str, Any]] = []
        for model in self.models():
            versions = self.versions(model)
            served = self._served(model, versions)
            for version in versions:
                row: dict[str, Any] = {"model": model, "version": version}
                try:
                    row.update(self.manifest(model, version))
                except RepositoryError as exc:
                    row["error"] = str(exc)
                row["served"] = version in served
                rows.append(row)
        return rows

    def _served(self, model: str, versions: Sequence[int]) -> set[int]:
        try:
            return served_versions(self.config(model), versions)
        except RepositoryError:
            return set()
