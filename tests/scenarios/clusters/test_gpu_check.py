"""deploy/gpu-check.sh --cpu: the GPU check's smoke mode, under a simulated air gap.

The real check needs a GPU; this runs the same script with JAX on the CPU and tiny sizes, in
an environment where TensorFlow, Ray and scikit-learn cannot be imported (as on the air-gapped
GPU machine), so the worker path is shown to need none of them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests_support import REPO

AIR_GAP = '''
import importlib.abc, sys
class _AirGap(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "ray", "sklearn"):
            raise ModuleNotFoundError(f"No module named {name!r} (air gap)", name=name)
sys.meta_path.insert(0, _AirGap())
'''


@pytest.mark.slow
def test_gpu_check_smoke_mode_runs_without_tensorflow_or_ray(tmp_path: Path) -> None:
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (a base dependency)")
    (tmp_path / "airgap").mkdir()
    (tmp_path / "airgap" / "sitecustomize.py").write_text(AIR_GAP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    # The script's venv (--system-site-packages) sees the packages of the interpreter it is
    # made from: for a test run inside a virtual environment that is the base interpreter,
    # not the venv that holds keras, optuna and jax. On the GPU machine they are the
    # machine's own packages; here they are this interpreter's, so its package folders are
    # put on the path and the venv is made from this interpreter.
    packages = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path / "airgap"), *packages]),
               PYTHON=sys.executable, CLONESWEEP_WHEELS=str(tmp_path / "none"),
               CLONESWEEP_CHECK_VENV=str(tmp_path / "venv"), TMPDIR=str(tmp_path),
               # The script's own cap (290 s) fits a lent GPU machine's call; its three
               # cases in CPU smoke mode on a loaded 2-core machine take longer.
               CLONESWEEP_CHECK_TIMEOUT="540")
    done = subprocess.run([str(REPO / "deploy" / "gpu-check.sh"), "--cpu"], env=env,
                          capture_output=True, text=True, timeout=570, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["mode"] == "cpu"
    packed = summary["packed"]
    assert packed["platform"] == "cpu" and packed["complete"] == packed["trials"] == 2
    assert packed["trials_per_min"] > 0 and packed["workers"] == 2
    ensemble = summary["ensemble"]
    if "skipped" not in ensemble:
        assert ensemble["all_complete"] and ensemble["speedup"] > 0
        assert ensemble["members"] == 2 and "fused" in ensemble["fused_message"]
    for name in ("cnn_bn", "transformer"):  # only the JAX engine fuses these
        case = summary["fused_any"][name]
        assert case["all_complete"] and case["members"] == 2, case
        assert case["fused_engine"] == "fused-jax", case
    assert "trials/min" in done.stdout and "speedup" in done.stdout
    trials = summary["packed_trials"]  # sweep trials packed in one vmapped program
    assert trials["all_complete"] and trials["engines"] == ["packed"], trials
    assert trials["trials"] == 2 and trials["fallback"] is None, trials
