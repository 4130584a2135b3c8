"""JAX's persistent compilation cache on JAX workers (backend_setup.jax_compilation_cache).

Each case runs in a fresh process: JAX reads its cache settings once, at its first compile.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from clonesweep.workers.backend_setup import host_kind

KIND = host_kind()  # the subfolder of this machine's CPU kind

# A small Keras model fitted for one step on JAX: the programs a worker compiles.
FIT = """
import os, sys
from clonesweep.workers.backend_setup import import_keras, jax_compilation_cache
{before}
keras = import_keras()
import jax, numpy as np
print("DIR", jax.config.jax_compilation_cache_dir)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.fit(np.ones((8, 4), "float32"), np.zeros(8, "int32"), epochs=1, verbose=0)
"""


def _run(tmp_path: Path, env: dict[str, str], before: str = "") -> str:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("JAX_", "CLONESWEEP_JAX", "XDG_CACHE"))}
    done = subprocess.run([sys.executable, "-c", FIT.format(before=before)],
                          env={**clean, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                               "XDG_CACHE_HOME": str(tmp_path / "xdg"), **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_a_jax_worker_keeps_its_programs_and_a_second_process_reuses_them(
        tmp_path: Path) -> None:
    given = tmp_path / "cache"
    folder = given / KIND
    out = _run(tmp_path, {"CLONESWEEP_JAX_CACHE": str(given)})
    assert f"DIR {folder}" in out
    first = _entries(folder)
    assert first, "nothing was written to the cache"
    # The same programs in a new process: all found in the cache, nothing new written.
    _run(tmp_path, {"CLONESWEEP_JAX_CACHE": str(given)})
    assert _entries(folder) == first


def test_the_default_folder_is_under_the_user_cache(tmp_path: Path) -> None:
    out = _run(tmp_path, {})
    folder = tmp_path / "xdg" / "clonesweep" / "jax" / KIND
    assert f"DIR {folder}" in out
    assert _entries(folder)


@pytest.mark.parametrize("word", ["off", "OFF", "0"])
def test_off_turns_it_off(tmp_path: Path, word: str) -> None:
    out = _run(tmp_path, {"CLONESWEEP_JAX_CACHE": word})
    assert "DIR None" in out
    # Other packages (matplotlib's font list) may use the user cache; ours must not be there.
    assert not (tmp_path / "xdg" / "clonesweep").exists()


def test_jax_s_own_setting_wins(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    out = _run(tmp_path, {"JAX_COMPILATION_CACHE_DIR": str(mine),
                          "CLONESWEEP_JAX_CACHE": str(tmp_path / "ours")})
    assert f"DIR {mine}" in out
    assert not (tmp_path / "ours").exists()


def test_a_process_that_imported_jax_first_gets_it_through_jax_config(tmp_path: Path) -> None:
    folder = tmp_path / "late" / KIND
    out = _run(tmp_path, {"CLONESWEEP_JAX_CACHE": str(folder.parent)},
               before="import jax\nassert 'JAX_COMPILATION_CACHE_DIR' not in os.environ\n"
                      "jax_compilation_cache()")
    assert f"DIR {folder}" in out
    assert _entries(folder)


X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 {extra}\n\n" \
      "processor\t: 1\nflags\t\t: fpu sse2 avx2 {extra}\n"


def test_hosts_of_other_cpu_features_get_their_own_folders() -> None:
    # Nodes sharing a home folder: the same flags (in any order) share, others do not.
    plain = host_kind(X86.format(extra=""))
    assert plain == host_kind("flags : avx2 fpu sse2\n")
    assert host_kind(X86.format(extra="avx512f avx512bw")) != plain
    assert host_kind("Features\t: fp asimd evtstrm aes\n") != plain
    assert plain.startswith(f"{platform.machine()}-") and "/" not in plain
    # Without an argument: this machine's, read from /proc/cpuinfo.
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        assert host_kind() == host_kind(cpuinfo.read_text(errors="replace"))
