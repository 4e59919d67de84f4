"""The canonical Triton model repository, which is also the model registry.

Layout (what Triton reads)::

    <root>/<model>/config.pbtxt
    <root>/<model>/<version>/model.onnx
    <root>/<model>/<version>/manifest.json      # the registry record of that build

One build writes several models under one version number, and a reader (Triton, the CLI, the
next build) must never see half of it. So writes go to a staging area *outside* the root
(Triton treats every top-level directory of the root as a model) but on the same filesystem,
so publishing is a handful of ``rename`` calls:

    <root.parent>/.<root.name>-staging/
        repo.lock                    # serialises commits and recovery (flock)
        txn-<v>-<id>.lock            # held (flock) for the whole life of a transaction
        txn-<v>-<id>/models/<model>/config.pbtxt
        txn-<v>-<id>/models/<model>/<v>/model.onnx ...
        txn-<v>-<id>/COMMIT.json     # the journal: present <=> the build is committed
        txn-<v>-<id>/pruned/         # old versions moved out of the root before deletion

A transaction is committed the moment its fsynced journal exists. Opening the repository
for writing rolls every journaled transaction forward (the renames are idempotent) and deletes
every unjournaled one whose owner is gone (its lock is free), so a build killed at any point
leaves the repository as it was or with the whole new build.

Only the writer (:class:`ModelRepository`, the build) creates the staging area or recovers:
serving processes open the repository with :class:`training.repository_reader.RepositoryReader`,
which never writes, because in a cluster the repository is a read-only volume.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from contract.errors import RepositoryError
from contract.model_config import MODEL_FILENAME, MODEL_NAME, parse_config_text, validate_model_name
from contract.repository import (
    CONFIG_FILENAME,
    MANIFEST_FILENAME,
    RepositoryReader,
    served_versions,
)
from training.digest import sha256_file
from training.model_config import ModelConfigSpec, check_config_matches_onnx, render_config

__all__ = [
    "CONFIG_FILENAME",
    "MANIFEST_FILENAME",
    "ModelRepository",
    "RepositoryReader",
    "Transaction",
    "plan_prune",
    "served_versions",
]

log = logging.getLogger(__name__)

JOURNAL_FILENAME: Final = "COMMIT.json"
# Keys the repository writes into every manifest; a caller may not set them.
RESERVED_MANIFEST_KEYS: Final = frozenset({"model", "version", "committed_at", "model_sha256"})

_TXN_PREFIX: Final = "txn-"
_REPO_LOCK: Final = "repo.lock"
_JOURNAL_FORMAT: Final = 1


def plan_prune(versions: Sequence[int], served: set[int], keep_versions: int) -> list[int]:
    """Versions to delete: all but the newest ``keep_versions`` and those being served."""
    if keep_versions < 1:
        raise RepositoryError("keep_versions must be >= 1")
    ordered = sorted(versions)
    keep = set(ordered[-keep_versions:]) | served
    return [v for v in ordered if v not in keep]


# --------------------------------------------------------------------------------------------
# Filesystem helpers
# --------------------------------------------------------------------------------------------


def _fsync(path: Path) -> None:
    """fsync a file or directory (a directory fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root``, children before parents."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for filename in filenames:
            _fsync(Path(dirpath, filename))
        _fsync(Path(dirpath))


def _write_durable(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (the file only; callers fsync the directory)."""
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _move(src: Path, dst: Path) -> None:
    """Atomically rename ``src`` to ``dst`` (same filesystem). A seam for crash tests."""
    os.rename(src, dst)


def _dump_json(data: Mapping[str, Any], what: str) -> bytes:
    """Strict JSON (no NaN/Infinity) so every reader of the registry can parse it."""
    try:
        text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RepositoryError(f"{what} is not JSON-serialisable: {exc}") from exc
    return (text + "\n").encode("utf-8")


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (blocking); the kernel drops it if we die."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _try_lock(path: Path) -> int | None:
    """Open and exclusively flock ``path`` without blocking; the fd, or None if held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _lock_new_txn(staging_root: Path, version: int) -> tuple[str, int]:
    """Create and lock a fresh ``<txn>.lock``; return the txn id and the held fd.

    Recovery unlinks orphaned lock files it can lock; checking that the path still names the
    inode we locked closes the race where it does so between our open and our flock.
    """
    while True:
        txn_id = f"{_TXN_PREFIX}{version}-{uuid.uuid4().hex}"
        path = staging_root / f"{txn_id}.lock"
        fd = _try_lock(path)
        if fd is None:
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return txn_id, fd
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Journal: publish (commit and roll-forward share this code, so they cannot diverge)
# --------------------------------------------------------------------------------------------


def _publish_model(root: Path, staged: Path, model: str, version: int) -> None:
    """Move one staged model into the root; idempotent, so a crash can be rolled forward.

    A new model's whole directory (config + version) appears with one rename. For an existing
    model the version directory is renamed in, then the config is replaced atomically.
    """
    if not staged.exists():
        return  # published before a crash
    dest = root / model
    if not dest.exists():
        _move(staged, dest)
        _fsync(root)
        return
    staged_version = staged / str(version)
    if staged_version.exists():
        if (dest / str(version)).exists():
            raise RepositoryError(f"{model}: version {version} appeared during commit")
        _move(staged_version, dest / str(version))
    staged_config = staged / CONFIG_FILENAME
    if staged_config.exists():
        os.replace(staged_config, dest / CONFIG_FILENAME)
    _fsync(dest)


def _read_journal(txn_dir: Path) -> dict[str, Any] | None:
    path = txn_dir / JOURNAL_FILENAME
    if not path.exists():
        return None
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
        version = journal["version"]
        models = journal["models"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RepositoryError(f"{path}: unreadable commit journal: {exc}") from exc
    if not isinstance(version, int) or not isinstance(models, list):
        raise RepositoryError(f"{path}: malformed commit journal")
    return {"version": version, "models": [validate_model_name(str(m)) for m in models]}


# --------------------------------------------------------------------------------------------
# Repository and transaction
# --------------------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ModelRepository(RepositoryReader):
    """Writer of one Triton model repository (and, as every writer must, its reader).

    Opening it creates the root and the staging area and runs crash recovery (see the module
    docstring): it is for the build, never for serving, which opens a
    :class:`~training.repository_reader.RepositoryReader`. ``keep_versions`` is how many
    versions per model retention keeps after each commit, on top of whatever the model's
    ``version_policy`` serves. ``staging_root`` defaults to ``<root.parent>/.<root.name>-staging``
    and must be on the root's filesystem (a root that is itself a mount point, e.g. a volume,
    needs a staging root inside that mount but outside the root).
    """

    def __init__(
        self,
        root: Path,
        *,
        keep_versions: int = 3,
        clock: Callable[[], datetime] = _utc_now,
        staging_root: Path | None = None,
    ) -> None:
        if keep_versions < 1:
            raise RepositoryError("keep_versions must be >= 1")
        root = Path(root).resolve()
        self.staging_root = (
            Path(staging_root).resolve()
            if staging_root is not None
            else root.parent / f".{root.name}-staging"
        )
        if self.staging_root == root or root in self.staging_root.parents:
            raise RepositoryError(
                f"staging area {self.staging_root} must be outside {root}: "
                "Triton treats every directory there as a model"
            )
        self.keep_versions = keep_versions
        self._clock = clock
        try:
            root.mkdir(parents=True, exist_ok=True)
            self.staging_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RepositoryError(f"cannot create {root} or its staging area: {exc}") from exc
        super().__init__(root)
        if os.stat(self.root).st_dev != os.stat(self.staging_root).st_dev:
            raise RepositoryError(
                f"staging area {self.staging_root} is not on the filesystem of {self.root}; "
                "renames would not be atomic (pass staging_root=)"
            )
        self.recover()

    def next_version(self) -> int:
        """One more than the highest version of any model: one number names a whole build."""
        names = (p.name for p in self.root.iterdir() if MODEL_NAME.fullmatch(p.name))
        return 1 + max((v for m in names for v in self.versions(m)), default=0)

    # ---- writing ---------------------------------------------------------------------------

    def begin(self, version: int | None = None) -> Transaction:
        """Start a build that writes models under ``version`` (default: :meth:`next_version`).

        Use as a context manager; leaving it without :meth:`Transaction.commit` discards the
        staging area. Two concurrent builds may pick the same number; the later commit fails.
        """
        chosen = self.next_version() if version is None else version
        if chosen < 1:
            raise RepositoryError(f"version must be a positive integer, got {chosen}")
        return Transaction(self, chosen)

    def recover(self) -> None:
        """Roll journaled transactions forward and delete abandoned ones.

        Transactions whose lock is held belong to a live process and are left alone. Journaled
        ones are replayed in version order so the newest build's config wins.
        """
        with _flock(self.staging_root / _REPO_LOCK):
            held: dict[str, int] = {}  # txn id -> its lock fd, closed if we stop early
            try:
                for txn_dir in self._txn_dirs():
                    fd = _try_lock(self._lock_path(txn_dir.name))
                    if fd is not None:
                        held[txn_dir.name] = fd
                versions: dict[str, int] = {}
                for txn_id in sorted(held):
                    journal = _read_journal(self.staging_root / txn_id)
                    if journal is None:
                        log.info("discarding abandoned build staging %s", txn_id)
                        self._remove_txn(txn_id, held.pop(txn_id))
                    else:
                        versions[txn_id] = journal["version"]
                for txn_id in sorted(versions, key=lambda t: (versions[t], t)):
                    log.warning("completing interrupted commit %s", txn_id)
                    self._roll_forward(txn_id)
                    self._remove_txn(txn_id, held.pop(txn_id))
            finally:
                for fd in held.values():
                    os.close(fd)
            self._remove_orphan_locks()

    def _roll_forward(self, txn_id: str) -> None:
        txn_dir = self.staging_root / txn_id
        journal = _read_journal(txn_dir)
        if journal is None:  # pragma: no cover - we hold its lock, so it cannot vanish
            raise RepositoryError(f"{txn_dir}: journal disappeared during recovery")
        self._apply(txn_dir, journal["version"], journal["models"])

    def _txn_dirs(self) -> list[Path]:
        return [
            p for p in self.staging_root.iterdir() if p.name.startswith(_TXN_PREFIX) and p.is_dir()
        ]

    def _lock_path(self, txn_id: str) -> Path:
        return self.staging_root / f"{txn_id}.lock"

    def _remove_orphan_locks(self) -> None:
        for path in self.staging_root.glob(f"{_TXN_PREFIX}*.lock"):
            if (self.staging_root / path.name.removesuffix(".lock")).exists():
                continue
            fd = _try_lock(path)
            if fd is not None:
                path.unlink(missing_ok=True)
                os.close(fd)

    def _remove_txn(self, txn_id: str, lock_fd: int) -> None:
        """Delete a transaction's staging dir and lock; the journal goes first, durably."""
        txn_dir = self.staging_root / txn_id
        (txn_dir / JOURNAL_FILENAME).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            _fsync(txn_dir)
        shutil.rmtree(txn_dir, ignore_errors=True)
        self._lock_path(txn_id).unlink(missing_ok=True)
        os.close(lock_fd)

    def _apply(self, txn_dir: Path, version: int, models: Sequence[str]) -> None:
        """Publish every model of a journaled transaction, then apply retention to them."""
        for model in models:
            _publish_model(self.root, txn_dir / "models" / model, model, version)
        for model in models:
            self._prune(model, txn_dir / "pruned")

    def _prune(self, model: str, trash: Path) -> None:
        """Move versions beyond retention out of the root (atomic each), then delete them."""
        versions = self.versions(model)
        try:
            served = served_versions(self.config(model), versions)
        except RepositoryError:
            log.warning("%s: unreadable config.pbtxt, not pruning", model)
            return
        doomed = plan_prune(versions, served, self.keep_versions)
        if not doomed:
            return
        target = trash / model
        target.mkdir(parents=True, exist_ok=True)
        for version in doomed:
            _move(self.root / model / str(version), target / str(version))
        _fsync(self.root / model)
        shutil.rmtree(target, ignore_errors=True)


class Transaction:
    """One build's staged models, published together by :meth:`commit` or not at all."""

    def __init__(self, repo: ModelRepository, version: int) -> None:
        self.repo = repo
        self.version = version
        self._specs: dict[str, ModelConfigSpec] = {}
        self._manifests: dict[str, dict[str, Any]] = {}
        self._state = "open"  # open -> journaled -> done | discarded
        self.txn_id, self._lock_fd = _lock_new_txn(repo.staging_root, version)
        self.staging_dir = repo.staging_root / self.txn_id
        try:
            (self.staging_dir / "models").mkdir(parents=True)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def models(self) -> list[str]:
        """Names of the models staged so far."""
        return sorted(self._specs)

    def model_dir(self, spec: ModelConfigSpec) -> Path:
        """The staging directory for ``<model>/<version>/``: write model.onnx (and extras) here.

        Calling it again with the same spec returns the same directory; a different spec for
        the same model is an error, as is a version that the model already has.
        """
        self._require_open()
        known = self._specs.get(spec.name)
        if known is not None and known != spec:
            raise RepositoryError(f"{spec.name}: staged twice with different specs")
        if self.version in self.repo.versions(spec.name):
            raise RepositoryError(f"{spec.name}: version {self.version} already exists")
        path = self._staged_version_dir(spec.name)
        path.mkdir(parents=True, exist_ok=True)
        self._specs[spec.name] = spec
        return path

    def model_dir_of(self, model: str) -> Path:
        """The staging directory of a model already staged in this transaction."""
        self._require_open()
        if model not in self._specs:
            raise RepositoryError(f"{model}: not staged in this transaction")
        return self._staged_version_dir(model)

    def set_manifest(self, model: str, manifest: Mapping[str, Any]) -> None:
        """Record the registry entry for ``model`` (data sha256, code version, metrics...).

        The repository adds ``model``, ``version``, ``committed_at`` and ``model_sha256``;
        the caller may not set those keys.
        """
        self._require_open()
        if model not in self._specs:
            raise RepositoryError(f"{model}: call model_dir() before set_manifest()")
        clash = sorted(RESERVED_MANIFEST_KEYS & set(manifest))
        if clash:
            raise RepositoryError(f"{model}: manifest keys {clash} are set by the repository")
        _dump_json(manifest, f"{model} manifest")  # fail now, not at commit
        self._manifests[model] = dict(manifest)

    def commit(self) -> None:
        """Validate every staged model, then publish them all atomically.

        Validation (model.onnx present, config matches the graph) happens before anything is
        visible; a failure discards the staging area and raises RepositoryError. Once the
        journal is written the build is committed: if publishing is then interrupted, it is
        completed the next time the repository is opened.
        """
        self._require_open()
        try:
            if not self._specs:
                raise RepositoryError("nothing staged: call model_dir() before commit()")
            self._prepare()
        except BaseException:
            self.close()
            raise
        with _flock(self.repo.staging_root / _REPO_LOCK):
            try:
                self._check_versions_free()
                self._write_journal()
            except BaseException:
                if self._state == "open":
                    self.close()
                raise
            try:
                self.repo._apply(self.staging_dir, self.version, self.models)
            except BaseException as exc:
                self._release()  # keep the journaled staging for recovery
                if isinstance(exc, Exception):
                    raise RepositoryError(
                        f"commit of version {self.version} was interrupted after its journal; "
                        "it will be completed the next time the repository is opened"
                    ) from exc
                raise
            self.repo._remove_txn(self.txn_id, self._take_lock())
            self._state = "done"

    def close(self) -> None:
        """Discard the staging area unless committed; idempotent. ``__exit__`` calls this.

        A transaction whose journal exists is never discarded: it is left for recovery.
        """
        if self._state == "open":
            self.repo._remove_txn(self.txn_id, self._take_lock())
            self._state = "discarded"
        elif self._state == "journaled":
            self._release()

    # ---- internals -------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._state != "open":
            raise RepositoryError(f"transaction {self.txn_id} is {self._state}")

    def _staged_model_dir(self, model: str) -> Path:
        return self.staging_dir / "models" / model

    def _staged_version_dir(self, model: str) -> Path:
        return self._staged_model_dir(model) / str(self.version)

    def _take_lock(self) -> int:
        fd, self._lock_fd = self._lock_fd, -1
        return fd

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._take_lock())

    def _prepare(self) -> None:
        """Validate each staged model and write its config.pbtxt and manifest.json, durably."""
        committed_at = self._committed_at()
        for model, spec in self._specs.items():
            version_dir = self._staged_version_dir(model)
            onnx_path = version_dir / MODEL_FILENAME
            if not onnx_path.is_file():
                raise RepositoryError(f"{model}: {MODEL_FILENAME} was not written to {version_dir}")
            if (version_dir / MANIFEST_FILENAME).exists():
                raise RepositoryError(f"{model}: write the manifest with set_manifest()")
            text = render_config(spec)
            check_config_matches_onnx(parse_config_text(text, source=model), onnx_path)
            manifest = {
                **self._manifests.get(model, {}),
                "model": model,
                "version": self.version,
                "committed_at": committed_at,
                "model_sha256": sha256_file(onnx_path),
            }
            _write_durable(version_dir / MANIFEST_FILENAME, _dump_json(manifest, "manifest"))
            _write_durable(self._staged_model_dir(model) / CONFIG_FILENAME, text.encode())
        _fsync_tree(self.staging_dir)

    def _committed_at(self) -> str:
        now = self.repo._clock()
        if now.tzinfo is None:
            raise RepositoryError("the repository clock must return timezone-aware datetimes")
        return now.astimezone(UTC).isoformat()

    def _check_versions_free(self) -> None:
        for model in self._specs:
            if self.version in self.repo.versions(model):
                raise RepositoryError(f"{model}: version {self.version} already exists")

    def _write_journal(self) -> None:
        """Write COMMIT.json via temp file + rename + dir fsync: from here on, committed."""
        body = {"format": _JOURNAL_FORMAT, "version": self.version, "models": self.models}
        tmp = self.staging_dir / f"{JOURNAL_FILENAME}.tmp"
        _write_durable(tmp, _dump_json(body, "journal"))
        os.rename(tmp, self.staging_dir / JOURNAL_FILENAME)
        self._state = "journaled"
        _fsync(self.staging_dir)
