"""Reading deploy/'s files, shared by the tests of tests/scenarios/clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests_support import REPO

__all__ = ["DEPLOY", "container", "load", "probe_commands", "ray_containers"]

DEPLOY = REPO / "deploy"


def load(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of ``path``."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def container(group: dict[str, Any]) -> dict[str, Any]:
    """The one container of a head or worker group's pod template."""
    (only,) = group["template"]["spec"]["containers"]
    return dict(only)


def ray_containers() -> list[tuple[str, str, dict[str, Any]]]:
    """(file, "head" or "worker", container) for every Ray pod of the KubeRay manifests."""
    found = []
    for name in ("raycluster.yaml", "rayjob.yaml"):
        (doc,) = load(DEPLOY / "kuberay" / name)
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        found.append((name, "head", container(spec["headGroupSpec"])))
        found.extend((name, "worker", container(g)) for g in spec["workerGroupSpecs"])
    return found


def probe_commands() -> dict[str, str]:
    """The shell command of the manifests' probes, by pod kind (one per kind: every probe of
    that kind runs the same). tests/scenarios/clusters/test_image_install.py runs them for real."""
    commands: dict[str, set[str]] = {"head": set(), "worker": set()}
    for _, kind, box in ray_containers():
        for probe in ("readinessProbe", "livenessProbe"):
            argv = box[probe]["exec"]["command"]
            assert argv[:2] == ["sh", "-c"], argv
            commands[kind].add(argv[2])
    assert all(len(c) == 1 for c in commands.values()), commands
    return {kind: next(iter(c)) for kind, c in commands.items()}
