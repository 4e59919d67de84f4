"""What one user tower version carries besides its model: the catalog, the feature tables it
was trained on, and the item embeddings (and FAISS index) its user embeddings are searched in.

They belong to that version. A canary of ``user_tower`` is a new model with new item
embeddings, possibly over a new catalog: searching its user embeddings in the old version's
index, or reading features by the old version's ids, serves wrong items while every metric
looks healthy. So a graph keeps these per user tower version, loaded once per version:
experiment variants that pin the same version share the same objects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from contract.errors import RepositoryError
from contract.graph_config import CacheConfig
from contract.names import USER_TOWER
from inference.errors import InferenceError
from inference.graph.catalog import Catalog
from inference.graph.features import CachedFeatureStore, EmbeddedFeatureStore
from inference.graph.item_item import ItemItemScores
from inference.graph.stages import ItemSearch, Retriever
from inference.runtime import ModelRuntime

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class TowerArtifacts:
    """One user tower version's catalog, (cached) feature store and retriever, whose search
    runs over that version's item embeddings and calls that version of the model."""

    version: int
    catalog: Catalog
    features: CachedFeatureStore
    retriever: Retriever

    @classmethod
    def load(
        cls,
        directory: Path,
        version: int,
        runtime: ModelRuntime,
        cache: CacheConfig,
        on_lookup: Callable[[bool], None] | None = None,
        item_item: Callable[[int], ItemItemScores | None] | None = None,
    ) -> TowerArtifacts:
        """Read the version directory ``directory`` of ``user_tower`` ``version``;
        ``item_item`` (combiner version -> weights) feeds retrieval's item-item source."""
        catalog = Catalog.load(directory)
        features = CachedFeatureStore(EmbeddedFeatureStore(catalog), cache, on_lookup=on_lookup)
        retriever = Retriever(
            runtime,
            ItemSearch(directory),
            {USER_TOWER: version},
            catalog=catalog,
            item_item=item_item,
        )
        return cls(version, catalog, features, retriever)


class VersionCache(Generic[T]):
    """What belongs to one model version, each loaded on first use and then shared;
    thread-safe.

    Loading runs under a lock so two threads asking for a new version load it once; a
    version already loaded is answered without the lock (the request path asks often). A
    version whose files cannot be read raises ``InferenceError`` naming ``model``, the
    version and ``what`` was being loaded.
    """

    def __init__(self, load: Callable[[int], T], *, model: str, what: str) -> None:
        self._load = load
        self._model = model
        self._what = what
        self._loaded: dict[int, T] = {}
        self._lock = threading.Lock()

    def get(self, version: int) -> T:
        if version in self._loaded:
            return self._loaded[version]
        with self._lock:
            if version not in self._loaded:
                try:
                    self._loaded[version] = self._load(version)
                except (OSError, ValueError, RepositoryError) as exc:
                    raise InferenceError(
                        f"version {version}: cannot load {self._what}: {exc}", model=self._model
                    ) from exc
            return self._loaded[version]

    @property
    def versions(self) -> list[int]:
        """The versions loaded so far, ascending."""
        return sorted(self._loaded)


class TowerArtifactCache(VersionCache[TowerArtifacts]):
    """Per user tower version, its :class:`TowerArtifacts`."""

    def __init__(self, load: Callable[[int], TowerArtifacts]) -> None:
        super().__init__(load, model=USER_TOWER, what="its catalog, features and item index")

    def catalog(self, version: int) -> Catalog:
        """The catalog of ``version``: what the ranker reads item features from."""
        return self.get(version).catalog
