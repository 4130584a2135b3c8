"""Imported by every worker process of an embedded local Ray as the process starts (Ray's
``preload_python_modules``, set by :class:`~clonesweep.orchestrator.backends.ray.backend.RayBackend`
when it starts Ray itself): Keras and its backend load while the driver is still starting
Ray and opening the study, instead of when the worker actor is created. A process started
with ``CLONESWEEP_NO_PRELOAD`` set (the pruning broker, which never trains) skips it.

Importing Keras here fixes nothing that :func:`~clonesweep.workers.backend_setup.
configure_backend` sets later: TensorFlow's thread pools are sized when the runtime first
starts, not at import.
"""

from __future__ import annotations

import os

if not os.environ.get("CLONESWEEP_NO_PRELOAD"):
    from clonesweep.workers.backend_setup import import_keras

    import_keras(own_process=True)  # without the packages a worker never uses
