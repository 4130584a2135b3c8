"""Keep the libraries' start-up banners off the user's terminal (``--verbose`` shows them).

Two sources, each silenced the narrowest way that works:

* TensorFlow writes its oneDNN / absl lines from C++ straight to file descriptor 2 while it
  is imported, before its log level (``TF_CPP_MIN_LOG_LEVEL``) applies, so no setting hides
  them. :func:`import_keras_quietly` imports Keras with descriptor 2 pointed at a temporary
  file and replays what was written there only when the import fails.
* Optuna logs each trial at INFO: the progress views say the same, so WARNING and above.
* Ray logs through Python's logging; its token-authentication notice on every local start
  comes from the ``ray._private.authentication`` logger, raised to ERROR here. The name is
  Ray's module path (a private one): if Ray moves it the notice merely shows again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["import_keras_quietly", "native_stderr_muted", "quiet_logs"]

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


def import_keras_quietly() -> None:
    """Import Keras (and its backend) now, without the backend's native start-up lines."""
    with native_stderr_muted():
        import keras  # noqa: F401


def quiet_logs() -> None:
    """Lower the libraries' chatter for a command-line run (Optuna's INFO, Ray's notices)."""
    for name in _RAY_NOTICE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Optuna's INFO line per trial: lowered through the orchestrator, which owns Optuna.
    from clonesweep.orchestrator.logs import quiet_optuna

    quiet_optuna()
