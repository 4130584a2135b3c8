"""The worker process's Keras backend: set up before Keras is imported, and described.

Nothing here runs at import time; :class:`~clonesweep.workers.runner.TrialRunner` calls
:func:`configure_backend` first thing, then imports Keras.
"""

from __future__ import annotations

import importlib
import os

import numpy as np

from clonesweep.workers.versions import runtime_versions

__all__ = ["configure_backend", "environment"]


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
    import tensorflow as tf

    threads = max(1, int(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        for gpu in tf.config.list_physical_devices("GPU"):
            # Several fractional-GPU trials share a device: don't let one grab it all.
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # TensorFlow already initialized in this process (in-process backend).


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
