"""deploy/ checked offline: Ray's own schema, the manifests' image/entrypoint/resources, and
the image's install command against the README's."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import DEPLOY, probe_commands
from deploy_support import container as _container
from deploy_support import load as _load

from tests_support import REPO, missing

IMAGE_GPU = "registry.example.com/clonesweep:0.1.0-gpu"


def _version() -> str:
    match = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert match
    return match.group(1)


# -- the Ray cluster launcher config --------------------------------------------------------
def test_cluster_yaml_is_valid_for_ray() -> None:
    import jsonschema
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    (config,) = _load(DEPLOY / "cluster.yaml")
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json")
                        .read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))  # Ray's own checks on top of the schema


def test_cluster_yaml_runs_the_image_with_a_gpu_worker_type_and_token_auth() -> None:
    (config,) = _load(DEPLOY / "cluster.yaml")
    assert config["docker"]["image"] == IMAGE_GPU
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0  # the head runs the driver, not trials
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and all(t["max_workers"] >= 1 for t in gpu_types)
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert any("auth_token" in target for target in config["file_mounts"])
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "--num-cpus=0" in head_start
    assert config["provider"].get("use_internal_ips") is True
    assert any("clonesweep" in c for c in config["setup_commands"])


# -- KubeRay --------------------------------------------------------------------------------
def _head_and_gpu_group(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    head = spec["headGroupSpec"]
    (gpu,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
    return head, gpu


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_cluster_spec(name: str) -> None:
    (doc,) = _load(DEPLOY / "kuberay" / name)
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == "2.60.0" and spec["authOptions"] == {"mode": "token"}
    head, gpu = _head_and_gpu_group(spec)
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"  # no public port
    for group in (head, gpu):
        container = _container(group)
        assert container["image"] == IMAGE_GPU
        assert group["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    res = _container(gpu)["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 1 and res["requests"]["nvidia.com/gpu"] == 1
    assert gpu["maxReplicas"] >= gpu["minReplicas"]
    # The database password is mounted on the head only.
    assert any(v.get("secret", {}).get("secretName") == "clonesweep-postgres"
               for v in head["template"]["spec"]["volumes"])
    assert not [v for v in gpu["template"]["spec"].get("volumes", []) if "secret" in v]
    assert "password" not in json.dumps(_container(gpu)).lower()


def test_rayjob_entrypoint_runs_a_sweep_from_configs_on_postgres(tmp_path: Path) -> None:
    from clonesweep.cli.main import _parser
    from clonesweep.spec import load_sweep

    (doc,) = _load(DEPLOY / "kuberay" / "rayjob.yaml")
    assert doc["kind"] == "RayJob"
    entry = doc["spec"]["entrypoint"]
    cd, _, command = entry.partition("&&")
    assert cd.split() == ["cd", "/home/ray"]
    argv = shlex.split(command)
    assert argv[:3] == ["clonesweep", "run", "configs/digits_cnn_gpu.yaml"]
    args = _parser().parse_args(argv[1:])  # the flags exist and parse
    assert re.fullmatch(r"postgresql\+psycopg2://sweeper@[^:@/]+:5432/studies", args.storage)
    assert (REPO / args.file).is_file()
    spec = doc["spec"]["rayClusterSpec"]
    sweep = load_sweep(REPO / args.file).sweep
    # A GPU sweep: fractional GPUs per trial, checkpoints where every worker mounts them.
    assert 0 < sweep.resources.gpu < 1
    for group in spec["workerGroupSpecs"]:
        mounts = _container(group).get("volumeMounts", [])
        assert any(str(sweep.checkpoint_dir).startswith(m["mountPath"]) for m in mounts), group
    # The password file is where the head mounts the Secret.
    mounts = _container(spec["headGroupSpec"])["volumeMounts"]
    assert any(Path(args.storage_password_file).parent == Path(m["mountPath"]) for m in mounts)


def test_kuberay_probes_are_explicit_and_use_what_the_image_has() -> None:
    """KubeRay adds wget probes to containers that have none; ours set them explicitly, on
    the health endpoints KubeRay checks, with wget installed in the image."""
    commands = probe_commands()
    raylet = "http://localhost:52365/api/local_raylet_healthz"
    assert raylet in commands["head"] and raylet in commands["worker"]
    assert "http://localhost:8265/api/gcs_healthz" in commands["head"]
    assert all(c.startswith("wget ") for c in commands.values())
    apt = re.search(r"apt-get install ([^\n&]*)", (DEPLOY / "Dockerfile").read_text())
    assert apt and "wget" in apt.group(1).split()


def test_cluster_yaml_keeps_the_providers_head_setup() -> None:
    """Our head_setup_commands replace the AWS provider's defaults: every package those
    install (boto3, which the autoscaler needs on the head) is installed by ours too."""
    import ray

    defaults = yaml.safe_load((Path(ray.__file__).parent / "autoscaler" / "aws"
                               / "defaults.yaml").read_text())
    (config,) = _load(DEPLOY / "cluster.yaml")
    ours = " ".join(config["head_setup_commands"])
    for command in defaults["head_setup_commands"]:
        packages = re.findall(r"'([^']+)'", command)
        assert packages, command
        for package in packages:
            assert f"pip install --user '{package}'" in ours, package


def test_the_postgres_service_is_the_one_the_rayjob_uses() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d
            for d in _load(DEPLOY / "kuberay" / "postgres.yaml")}
    service = docs[("Service", "postgres")]
    assert service["spec"]["type"] == "ClusterIP"  # never exposed outside the cluster
    (job,) = _load(DEPLOY / "kuberay" / "rayjob.yaml")
    host = re.search(r"@([^:/]+):5432/", job["spec"]["entrypoint"])
    assert host and host.group(1) == "postgres.clonesweep.svc.cluster.local"
    db = docs[("StatefulSet", "postgres")]["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in db["containers"][0]["env"]}
    assert env["POSTGRES_USER"] == "sweeper" and env["POSTGRES_DB"] == "studies"
    assert "POSTGRES_PASSWORD" not in env  # a file from the Secret, not a variable
    (volume,) = [v for v in db["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "clonesweep-postgres"
    # Only Ray head pods (the driver) reach it: the label the policy admits is on the heads.
    policy = docs[("NetworkPolicy", "postgres-from-ray-heads")]["spec"]
    (rule,) = policy["ingress"]
    wanted = rule["from"][0]["podSelector"]["matchLabels"]
    for name in ("raycluster.yaml", "rayjob.yaml"):
        (doc,) = _load(DEPLOY / "kuberay" / name)
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        labels = spec["headGroupSpec"]["template"]["metadata"]["labels"]
        assert wanted.items() <= labels.items(), name


def test_every_volume_claim_the_manifests_mount_exists() -> None:
    claims = {d["metadata"]["name"]: d for d in _load(DEPLOY / "kuberay" / "volumes.yaml")}
    assert claims["clonesweep-checkpoints"]["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("raycluster.yaml", "rayjob.yaml"):
        text = json.dumps(_load(DEPLOY / "kuberay" / name))
        for claim in re.findall(r'"claimName": "([^"]+)"', text):
            assert claim in claims, (name, claim)


# Kubernetes' schemas for a release KubeRay 1.5 supports. KubeRay's own CRD schemas are in
# no PyPI package: the RayCluster/RayJob fields outside the pod templates (rayStartParams,
# authOptions, entrypoint, ...) are checked by the tests above only.
KUBERNETES = "1.32.0"


def test_the_kubernetes_objects_and_ray_pod_templates_match_kubernetes_schemas() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate (the test extra) is not installed here")
    for name in ("postgres.yaml", "volumes.yaml"):
        for doc in _load(DEPLOY / "kuberay" / name):
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    # Each Ray pod template, as the PodTemplate it is: probes, volumes, security context.
    for name in ("raycluster.yaml", "rayjob.yaml"):
        (doc,) = _load(DEPLOY / "kuberay" / name)
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        for group in (spec["headGroupSpec"], *spec["workerGroupSpecs"]):
            template = {"apiVersion": "v1", "kind": "PodTemplate",
                        "metadata": {"name": "ray"}, "template": group["template"]}
            kubernetes_validate.validate(template, KUBERNETES, strict=True)


# -- the image --------------------------------------------------------------------------------
def _install_commands() -> tuple[str, list[str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    (line,) = [ln for ln in text.splitlines() if re.search(r"pip install [^\n]*\.\[", ln)]
    command = re.search(r'(python3 -m pip install .*"\.\[\$\{EXTRAS\}\]")', line)
    assert command, line
    default = re.search(r"^ARG EXTRAS=(\S+)$", text, re.M)
    assert default
    normalized = command.group(1).replace(" --no-cache-dir", "")
    return text, [normalized.replace("${EXTRAS}", extras)
                  for extras in (default.group(1), "gpu,cluster,postgres")]


def test_the_image_installs_clonesweep_as_the_readme_says() -> None:
    text, commands = _install_commands()
    assert commands == ['python3 -m pip install ".[cluster,postgres]"',
                        'python3 -m pip install ".[gpu,cluster,postgres]"']
    for doc in (REPO / "README.md", DEPLOY / "README.md"):
        body = doc.read_text()
        for command in commands:
            assert f"`{command}`" in body, (doc.name, command)
    # Installed from a copy of the checkout, not mounted; not run as root.
    assert "COPY src ./src" in text and "COPY pyproject.toml" in text
    assert "VOLUME" not in text
    assert re.search(r"^USER ray$", text, re.M)
    assert f"clonesweep:{_version()}-gpu" in IMAGE_GPU
    readme = (DEPLOY / "README.md").read_text()
    assert f"-t {IMAGE_GPU} ." in readme.replace("\\\n    ", "")


def test_deploy_readme_covers_the_path_to_a_running_sweep() -> None:
    text = (DEPLOY / "README.md").read_text()
    for needed in ("ray up deploy/cluster.yaml", "kubectl -n clonesweep apply -f",
                   "ray job submit --address", "clonesweep run configs/digits_mlp.yaml",
                   "port-forward", "ssh -N -L", "RAY_AUTH_MODE=token", "RAY_USE_TLS",
                   "--storage-password-file", "CLONESWEEP_STORAGE_PASSWORD",
                   "deploy/gpu-check.sh", "pip download keras optuna"):
        assert needed in text, needed
    assert os.access(DEPLOY / "gpu-check.sh", os.X_OK)


def test_every_run_step_of_the_image_is_valid_shell() -> None:
    """No Docker engine here: at least every RUN step must parse as /bin/sh."""
    import subprocess

    text = re.sub(r"^\s*#.*\n", "", (DEPLOY / "Dockerfile").read_text(), flags=re.M)
    steps = re.findall(r"^RUN (.*?)(?<!\\)\n", text, flags=re.M | re.S)
    assert len(steps) >= 2
    for step in steps:
        body = step.replace("\\\n", " ")
        done = subprocess.run(["sh", "-n", "-c", body], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, (body[:200], done.stderr)


def test_the_gpu_check_script_is_valid_bash() -> None:
    import subprocess

    done = subprocess.run(["bash", "-n", str(DEPLOY / "gpu-check.sh")], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_the_guides_extend_the_image_example_builds_on_the_image() -> None:
    """No Docker engine here: the example's base is the image the guide builds, its RUN steps
    are valid shell, and it hands the container back to the image's non-root user."""
    import subprocess

    (example,) = re.findall(r"```dockerfile\n(.*?)```", (DEPLOY / "README.md").read_text(),
                            re.S)
    lines = [ln for ln in example.splitlines() if ln.strip()]
    assert lines[0] == f"FROM {IMAGE_GPU}"
    assert lines[-1] == "USER ray"
    for line in lines:
        if line.startswith("RUN "):
            done = subprocess.run(["sh", "-n", "-c", line[4:]], capture_output=True, text=True,
                                  timeout=30)
            assert done.returncode == 0, (line, done.stderr)
