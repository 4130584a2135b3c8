"""Keep the libraries' start-up banners off the user's terminal (``--verbose`` shows them).

Two sources, each silenced the narrowest way that works:

* TensorFlow writes its oneDNN / absl lines from C++ straight to file descriptor 2 while it
  is imported, before its log level (``TF_CPP_MIN_LOG_LEVEL``) applies, so no setting hides
  them. :func:`import_keras_quietly` imports Keras with descriptor 2 pointed at a temporary
  file and replays what was written there only when the import fails. The same lines come
  again when TensorFlow loads its second native library (at the first fit) and when it
  probes for CUDA; :func:`native_lines_filtered` drops lines of that native log format from
  descriptor 2 for the length of a block (the Python API's ``run`` and ``ensemble``) and
  passes every other line through. ``TF_CPP_MIN_LOG_LEVEL`` is set too (for the Ray workers
  and older TensorFlow), although TensorFlow 2.21 writes these lines whatever it says.
* Optuna logs each trial at INFO: the progress views say the same, so WARNING and above.
* Ray logs through Python's logging; its token-authentication notice on every local start
  comes from the ``ray._private.authentication`` logger, raised to ERROR here. The name is
  Ray's module path (a private one): if Ray moves it the notice merely shows again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["NATIVE_LINE", "import_keras_quietly", "native_lines_filtered",
           "native_stderr_muted", "quiet_logs"]

_RAY_NOTICE_LOGGERS = ("ray._private.authentication",)


@contextlib.contextmanager
def native_stderr_muted() -> Iterator[None]:
    """Send what is written to descriptor 2 inside the block to a temporary file; replay it
    on the real stderr if the block raises (an import error must not lose its message)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


#: A line of TensorFlow's native log (absl / glog format: ``I0000 00:00:1796517845.281354
#: 26375 port.cc:153] oneDNN custom operations are on...``), absl's notice that precedes the
#: first of them, and the second line of the CPU-instructions notice.
NATIVE_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.-]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow with)")


@contextlib.contextmanager
def native_lines_filtered() -> Iterator[None]:
    """Drop TensorFlow's native log lines (:data:`NATIVE_LINE`) written to descriptor 2
    inside the block; every other line reaches the real stderr, in order, as it comes.

    Descriptor 2 points at a pipe that a thread reads line by line. A process started inside
    the block inherits the pipe; what it writes after the block still passes the filter (the
    thread ends when the last writer closes the pipe).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe, os.fdopen(saved, "wb", buffering=0) as out:
            for line in pipe:
                if not NATIVE_LINE.match(line):
                    out.write(line)

    real = os.dup(saved)  # descriptor 2 comes back to the terminal, not to the pipe
    thread = threading.Thread(target=pump, name="clonesweep-native-lines", daemon=True)
    os.dup2(write_end, 2)
    os.close(write_end)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)
        os.close(real)
        thread.join(timeout=5.0)  # a process started inside may still hold the pipe


def import_keras_quietly() -> None:
    """Import Keras (and its backend) now, without the backend's native start-up lines and
    without the packages the command-line driver never uses (the workers' way:
    :func:`clonesweep.workers.backend_setup.import_keras`)."""
    from clonesweep.workers.backend_setup import import_keras

    with native_stderr_muted():
        import_keras(own_process=True, jax_cache=False)


def quiet_logs() -> None:
    """Lower the libraries' chatter for a command-line run (Optuna's INFO, Ray's notices)."""
    for name in _RAY_NOTICE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Optuna's INFO line per trial: lowered through the orchestrator, which owns Optuna.
    from clonesweep.orchestrator.logs import quiet_optuna

    quiet_optuna()
