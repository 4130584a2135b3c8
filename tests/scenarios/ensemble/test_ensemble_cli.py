"""``clonesweep ensemble`` end to end: a sweep, then a fused ensemble of its best trial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clonesweep", *args], cwd=cwd,
                          env=dict(os.environ), capture_output=True, text=True, timeout=420)


@pytest.mark.integration
def test_cli_ensemble_from_best_fused(ray_cluster: str, sweep_file: Any, tmp_path: Path) -> None:
    path = sweep_file(trials=2, parallel=2, epochs=1, limit=300)
    done = run_cli("run", str(path), "--address", ray_cluster, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    best = json.loads(done.stdout.splitlines()[-1])["best"]  # the stream's summary line

    ens = run_cli("ensemble", str(path), "--members", "3", "--fused", "--from-best",
                  "--address", ray_cluster, "--json", cwd=tmp_path)
    assert ens.returncode == 0, ens.stderr[-3000:]
    payload = json.loads(ens.stdout)
    assert payload["members_asked"] == payload["members_held"] == 3
    assert payload["fused"] is True and payload["fused_note"] == ""
    assert all(m["fused"] for m in payload["members"])
    assert payload["source"].startswith(f"trial {best['number']} ")
    assert {k: payload["params"][k] for k in best["params"]} == best["params"]
    assert "ensemble holds 3 of 3 members" in ens.stderr and "[fused]" in ens.stderr
    folder = tmp_path / "runs" / "tiny" / "ensemble"
    assert (folder / "averaged.keras").exists() and (folder / "manifest.json").exists()
    assert len(list((folder / "members").glob("*.keras"))) == 3

    again = run_cli("ensemble", str(path), "--members", "1", "--address", ray_cluster,
                    cwd=tmp_path)
    assert again.returncode == 2 and "--study" in again.stderr
    assert "ray" not in again.stderr.lower()  # refused before Ray started

    plain = run_cli("ensemble", str(path), "--members", "2", "--study", "plain",
                    "--address", ray_cluster, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "ensemble holds 2 of 2 members" in plain.stdout and "[separate]" in plain.stdout
    assert "val_accuracy" in plain.stdout
    assert "oneDNN" not in plain.stderr and "absl" not in plain.stderr  # no TF banner
    assert (tmp_path / "runs" / "tiny" / "plain" / "ensemble.json").exists()
