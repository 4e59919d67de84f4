"""The runtime repository: the canonical repository as the bundled tritonserver can serve it.

The canonical ``model_repo/`` is what the stock Triton image serves natively (platform
``onnxruntime_onnx``). The tritonserver inside the nvidia-pytriton wheel has only the python
backend, so for local runs each ONNX model gets a twin here: the same config with
``backend: "python"`` (inputs, outputs, dims, max_batch_size, dynamic batching, instance group
and parameters unchanged) and, per version, ``model.onnx`` linked to the canonical file beside
a copy of :mod:`inference.triton.onnx_model` as ``model.py``. The canonical repository is
never modified.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import text_format

from contract.model_config import MODEL_FILENAME, parse_config
from contract.repository import RepositoryReader
from inference.errors import InferenceError

SHIM_SOURCE = Path(__file__).with_name("onnx_model.py")
ONNX_PLATFORM = "onnxruntime_onnx"


def runtime_config_text(canonical_config: Path, *, batching: bool = True) -> str:
    """The canonical config rewritten for the python backend (everything else kept).

    ``batching=False`` drops the dynamic batcher: for measuring what it is worth.
    """
    config = parse_config(canonical_config)
    if config.platform != ONNX_PLATFORM and config.backend != "onnxruntime":
        raise InferenceError(
            f"{canonical_config}: platform {config.platform or config.backend!r} is not "
            f"{ONNX_PLATFORM!r}; only ONNX models can be served through the local shim"
        )
    config.platform = ""
    config.backend = "python"
    config.default_model_filename = ""
    if not batching:
        config.ClearField("dynamic_batching")
    text: str = text_format.MessageToString(config)
    return text


def sync_model(
    canonical: RepositoryReader, target: Path, model: str, *, batching: bool = True
) -> list[int]:
    """Make ``target/<model>`` mirror the canonical model's committed versions; return them.

    Idempotent: new versions are added, versions gone from the canonical repository (pruned)
    are removed, the config is rewritten atomically. Call it before asking Triton to (re)load.
    """
    versions = canonical.versions(model)
    if not versions:
        raise InferenceError(f"no committed version in {canonical.root}", model=model)
    model_dir = target / model
    model_dir.mkdir(parents=True, exist_ok=True)
    for version in versions:
        version_dir = model_dir / str(version)
        if (version_dir / "model.py").exists():
            continue
        staging = model_dir / f".{version}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        source = canonical.version_dir(model, version) / MODEL_FILENAME
        (staging / MODEL_FILENAME).symlink_to(source.resolve())
        shutil.copyfile(SHIM_SOURCE, staging / "model.py")
        os.replace(staging, version_dir)
    for stale in model_dir.iterdir():
        if stale.is_dir() and stale.name.isdigit() and int(stale.name) not in versions:
            shutil.rmtree(stale)
    config = model_dir / "config.pbtxt"
    tmp = config.with_suffix(".pbtxt.tmp")
    tmp.write_text(runtime_config_text(canonical.root / model / "config.pbtxt", batching=batching))
    os.replace(tmp, config)
    return versions


def build_runtime_repository(
    canonical_root: Path,
    target: Path,
    models: Sequence[str] | None = None,
    *,
    batching: bool = True,
) -> list[str]:
    """Mirror ``models`` (default: all) of the canonical repository into ``target``.

    Only ``target`` is written: the canonical repository may be a read-only volume.
    """
    canonical = RepositoryReader(canonical_root)
    names = list(models) if models is not None else canonical.models()
    missing = sorted(set(names) - set(canonical.models()))
    if missing:
        raise InferenceError(f"not in {canonical.root}: {', '.join(missing)}")
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        sync_model(canonical, target, name, batching=batching)
    return names
