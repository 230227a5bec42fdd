# SPDX-License-Identifier: Apache-2.0
"""The files of cluster/: Ray launcher configs, KubeRay manifests, SLURM and MLflow scripts.

Nothing here needs a cloud account, a Kubernetes cluster or SLURM:
- launcher YAMLs are validated against the JSON schema inside the installed Ray package and
  then by Ray's own ``prepare_config`` / ``validate_config`` (what ``ray up`` runs first);
- KubeRay manifests are checked for what the operator needs (and for field-name typos, which
  the API server would drop with only a warning);
- shell scripts pass ``bash -n`` always and ``shellcheck`` when it is installed;
- the sbatch script runs under stub ``srun``/``scontrol``/``ray``/``haloae`` commands (no Ray is
  started or stopped: a real ``ray stop`` would stop every Ray on the machine);
- ``start-server.sh`` refuses incomplete settings with one line, and (when ``mlflow[auth]`` is
  installed) starts a real authenticated MLflow server on a loopback port.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHERS = ["aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"]
CLOUD_LAUNCHERS = ["aws-gpu.yaml", "gcp-gpu.yaml"]
KUBERAY = ["kuberay-rayjob.yaml", "kuberay-raycluster.yaml"]
SCRIPTS = sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".sh", ".sbatch"))
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


# ------------------------------------------------------------------------------ shell scripts
def test_there_are_scripts_to_check() -> None:
    names = {str(p.relative_to(CLUSTER)) for p in SCRIPTS}
    assert {"slurm/haloae-sweep.sbatch", "mlflow/start-server.sh", "setup-node.sh", "run-sweep.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_script_parses_with_bash(script: Path) -> None:
    assert script.read_text().startswith("#!"), "scripts need a shebang (shellcheck infers the shell from it)"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_script_is_shellcheck_clean(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install -y shellcheck)")
    result = subprocess.run(["shellcheck", "--format=gcc", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", ["setup-node.sh", "run-sweep.sh", "mlflow/start-server.sh"])
def test_script_is_executable(script: str) -> None:
    assert os.access(CLUSTER / script, os.X_OK), f"chmod +x cluster/{script}"


# ------------------------------------------------------------------------------ run-sweep.sh
def _write_stub(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def test_run_sweep_passes_the_cluster_settings_to_haloae(tmp_path: Path) -> None:
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "haloae.args"
    _write_stub(stubs / "haloae", f'printf "%s\\n" "$@" > "{log}"\n')
    spec = tmp_path / "sweeps" / "x.yaml"
    spec.parent.mkdir()
    spec.write_text("name: x\n")
    env = {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "HALOAE_STORAGE": "s3://bucket/sweeps",
        "MLFLOW_TRACKING_URI": "http://10.0.0.10:5000",
        "HALOAE_DATA_ROOT": "/data/mvtec ad",  # a space: arguments must stay whole
    }
    result = subprocess.run(
        ["bash", str(CLUSTER / "run-sweep.sh"), "sweeps/x.yaml", "--dry-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        "sweep", "sweeps/x.yaml", "--address", "auto", "--resume",
        "--set", "storage=s3://bucket/sweeps",
        "--set", "mlflow.tracking_uri=http://10.0.0.10:5000",
        "--set", "data.root=/data/mvtec ad",
        "--dry-run",
    ]  # fmt: skip

    del env["HALOAE_STORAGE"]
    result = subprocess.run(
        ["bash", str(CLUSTER / "run-sweep.sh"), "sweeps/x.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "HALOAE_STORAGE is not set" in result.stderr


# ------------------------------------------------------------------------------ sbatch under stubs
def _fake_slurm(tmp_path: Path, haloae_mode: str) -> tuple[dict, Path, Path]:
    """A fake SLURM + Ray: stub commands that log their arguments; srun runs locally."""
    bin_dir, state, submit = tmp_path / "bin", tmp_path / "state", tmp_path / "submit"
    for d in (bin_dir, state, submit / "sweeps"):
        d.mkdir(parents=True)
    (submit / "sweeps" / "x.yaml").write_text("name: x\n")
    log = state / "calls.log"
    _write_stub(bin_dir / "scontrol", 'printf "%s\\n" $STUB_NODES\n')
    # srun: log, drop its options (and -w's value), run the command here
    _write_stub(
        bin_dir / "srun",
        'echo "srun $*" >> "$STUB_LOG"\n'
        'while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do\n'
        '  if [ "$1" = -w ]; then shift; fi; shift\n'
        "done\n"
        'exec "$@"\n',
    )
    # ray start --block: wait until `ray stop` (these stubs are the only "Ray" here)
    _write_stub(
        bin_dir / "ray",
        'echo "ray $*" >> "$STUB_LOG"\n'
        'if [ "$1" = start ] && [[ " $* " == *" --block "* ]]; then\n'
        '  echo $$ >> "$STUB_STATE/blockers"; trap "exit 0" TERM\n'
        "  while :; do sleep 0.1; done\n"
        "fi\n"
        'if [ "$1" = stop ] && [ -f "$STUB_STATE/blockers" ]; then\n'
        '  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$STUB_STATE/blockers"\n'
        "fi\n",
    )
    wait_for_usr1 = 'trap \'echo "haloae got USR1" >> "$STUB_LOG"; exit 3\' USR1\nwhile :; do sleep 0.1; done\n'
    _write_stub(
        bin_dir / "haloae",
        'echo "haloae $*" >> "$STUB_LOG"\n' + (wait_for_usr1 if haloae_mode == "wait" else "exit 0\n"),
    )
    # python: the wait-for-nodes heredoc waits for the stub nodes; anything else is the real python
    _write_stub(
        bin_dir / "python",
        'if [ "${1:-}" = - ] && [ $# -eq 3 ]; then\n'
        "  cat > /dev/null\n"
        "  for _ in $(seq 200); do\n"
        '    [ "$(cat "$STUB_STATE/blockers" 2>/dev/null | wc -l)" -ge "$2" ] && { echo "stub: $2 nodes up"; exit 0; }\n'
        "    sleep 0.05\n"
        "  done\n"
        "  exit 1\n"
        "fi\n"
        f'exec "{sys.executable}" "$@"\n',
    )
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    (venv / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "STUB_LOG": str(log),
        "STUB_STATE": str(state),
        "STUB_NODES": "gpu01 gpu02 gpu03",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu[01-03]",
        "SLURM_SUBMIT_DIR": str(submit),
        "SLURM_CPUS_PER_TASK": "32",
        "SLURM_GPUS_PER_TASK": "a100:4",
        "HALOAE_VENV": str(tmp_path / "venv"),
        "HALOAE_STORAGE": str(tmp_path / "shared" / "sweeps"),
        "MLFLOW_TRACKING_URI": "http://mlflow.hpc.example:5000",
        "RAY_HEAD_WAIT_S": "0",
    }
    return env, log, state


def _run_sbatch(env: dict, signal_after_line: str | None = None) -> tuple[int, str]:
    proc = subprocess.Popen(
        ["bash", str(CLUSTER / "slurm/haloae-sweep.sbatch"), "sweeps/x.yaml", "--set", "seeds=[0]"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        if signal_after_line:
            log = Path(env["STUB_LOG"])
            deadline = time.monotonic() + 30
            while not (log.exists() and signal_after_line in log.read_text()):
                assert time.monotonic() < deadline and proc.poll() is None, "the sweep driver never started"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)  # what SLURM sends (--signal=B:TERM) before the time limit
        out, _ = proc.communicate(timeout=60)
        return proc.returncode, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _assert_ray_stopped_everywhere(calls: list[str], state: Path) -> None:
    stops = [c for c in calls if c.startswith("srun") and c.endswith("ray stop --grace-period 30")]
    assert sorted(c.split(" -w ")[1].split()[0] for c in stops) == ["gpu01", "gpu02", "gpu03"]
    assert all("--overlap" in c for c in stops), "ray stop must overlap the steps holding the nodes"
    for pid in (state / "blockers").read_text().split():
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


def test_sbatch_starts_ray_on_every_node_runs_the_sweep_and_stops_ray(tmp_path: Path) -> None:
    env, log, state = _fake_slurm(tmp_path, haloae_mode="exit")
    rc, out = _run_sbatch(env)
    assert rc == 0, out
    calls = log.read_text().splitlines()
    starts = [c for c in calls if c.startswith("ray start")]  # background steps: any order
    assert len(starts) == 3
    (head,) = [c for c in starts if "--head" in c]
    assert "--num-cpus=32" in head and "--num-gpus=4" in head and "--block" in head
    address = re.search(r"--node-ip-address=(\S+) --port=(\d+)", head).expand(r"\1:\2")
    for worker in (c for c in starts if c != head):
        assert f"--address={address}" in worker and "--num-gpus=4" in worker
    worker_nodes = [c.split(" -w ")[1].split()[0] for c in calls if c.startswith("srun") and "ray start --address" in c]
    assert sorted(worker_nodes) == ["gpu02", "gpu03"]  # started in the background: any order
    (sweep,) = [c for c in calls if c.startswith("haloae ")]
    assert sweep == (
        f"haloae sweep sweeps/x.yaml --address auto --resume --set storage={env['HALOAE_STORAGE']} "
        "--set mlflow.tracking_uri=http://mlflow.hpc.example:5000 --set seeds=[0]"
    )
    assert calls.index(sweep) > max(calls.index(s) for s in starts)
    _assert_ray_stopped_everywhere(calls, state)
    assert Path(env["HALOAE_STORAGE"]).is_dir()


def test_sbatch_on_sigterm_stops_the_driver_gracefully_then_ray(tmp_path: Path) -> None:
    env, log, state = _fake_slurm(tmp_path, haloae_mode="wait")
    rc, out = _run_sbatch(env, signal_after_line="haloae sweep")
    assert rc != 0, out  # the next chained job (afternotok) resumes the sweep
    calls = log.read_text().splitlines()
    assert "haloae got USR1" in calls, "Tune saves the experiment state on SIGUSR1"
    assert calls.index("haloae got USR1") < min(i for i, c in enumerate(calls) if c.startswith("ray stop"))
    _assert_ray_stopped_everywhere(calls, state)


# ------------------------------------------------------------------------------ MLflow server
MLFLOW_REQUIRED = {
    "MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow:pw@db:5432/mlflow",
    "MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket/mlflow",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
    "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-admin-password",
    "MLFLOW_ALLOWED_HOSTS": "mlflow.example.org,mlflow.example.org:*",
}


@pytest.mark.parametrize("unset", sorted(MLFLOW_REQUIRED))
def test_mlflow_server_script_needs_its_settings(unset: str, tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **MLFLOW_REQUIRED}
    del env[unset]
    result = subprocess.run(
        ["bash", str(CLUSTER / "mlflow/start-server.sh")], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and unset in result.stderr, result.stderr


def test_mlflow_server_script_rejects_a_short_admin_password(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **MLFLOW_REQUIRED, "MLFLOW_AUTH_ADMIN_PASSWORD": "short"}
    result = subprocess.run(
        ["bash", str(CLUSTER / "mlflow/start-server.sh")], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "at least 12 characters" in result.stderr


def test_mlflow_compose_wires_postgres_minio_and_the_script() -> None:
    compose = load("mlflow/docker-compose.yaml")
    services = compose["services"]
    assert {"postgres", "minio", "mlflow"} <= set(services)
    env = services["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert (
        env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://") and env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    )
    for secret in ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert ":?" in env[secret], f"{secret} must be required, not defaulted"
    assert "start-server.sh" in (CLUSTER / "mlflow/Dockerfile").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(url: str, auth: tuple[str, str] | None = None, host: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    if host:
        request.add_header("Host", host)
    try:
        # generous: basic-auth hashes the password on every request (seconds on a loaded machine)
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.slow
def test_mlflow_server_script_starts_an_authenticated_server(tmp_path: Path) -> None:
    """A real server (sqlite + local artifacts stand in for Postgres + S3) on a loopback port."""
    pytest.importorskip("flask_wtf", reason='the basic-auth app needs pip install "mlflow[auth]"')
    port = _free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-123",
        "MLFLOW_ALLOWED_HOSTS": "127.0.0.1:*,localhost:*",
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_SERVER_STATE_DIR": str(tmp_path / "state"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ},
    }
    log = tmp_path / "server.log"  # a file, not a pipe: a full pipe would block the server
    with log.open("w") as out:
        server = subprocess.Popen(
            ["bash", str(CLUSTER / "mlflow/start-server.sh")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the job-runner children go with it
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not (_port_open(port) and _status(f"{base}/health") == 200):
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer /health in 90 s"
            time.sleep(0.5)
        search = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
        assert _status(search) == 401
        assert _status(search, auth=("admin", "admin-password-123")) == 200
        assert _status(search, auth=("admin", "admin-password-123"), host="evil.example.com") == 403
        assert (tmp_path / "state" / "basic_auth.ini").stat().st_mode & 0o077 == 0, "the auth config holds a DB URI"
    finally:
        server.terminate()  # exec'd: this is the mlflow server itself, which ends its workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # whatever of its group outlived it


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
