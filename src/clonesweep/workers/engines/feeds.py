"""What a worker builds from its data once and keeps for every trial: :class:`FeedCache`.

A worker loads its data once and runs trial after trial on it; converting the arrays to
tensors, batching the validation set and tracing an engine's graph are the same for every
trial, so they are built on the first trial that needs them and kept here. Each kind of
entry has its own typed accessor (no string or tuple keys made up by the engines): the
engines ask for what they need, with a function that builds it when it is missing.

No Keras import here: the entries' types are only named for the type checker.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from clonesweep.workers.engines.fusedgraph import StackedEngine
    from clonesweep.workers.engines.graphcover import Structure
    from clonesweep.workers.engines.graphengine import GraphEngine

__all__ = ["FeedCache"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def _kept(store: dict[K, T], key: K, build: Callable[[], T]) -> T:
    if key not in store:
        store[key] = build()
    return store[key]


class FeedCache:
    """Per worker, for all its trials: tensors of the data and traced engines.

    Owned by the worker's :class:`~clonesweep.workers.runner.TrialRunner`, which keeps the
    same data for its whole life; one trial at a time uses it (not thread-safe).
    """

    def __init__(self) -> None:
        self._train: dict[None, Any] = {}
        self._validation: dict[int, Any] = {}
        self._graph_arrays: dict[None, tuple[Any, ...]] = {}
        self._graph: dict[Structure, GraphEngine] = {}
        self._stacked: dict[Structure, StackedEngine] = {}

    def train_tensors(self, build: Callable[[], Any]) -> Any:
        """The training arrays as tensors (Keras's fit engine, TensorFlow)."""
        return _kept(self._train, None, build)

    def validation(self, batch: int, build: Callable[[], Any]) -> Any:
        """The validation set batched by ``batch`` (Keras's fit engine, TensorFlow)."""
        return _kept(self._validation, batch, build)

    def graph_arrays(self, build: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        """The data as float32 tensors for the traced engines."""
        return _kept(self._graph_arrays, None, build)

    def graph_engine(self, structure: Structure,
                     build: Callable[[], GraphEngine]) -> GraphEngine:
        """The traced graph of one layer structure (:mod:`~.graphfit`)."""
        return _kept(self._graph, structure, build)

    def stacked_engine(self, structure: Structure,
                       build: Callable[[], StackedEngine]) -> StackedEngine:
        """The stacked traced graph of one layer structure's fused groups (:mod:`~.fusedgraph`)."""
        return _kept(self._stacked, structure, build)

    @property
    def graph_engines(self) -> tuple[GraphEngine, ...]:
        """The traced graphs built so far, one per structure."""
        return tuple(self._graph.values())

    @property
    def stacked_engines(self) -> tuple[StackedEngine, ...]:
        """The stacked traced graphs built so far, one per structure."""
        return tuple(self._stacked.values())
