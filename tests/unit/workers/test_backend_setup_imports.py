"""Keras imported without the packages a sweep's own processes never use
(backend_setup.import_keras, import_without; cli.quiet.import_keras_quietly).

Each case runs in a fresh process: what a process imported cannot be undone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# A tiny model fitted for one step: Keras works after the lean import.
_FIT = """
import numpy as np
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.fit(np.ones((8, 4), "float32"), np.zeros(8, "int32"), epochs=1, verbose=0)
"""

_REPORT = """
import json, os, sys
seen = {name: name in sys.modules for name in ("jax", "matplotlib", "sklearn", "IPython")}
import importlib
later = {name: importlib.import_module(name).__name__ == name
         for name in ("matplotlib", "sklearn") if importlib.util.find_spec(name) is not None}
print(json.dumps({"seen": seen, "later": later,
                  "jax_cache_env": "JAX_COMPILATION_CACHE_DIR" in os.environ}))
"""


def _python(code: str, backend: str = "tensorflow", cwd: Path | None = None) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "JAX_PLATFORMS": "cpu"}
    env = {k: v for k, v in env.items() if not k.startswith("JAX_COMPILATION")}
    if cwd is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(cwd), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("how", [
    "from clonesweep.workers.backend_setup import import_keras\n"
    "keras = import_keras(own_process=True)",
    "from clonesweep.cli.quiet import import_keras_quietly\n"
    "import_keras_quietly()\nimport keras"])
def test_a_sweep_s_own_process_leaves_out_what_it_never_uses(how: str) -> None:
    out = _python(how + _FIT + _REPORT)
    # Keras on TensorFlow imports all four when they are installed (a plain `import keras`).
    assert out["seen"] == {"jax": False, "matplotlib": False, "sklearn": False,
                           "IPython": False}
    # Importable after it, where installed (matplotlib is optional: the bench extra).
    installed = [n for n in ("matplotlib", "sklearn") if importlib.util.find_spec(n)]
    assert out["later"] == dict.fromkeys(installed, True)
    assert "sklearn" in installed  # a dependency: the check above is not empty


def test_the_driver_s_import_on_jax_leaves_the_compilation_cache_to_the_workers() -> None:
    out = _python("from clonesweep.cli.quiet import import_keras_quietly\n"
                  "import_keras_quietly()\nimport keras" + _REPORT, backend="jax")
    assert out["jax_cache_env"] is False
    assert out["seen"]["sklearn"] is False


def test_a_user_s_process_keeps_keras_s_scikit_learn_wrappers() -> None:
    # The Python API and notebooks import Keras in the user's process: nothing of what
    # Keras offers is taken away there.
    out = _python("from clonesweep.workers.backend_setup import import_keras\n"
                  "keras = import_keras()" + _FIT + """
import json
def build(X, y):
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    net.compile(optimizer="adam", loss="categorical_crossentropy")
    return net
clf = keras.wrappers.SKLearnClassifier(model=build)
clf.fit(np.ones((8, 4), "float32"), np.arange(8) % 3)
print(json.dumps({"fitted": True}))
""")
    assert out == {"fitted": True}


def test_a_library_that_needs_a_hidden_package_is_imported_anyway(tmp_path: Path) -> None:
    # A release that imports one of the hidden packages without expecting an ImportError
    # is imported again with nothing hidden; one that expects it does without.
    (tmp_path / "needy.py").write_text("import colorsys\nVALUE = colorsys.rgb_to_hsv(1, 0, 0)\n")
    (tmp_path / "guarded.py").write_text(
        "try:\n    import colorsys\nexcept ImportError:\n    colorsys = None\n")
    out = _python("""
import json, sys
from clonesweep.workers.backend_setup import import_without
guarded = import_without("guarded", ["colorsys"])
first = {"guarded_has_it": guarded.colorsys is not None, "loaded": "colorsys" in sys.modules}
needy = import_without("needy", ["colorsys"])
print(json.dumps({**first, "needy": list(needy.VALUE), "after": "colorsys" in sys.modules}))
""", cwd=tmp_path)
    assert out == {"guarded_has_it": False, "loaded": False, "needy": [0.0, 1.0, 1.0],
                   "after": True}
