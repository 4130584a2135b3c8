"""The worker process's Keras backend: set up before Keras is imported, and described.

Nothing here runs at import time; :class:`~clonesweep.workers.runner.TrialRunner` calls
:func:`configure_backend` first thing, then imports Keras.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import platform
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from clonesweep.workers.versions import runtime_versions

__all__ = ["JAX_CACHE_ENV", "configure_backend", "environment", "host_kind", "import_keras",
           "import_tensorflow", "import_without", "jax_compilation_cache"]

#: Where JAX workers keep compiled programs between processes: a folder, or ``off``.
JAX_CACHE_ENV = "CLONESWEEP_JAX_CACHE"


def configure_backend(cpus: float, gpu_memory_fraction: float | None = None) -> None:
    """Keep packed trials from grabbing a whole GPU, and size TensorFlow's thread pools.

    Runs before Keras is imported. Each backend only touches its own library: JAX must see
    its allocator settings in the environment before it starts; PyTorch allocates on demand
    and only takes the cap; TensorFlow grows its GPU memory on demand.
    """
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "jax":
        jax_compilation_cache()
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


def jax_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache for this process; its folder, or None.

    A worker on JAX compiles each new model's steps with XLA (seconds on a CPU); with the
    cache on (every program kept, whatever its compile time), a later model of an
    already-seen structure (the next trial of the same shapes, the next fused group, a
    rerun of the sweep) loads the compiled programs instead. A one-off probe (one process,
    loaded machine, not a bench) gave 14-18 s for a first fused group of 8 CNN+BN members and
    1.4-1.7 s for the next with the cache, 6.5-11 s without; end to end, bench/fused_any.py's
    ``--cache warm`` runs are in bench/README.md. That a loaded program computes what a fresh
    compile would is JAX's contract, not tested here with ``==``.

    The folder is ``$CLONESWEEP_JAX_CACHE`` (``off`` turns the cache off), else
    ``$XDG_CACHE_HOME/clonesweep/jax`` (``~/.cache/clonesweep/jax``), in a subfolder per kind
    of host CPU (:func:`host_kind`), capped at 1 GiB (JAX evicts the least recently used).
    A cluster's nodes often share one home folder: XLA compiles CPU code for the host's
    instruction set, and its CPU loader refuses, with an error line, a program compiled for
    features the host lacks (the message is quoted in openxla/xla issue 44565; not reproduced
    here, which has one kind of CPU), so nodes of different CPUs would overwrite and refuse
    each other's entries; each kind keeps its own. JAX's own ``JAX_COMPILATION_CACHE_DIR`` and
    ``JAX_PERSISTENT_CACHE_*`` variables, when set, win. Set before JAX is imported (the
    environment), or through ``jax.config`` in a process that already imported it.
    """
    where = os.environ.get(JAX_CACHE_ENV, "").strip()
    if where.lower() in ("off", "0", "false", "no", "none"):
        return None
    if not where:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache")
        where = os.path.join(base, "clonesweep", "jax")
    where = os.path.join(where, host_kind())
    settings: dict[str, Any] = {
        "jax_compilation_cache_dir": where,
        "jax_persistent_cache_min_compile_time_secs": 0,
        "jax_compilation_cache_max_size": 1 << 30,
    }
    jax = sys.modules.get("jax")
    for name, value in settings.items():
        if name.upper() in os.environ:
            continue  # the user's own JAX setting
        if jax is None:
            os.environ[name.upper()] = str(value)
        else:
            jax.config.update(name, value)
    return os.environ.get("JAX_COMPILATION_CACHE_DIR", where) if jax is None else \
        str(jax.config.jax_compilation_cache_dir)


def host_kind(cpuinfo: str | None = None) -> str:
    """The host's machine type and a digest of its CPU's feature flags (``x86_64-3f9a0c1e2b``):
    hosts that can run each other's compiled CPU code get the same name.

    Args:
        cpuinfo: The text of ``/proc/cpuinfo`` (read when None; elsewhere than Linux, the
            processor's name stands for the flags).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    # x86 lists "flags", ARM "Features"; the first CPU's line stands for all of them.
    fields = (line.partition(":") for line in cpuinfo.splitlines())
    flags = next((value for key, sep, value in fields
                  if sep and key.strip() in ("flags", "Features")), platform.processor())
    digest = hashlib.sha1(" ".join(sorted(flags.split())).encode()).hexdigest()[:10]
    return f"{platform.machine() or 'cpu'}-{digest}"


def _unused(backend: str, own_process: bool = False) -> list[str]:
    """Packages that TensorFlow or Keras import whenever they are installed and that a
    worker never uses: JAX, which TensorFlow loads for TFLite's JAX converter alone (not on
    the JAX backend, of course), and IPython, which Keras loads to show a weights-file
    editor in notebooks. Together ~1 s of CPU in every worker process (measured on a 2-core
    machine: ``import keras`` 5.3-6.2 s -> 4.8-4.9 s wall without JAX alone).

    With ``own_process`` (a Ray worker, the command-line driver: processes that run no
    user code but the sweep's), also matplotlib and scikit-learn, which Keras imports for
    its image-gallery plots and its scikit-learn wrappers (each ``try: import ... except
    ImportError``): ~1.2 s more of CPU per process (bench/README.md, "Start-up"). Keras
    keeps ``None`` for them after that, so the process that imported Keras this way cannot
    use those two helpers; a user's own process (a notebook, the Python API) keeps them.
    pandas stays: Keras's array adapters use it to take DataFrames."""
    names = ["IPython"] + (["jax"] if backend == "tensorflow" else [])
    if own_process:
        names += ["matplotlib", "sklearn"]
    return names


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


def import_without(module: str, names: list[str]) -> Any:
    """``importlib.import_module(module)`` with the packages ``names`` hidden while it runs
    (see :func:`_hidden`); ``names`` already imported are left alone. A release of the
    library that imports one of them without expecting an ImportError is imported again
    with nothing hidden: slower, never broken."""
    names = [name for name in names if name not in sys.modules]
    if module in sys.modules or not names:
        return importlib.import_module(module)
    try:
        with _hidden(names):
            return importlib.import_module(module)
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in names:
            raise
        return importlib.import_module(module)  # what failed is gone from sys.modules


def import_tensorflow() -> Any:
    """Import TensorFlow without the packages it would load for nothing (:func:`_unused`)."""
    return import_without("tensorflow", _unused("tensorflow"))


def import_keras(own_process: bool = False, jax_cache: bool = True) -> Any:
    """Import Keras (and its backend) without the packages it would load for nothing
    (:func:`_unused`; ``own_process``: a process of the sweep's own, not the user's); on
    JAX, with the persistent compilation cache set up first (:func:`jax_compilation_cache`)
    unless ``jax_cache`` is False (the driver, which trains nothing)."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "jax" and jax_cache:
        jax_compilation_cache()
    return import_without("keras", _unused(backend, own_process))


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
