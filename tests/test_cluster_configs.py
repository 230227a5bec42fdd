# SPDX-License-Identifier: Apache-2.0
"""The configuration files of cluster/: Ray launcher configs, KubeRay manifests, and the sweep
definitions they run (the scripts: tests/test_cluster_scripts.py).

Nothing here needs a cloud account or a Kubernetes cluster:
- launcher YAMLs are validated against the JSON schema inside the installed Ray package and
  then by Ray's own ``prepare_config`` / ``validate_config`` (what ``ray up`` runs first);
- KubeRay manifests are checked for what the operator needs (and for field-name typos, which
  the API server would drop with only a warning).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHERS = ["aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"]
CLOUD_LAUNCHERS = ["aws-gpu.yaml", "gcp-gpu.yaml"]
KUBERAY = ["kuberay-rayjob.yaml", "kuberay-raycluster.yaml"]
# The sweep every cluster target runs by default (written by the sweeps layer).
PAPER_SPEC = "sweeps/paper_table3_loss.yaml"
TORCH_PIN, TORCHVISION_PIN = "2.14.1", "0.29.1"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def ray_version() -> str:
    import ray

    return ray.__version__


# ------------------------------------------------------------------------------ launchers
@pytest.fixture(scope="module")
def ray_schema() -> dict:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    assert path.is_file(), f"the installed Ray ships no {path}"
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_matches_the_schema_of_the_installed_ray(name: str, ray_schema: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")  # a dependency of ray itself
    config = load(name)
    jsonschema.validate(config, ray_schema)

    # What `ray up` does before it touches a cloud: fill in the provider's defaults, then
    # validate again (head type among the node types, min_workers within max_workers, the
    # local provider's rules).
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["cluster_name"].startswith("haloae-sweeps")


@pytest.mark.parametrize("name", CLOUD_LAUNCHERS)
def test_cloud_launcher_has_a_cpu_head_and_gpu_workers(name: str) -> None:
    config = load(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU"), "the head must run no trials"
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in head_start and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start

    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    gpu_types = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no GPU worker type"
    assert any(v.get("max_workers", 0) > 0 for v in gpu_types.values()), "every GPU worker type is disabled"
    for key, node_type in gpu_types.items():
        assert 0 <= node_type.get("min_workers", 0) <= node_type.get("max_workers", 0) <= config["max_workers"], key
        node_config = node_type["node_config"]
        if config["provider"]["type"] == "aws":
            assert re.match(r"^(g|p)\d", node_config["InstanceType"]), f"{key}: not a GPU instance type"
            assert "IamInstanceProfile" in node_config, f"{key}: workers need credentials for the S3 storage"
        else:
            machine = node_config["machineType"]
            assert machine.startswith(("a2-", "a3-", "g2-")) or node_config.get("guestAccelerators"), (
                f"{key}: {machine} has no GPU (add guestAccelerators)"
            )
            assert node_config["scheduling"]["onHostMaintenance"] == "TERMINATE", f"{key}: GPU VMs cannot live-migrate"


def test_onprem_launcher_lists_its_machines() -> None:
    config = load("onprem.yaml")
    provider = config["provider"]
    assert provider["type"] == "local"
    assert provider["head_ip"] and provider["worker_ips"]
    assert provider["head_ip"] not in provider["worker_ips"]
    assert "available_node_types" not in config, "the local provider rejects node types"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_syncs_the_repo_installs_it_and_exports_the_cluster_env(name: str) -> None:
    config = load(name)
    mounts = config["file_mounts"]
    assert mounts.get("~/haloae-sweeps") == ".", "the repository is synced to ~/haloae-sweeps"
    assert mounts.get("~/sweeps") == "./sweeps", "`ray submit` resolves sweeps/<name>.yaml from the head's home"
    assert mounts.get("~/haloae.env", "").endswith("cluster.env")
    assert ".gitignore" in config.get("rsync_filter", []), "the local .venv would be synced"

    # Ray runs setup_commands + head_setup_commands on the head, + worker_setup_commands elsewhere.
    for role in ("head_setup_commands", "worker_setup_commands"):
        commands = config["setup_commands"] + config[role]
        assert sum("~/haloae-sweeps/cluster/setup-node.sh" in c for c in commands) == 1, f"{role}: install once"
    for role in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[role])
        assert ". ~/haloae.env" in start, f"{role}: Ray's processes (the trials) must get the cluster env"
        assert "RAY_USAGE_STATS_ENABLED=0" in start


def test_node_setup_pins_the_same_versions_as_this_environment() -> None:
    setup = (CLUSTER / "setup-node.sh").read_text()
    dockerfile = (CLUSTER / "docker/Dockerfile").read_text()
    assert f"TORCH_VERSION={TORCH_PIN}" in setup and f"TORCHVISION_VERSION={TORCHVISION_PIN}" in setup
    assert f"torch=={TORCH_PIN} torchvision=={TORCHVISION_PIN}" in dockerfile
    # `ray up`, `ray job submit` and the KubeRay submitter need the same Ray on both ends.
    version = ray_version()
    assert f"RAY_VERSION={version}" in setup, f"setup-node.sh must pin ray=={version} (installed here)"
    assert f"rayproject/ray:{version}-py311" in dockerfile and f'"ray[default,tune]=={version}"' in dockerfile
    assert "-e " in setup and "-e ." in dockerfile, "the project installs in editable mode"


def test_cluster_env_example_defines_what_the_nodes_need() -> None:
    example = (CLUSTER / "cluster.env.example").read_text()
    keys = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", example, flags=re.M))
    assert keys["MLFLOW_TRACKING_URI"].startswith("http")
    assert keys["RAY_USAGE_STATS_ENABLED"] == "0"
    assert re.match(r"^(s3|gs)://", keys["HALOAE_STORAGE"]), "a multi-node sweep needs shared storage"
    assert "MLFLOW_TRACKING_PASSWORD" in keys


# ------------------------------------------------------------------------------ KubeRay
# Field names of KubeRay's ray.io/v1 API (v1.0-v1.7). The API server drops unknown fields of a
# custom resource with only a warning, so a typo (`backOffLimit`) would silently do nothing.
RAYJOB_SPEC_FIELDS = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
    "clusterSelector", "submitterConfig", "managedBy", "deletionPolicy", "deletionStrategy",
    "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources",
    "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished", "shutdownAfterJobFinishes",
    "suspend",
}  # fmt: skip
RAYCLUSTER_SPEC_FIELDS = {
    "suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations", "enableInTreeAutoscaling",
    "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion", "workerGroupSpecs", "upgradeStrategy",
    "authOptions",
}  # fmt: skip
HEAD_GROUP_FIELDS = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP_FIELDS = {
    "suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
    "rayStartParams", "template", "scaleStrategy", "numOfHosts",
}  # fmt: skip
AUTOSCALER_FIELDS = {
    "resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds", "upscalingMode",
    "env", "envFrom", "volumeMounts", "version",
}  # fmt: skip
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _only_known(where: str, mapping: dict, known: set[str]) -> None:
    unknown = sorted(set(mapping) - known)
    assert not unknown, f"{where}: unknown field(s) {unknown} (KubeRay would ignore them)"


def _containers(template: dict, where: str) -> list[dict]:
    containers = template["spec"]["containers"]
    assert containers, f"{where}: no containers"
    for c in containers:
        assert c.get("name") and c.get("image"), f"{where}: a container needs a name and an image"
    return containers


def _env(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_manifest_has_what_the_operator_needs(name: str) -> None:
    docs = [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]
    assert len(docs) == 1, f"{name}: one resource per file"
    doc = docs[0]
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] in ("RayJob", "RayCluster")
    assert DNS1123.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63

    spec = _cluster_spec(doc)
    _only_known("rayClusterSpec", spec, RAYCLUSTER_SPEC_FIELDS)
    _only_known("autoscalerOptions", spec.get("autoscalerOptions", {}), AUTOSCALER_FIELDS)
    assert spec["rayVersion"] == ray_version(), "rayVersion must match the image's (the project's) Ray"

    head = spec["headGroupSpec"]
    _only_known("headGroupSpec", head, HEAD_GROUP_FIELDS)
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "rayStartParams values are strings"
    assert head["rayStartParams"].get("num-cpus") == "0", "the head must run no trials"
    (head_container,) = _containers(head["template"], "headGroupSpec")

    groups = spec["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups)
    for group in groups:
        where = f"workerGroupSpecs[{group.get('groupName')}]"
        _only_known(where, group, WORKER_GROUP_FIELDS)
        assert DNS1123.match(group["groupName"])
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], where
        assert isinstance(group["rayStartParams"], dict)
        (worker,) = _containers(group["template"], where)
        limits = worker["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1, f"{where}: no nvidia.com/gpu limit"
        requests = worker["resources"].get("requests", {})
        if "nvidia.com/gpu" in requests:
            assert requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"], "extended resources: requests == limits"
        assert worker["image"] == head_container["image"], "head and workers must run the same image"
        # The trials run on the workers: they log to MLflow and write the S3 storage themselves.
        for container, role in ((head_container, "head"), (worker, "worker")):
            env = _env(container)
            assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http"), role
            assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0", role
            for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD"):
                assert "secretKeyRef" in env[secret]["valueFrom"], f"{role}: {secret} must come from a Secret"
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/dev/shm" in mounts, f"{role}: Ray's object store needs a larger /dev/shm"


def test_rayjob_retries_resume_the_sweep_from_s3() -> None:
    doc = load("kuberay-rayjob.yaml")
    assert doc["kind"] == "RayJob"
    spec = doc["spec"]
    _only_known("spec", spec, RAYJOB_SPEC_FIELDS)
    assert spec["backoffLimit"] >= 1, "a failed attempt must be retried"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    entry = spec["entrypoint"].split()
    assert entry[:3] == ["haloae", "sweep", PAPER_SPEC], spec["entrypoint"]
    assert "--resume" in entry, "every retry must continue the sweep, not refuse to overwrite it"
    assert entry[entry.index("--address") + 1] == "auto", "without --address auto the driver starts its own Ray"
    sets = [entry[i + 1] for i, word in enumerate(entry) if word == "--set"]
    assert any(re.match(r"^storage=s3://", s) for s in sets), "retries run on a new cluster: storage must be on S3"
    assert any(s.startswith("mlflow.tracking_uri=http") for s in sets)
    # KubeRay pastes the entrypoint into a shell command line in the submitter pod.
    assert not re.search(r"[$;&|`]", spec["entrypoint"]), "no shell syntax in the entrypoint"
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/home/ray/haloae-sweeps"
    assert "WORKDIR /home/ray/haloae-sweeps" in (CLUSTER / "docker/Dockerfile").read_text()


# ------------------------------------------------------------------------------ sweep references
def _referenced_specs() -> dict[str, set[Path]]:
    refs: dict[str, set[Path]] = {}
    for path in CLUSTER.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".sh", ".sbatch", ".md", ".example", ""):
            for match in re.findall(r"\bsweeps/[A-Za-z0-9_]+\.yaml\b", path.read_text(errors="replace")):
                refs.setdefault(match, set()).add(path.relative_to(ROOT))
    return refs


def test_cluster_files_run_the_paper_sweep_definition() -> None:
    refs = _referenced_specs()
    for needed in ("kuberay-rayjob.yaml", "slurm/haloae-sweep.sbatch", "README.md"):
        assert Path("cluster", needed) in refs.get(PAPER_SPEC, set()), f"cluster/{needed} does not run {PAPER_SPEC}"
    assert (ROOT / PAPER_SPEC).is_file(), (
        f"{PAPER_SPEC} does not exist: the cluster entrypoints (RayJob, sbatch default, README) run it; "
        "it is written by the sweeps layer (issue 4)"
    )


def test_every_sweep_definition_named_in_cluster_files_exists() -> None:
    missing = {
        spec: sorted(map(str, files)) for spec, files in _referenced_specs().items() if not (ROOT / spec).is_file()
    }
    assert not missing, f"sweep definitions named in cluster/ but missing from sweeps/: {missing}"
