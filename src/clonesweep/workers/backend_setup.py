"""The worker process's Keras backend: set up before Keras is imported, and described.

Nothing here runs at import time; :class:`~clonesweep.workers.runner.TrialRunner` calls
:func:`configure_backend` first thing, then imports Keras.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from clonesweep.workers.versions import runtime_versions

__all__ = ["configure_backend", "environment", "import_keras", "import_tensorflow"]


def configure_backend(cpus: float, gpu_memory_fraction: float | None = None) -> None:
    """Keep packed trials from grabbing a whole GPU, and size TensorFlow's thread pools.

    Runs before Keras is imported. Each backend only touches its own library: JAX must see
    its allocator settings in the environment before it starts; PyTorch allocates on demand
    and only takes the cap; TensorFlow grows its GPU memory on demand.
    """
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "jax":
        # JAX preallocates 75% of the GPU by default: four packed workers could not start.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if gpu_memory_fraction is not None:
            os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{gpu_memory_fraction:.3f}")
        return
    if backend == "torch":
        if gpu_memory_fraction is not None:
            import torch

            if torch.cuda.is_available():
                torch.cuda.set_per_process_memory_fraction(gpu_memory_fraction)
        return
    if backend != "tensorflow":
        return
    tf = import_tensorflow()

    threads = max(1, int(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        for gpu in tf.config.list_physical_devices("GPU"):
            # Several fractional-GPU trials share a device: don't let one grab it all.
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # TensorFlow already initialized in this process (in-process backend).


def _unused(backend: str) -> list[str]:
    """Packages that TensorFlow or Keras import whenever they are installed and that a
    worker never uses: JAX, which TensorFlow loads for TFLite's JAX converter alone (not on
    the JAX backend, of course), and IPython, which Keras loads to show a weights-file
    editor in notebooks. Together ~1 s of CPU in every worker process (measured on a 2-core
    machine: ``import keras`` 5.3-6.2 s -> 4.8-4.9 s wall without JAX alone)."""
    names = ["IPython"] + (["jax"] if backend == "tensorflow" else [])
    return [name for name in names if name not in sys.modules]


@contextlib.contextmanager
def _hidden(names: list[str]) -> Iterator[None]:
    """``import name`` fails inside the block (an entry of None in ``sys.modules``; both
    libraries expect an ImportError there) and works as usual after it."""
    for name in names:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in names:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def import_tensorflow() -> Any:
    """Import TensorFlow without the packages it would load for nothing (:func:`_unused`)."""
    with _hidden([] if "tensorflow" in sys.modules else _unused("tensorflow")):
        import tensorflow as tf
    return tf


def import_keras() -> Any:
    """Import Keras (and its backend) without the packages it would load for nothing."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    with _hidden([] if "keras" in sys.modules else _unused(backend)):
        import keras
    return keras


def environment() -> dict[str, str]:
    """Versions this worker runs with: what a reproduction has to match.

    The versions the driver checks at worker start (:func:`runtime_versions`), plus numpy and
    the Keras backend's own library.
    """
    import keras

    backend = keras.backend.backend()
    env = dict(runtime_versions(backend))
    env["numpy"] = np.__version__
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module is not None:
        env[module] = str(getattr(importlib.import_module(module), "__version__", "?"))
    return env
