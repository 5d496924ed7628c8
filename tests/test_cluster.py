"""The cluster definitions in cluster/, checked offline.

The launcher files go through what `ray up` does to them before it talks to a cloud: Ray's
`prepare_config` (merge with the provider's defaults.yaml) and `validate_config` (Ray's JSON schema
and cross-field checks). Neither needs credentials, the network or cloud libraries. The KubeRay
manifest has no schema in the ray package, so its structure is checked by hand.
"""

import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
# Machine families whose GPUs come with the machine type (no guestAccelerators on GCP).
GPU_MACHINE_TYPE = re.compile(r"^(g\d|p\d)[a-z]*\.|^(a2|a3|g2)-")


def prepared(name: str) -> dict:
    """The launcher config as `ray up` sees it: merged with Ray's defaults, then validated."""
    config = prepare_config(yaml.safe_load((CLUSTER / name).read_text()))
    validate_config(config)
    return config


@pytest.fixture(params=["aws.yaml", "gcp.yaml"])
def launcher(request) -> dict:
    return prepared(request.param)


def worker_types(config: dict) -> dict:
    return {name: spec for name, spec in config["available_node_types"].items() if name != config["head_node_type"]}


def test_gpu_workers_scale_from_zero(launcher):
    workers = worker_types(launcher)
    assert workers
    for name, spec in workers.items():
        assert spec["min_workers"] == 0, name
        assert spec["max_workers"] >= 1, name
        assert spec["resources"]["GPU"] >= 1, name
        node = spec["node_config"]
        machine = node.get("InstanceType") or node.get("machineType")
        assert GPU_MACHINE_TYPE.match(machine) or node.get("guestAccelerators"), f"{name}: {machine} has no GPU"
    assert launcher["max_workers"] >= max(spec["max_workers"] for spec in workers.values())


def test_head_has_no_gpu(launcher):
    head = launcher["available_node_types"][launcher["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    assert head["max_workers"] == 0
    assert "guestAccelerators" not in head["node_config"]
    assert not GPU_MACHINE_TYPE.match(head["node_config"].get("InstanceType") or head["node_config"]["machineType"])


def test_setup_installs_the_synced_project(launcher):
    assert launcher["file_mounts"] == {"~/study": "."}
    assert ".gitignore" in launcher["rsync_filter"]  # not .venv/, data/, runs/, mlartifacts/
    for commands in (launcher["head_setup_commands"], launcher["worker_setup_commands"]):
        assert any(
            "cd ~/study" in command and "pip install" in command and "--editable ." in command for command in commands
        )


def test_dashboard_and_mlflow_stay_on_loopback(launcher):
    # Ray's defaults.yaml starts the head with --dashboard-host=0.0.0.0; the prepared config
    # shows whether ours replaced it.
    head_start = " ".join(launcher["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
    assert "mlflow server --host 127.0.0.1" in head_start
    assert "security_group" not in launcher["provider"]  # no extra inbound rule on AWS


def test_docker_images_match_installed_ray(launcher):
    docker = launcher["docker"]
    version = re.escape(ray.__version__)
    assert re.fullmatch(rf"rayproject/ray:{version}-py3\d+-gpu", docker["image"])
    assert "worker_image" not in docker  # the GPU workers run `image`
    assert re.fullmatch(rf"rayproject/ray:{version}-py3\d+-(cpu|gpu)", docker.get("head_image", docker["image"]))
    assert docker["container_name"]


@pytest.mark.parametrize("where", ["top level", "node type"])
def test_misspelt_key_fails_validation(where):
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    if where == "top level":
        config["max_workerz"] = config.pop("max_workers")
    else:
        spec = config["available_node_types"]["gpu_1x_a10g"]
        spec["max_workerz"] = spec.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_workerz"):
        validate_config(prepare_config(config))


def kuberay_documents() -> list[dict]:
    return [document for document in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()) if document]


def test_kuberay_cluster_autoscales_gpu_workers():
    clusters = [document for document in kuberay_documents() if document.get("kind") == "RayCluster"]
    assert len(clusters) == 1
    cluster = clusters[0]
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == ray.__version__
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["template"]["spec"]["containers"][0]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    gpu_groups = [
        group
        for group in spec["workerGroupSpecs"]
        if group["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0) >= 1
    ]
    assert gpu_groups
    for group in gpu_groups:
        assert group["minReplicas"] == 0 and group["maxReplicas"] >= 1
        assert any(toleration["key"] == "nvidia.com/gpu" for toleration in group["template"]["spec"]["tolerations"])


def service_types(node) -> list[str]:
    """Every `serviceType` (RayCluster head) and `type` of a Service spec, anywhere in `node`."""
    found = []
    if isinstance(node, dict):
        if "serviceType" in node:
            found.append(node["serviceType"])
        if node.get("kind") == "Service":
            found.append(node.get("spec", {}).get("type", "ClusterIP"))
        for value in node.values():
            found += service_types(value)
    elif isinstance(node, list):
        for value in node:
            found += service_types(value)
    return found


def test_kuberay_exposes_nothing_outside_the_cluster():
    documents = kuberay_documents()
    assert service_types(documents) == ["ClusterIP"]
    assert not [document for document in documents if document.get("kind") == "Ingress"]
