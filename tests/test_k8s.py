"""The KubeRay manifests of examples/k8s/ (issue 15, part 3), checked without a Kubernetes cluster.

What is checked, offline:

* Schema: every manifest is validated by python-jsonschema against the ``v1`` OpenAPI schema of
  KubeRay's own RayJob CRD (release v1.7.0, vendored unmodified in tests/data/kuberay/ with its
  licence; its sha256 is checked). The schema covers the whole RayJob, the embedded RayCluster spec
  and the Kubernetes pod templates (containers, resources, volumes, env, ...): types, enums,
  required fields and quantity patterns. It is made strict the way kubeconform's ``-strict`` is:
  an object that lists its properties rejects any other (the API server would drop a misspelled
  field silently). The test proves it bites on a misspelled field, a bad quantity and a wrong type.
* Not covered: the CRD's CEL rules (``x-kubernetes-validations``, evaluated by the API server); the
  test asserts that no manifest sets a field that carries one. Admission webhooks and the operator's
  own checks run only in a cluster.
* Consistency: the image is the one dockerfiles/Dockerfile builds, ``rayVersion`` is the Ray that
  OpenRLHF pins, the entrypoint's recipe is where the Dockerfile copies examples/scripts/, the GPU
  layout in the file name matches the pods and the recipe's NNODES / GPUS_PER_NODE, and the
  recipe, run as the entrypoint would (IN_RAY_JOB=1, DRY_RUN=1), resolves through the real CLI.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import os
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from helpers import REPO_ROOT
from test_recipes import MODULE, resolve

K8S = REPO_ROOT / "examples" / "k8s"
CRD = REPO_ROOT / "tests" / "data" / "kuberay" / "ray.io_rayjobs.yaml"
CRD_SHA256 = "01a5cf3b17c1769fda44af7e82debcd98722f0c27b9ab84d084681c6649121f5"
DOCKERFILE = REPO_ROOT / "dockerfiles" / "Dockerfile"
MANIFESTS = sorted(K8S.glob("rayjob-*.yaml"))
LAYOUT = re.compile(r"rayjob-(\d+)x(\d+)\.yaml")


def strict(schema: dict) -> dict:
    """The schema with ``additionalProperties: false`` on every object that lists its properties
    and does not keep unknown fields (``x-kubernetes-preserve-unknown-fields``)."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        schema["items"] = strict(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [strict(sub) for sub in schema[key]]
    return schema


def crd_schema() -> dict:
    crd = yaml.load(CRD.read_text(), Loader=yaml.CSafeLoader)
    (v1,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1"]
    assert v1["served"] and v1["storage"]
    return v1["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Validator:
    schema = strict(crd_schema())
    # OpenAPI 3.0 schemas are JSON Schema draft 4 plus extensions (x-kubernetes-*) that a draft-4
    # validator ignores.
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def errors(validator: jsonschema.Validator, manifest: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def test_vendored_crd_is_the_release_file():
    assert hashlib.sha256(CRD.read_bytes()).hexdigest() == CRD_SHA256
    assert "Apache License" in (CRD.parent / "LICENSE").read_text()


def test_one_manifest_per_layout():
    assert [p.name for p in MANIFESTS] == ["rayjob-1x8.yaml", "rayjob-2x8.yaml", "rayjob-4x8.yaml"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_a_valid_rayjob(path, validator):
    manifest = load(path)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    assert errors(validator, manifest) == []
    # metadata is a bare object in the CRD; the API server wants a DNS-1123 name.
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", manifest["metadata"]["name"])


def cel_guarded_fields(schema: dict) -> set[str]:
    """Names of the fields whose values the CRD checks with CEL rules."""
    found = set()
    for name, sub in schema.get("properties", {}).items():
        if "x-kubernetes-validations" in sub:
            found.add(name)
        found |= cel_guarded_fields(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found |= cel_guarded_fields(schema[key])
    return found


def keys_of(node) -> set[str]:
    if isinstance(node, dict):
        return set(node).union(*(keys_of(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(keys_of(v) for v in node))
    return set()


def test_no_manifest_sets_a_field_only_cel_rules_check():
    guarded = cel_guarded_fields(crd_schema())
    assert {"deletionStrategy", "managedBy"} <= guarded  # the walk finds them at all
    for path in MANIFESTS:
        assert not keys_of(load(path)) & guarded, path.name


def head_container(manifest: dict) -> dict:
    return manifest["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


def break_field_name(m: dict) -> None:
    container = head_container(m)
    container["volumeMount"] = container.pop("volumeMounts")


def break_quantity(m: dict) -> None:
    head_container(m)["resources"]["limits"]["nvidia.com/gpu"] = "eight"


def break_type(m: dict) -> None:
    m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "1"


def break_required(m: dict) -> None:
    del head_container(m)["name"]


@pytest.mark.parametrize("mutate", [break_field_name, break_quantity, break_type, break_required])
def test_the_validator_rejects_a_broken_manifest(mutate, validator):
    manifest = copy.deepcopy(load(K8S / "rayjob-2x8.yaml"))
    mutate(manifest)
    assert errors(validator, manifest)


def runtime_env_vars(manifest: dict) -> dict[str, str]:
    env = yaml.safe_load(manifest["spec"]["runtimeEnvYAML"])["env_vars"]
    assert all(isinstance(v, str) for v in env.values()), env  # Ray accepts string values only
    return env


def test_image_and_ray_version_are_the_projects():
    # The tag docs/cluster.md and the Dockerfile's header build.
    assert "docker build -f dockerfiles/Dockerfile -t openrlhf-ext:gpu ." in DOCKERFILE.read_text()
    (ray_pin,) = [r for r in importlib.metadata.requires("openrlhf") if re.match(r"ray\b", r)]
    ray_version = ray_pin.split("==")[1]
    for path in MANIFESTS:
        cluster = load(path)["spec"]["rayClusterSpec"]
        assert cluster["rayVersion"] == ray_version, path.name
        pods = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
        assert {c["image"] for pod in pods for c in pod["template"]["spec"]["containers"]} == {"openrlhf-ext:gpu"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_layout_matches_the_file_name_and_the_recipe(path):
    nodes, gpus = map(int, LAYOUT.fullmatch(path.name).groups())
    manifest = load(path)
    cluster = manifest["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]
    workers = cluster.get("workerGroupSpecs", [])
    assert int(head_container(manifest)["resources"]["limits"]["nvidia.com/gpu"]) == gpus
    assert sum(group["replicas"] for group in workers) == nodes - 1
    for group in workers:
        assert group["minReplicas"] == group["replicas"] == group["maxReplicas"]  # no autoscaling mid-run
        # A worker pod is the head pod with another container name.
        worker = copy.deepcopy(group["template"])
        worker["spec"]["containers"][0]["name"] = "ray-head"
        assert worker == head
    env = runtime_env_vars(manifest)
    assert (env["NNODES"], env["GPUS_PER_NODE"], env["IN_RAY_JOB"]) == (str(nodes), str(gpus), "1")


def image_recipe_dir() -> tuple[Path, str]:
    """(source in the repository, destination in the image) of the Dockerfile's recipe COPY."""
    (line,) = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("COPY examples/scripts ")]
    _, source, destination = line.split()
    return REPO_ROOT / source, destination


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_entrypoint_runs_a_recipe_that_resolves(path):
    nodes, gpus = map(int, LAYOUT.fullmatch(path.name).groups())
    manifest = load(path)
    source, destination = image_recipe_dir()
    command = shlex.split(manifest["spec"]["entrypoint"])
    assert command[0] == "bash" and command[1].startswith(destination + "/")
    script = source / command[1][len(destination) + 1:]
    env = {**{k: v for k, v in os.environ.items() if k not in ("RUN_NAME", "WANDB_API_KEY")},
           **runtime_env_vars(manifest), "DRY_RUN": "1"}
    proc = subprocess.run(["bash", str(script), *command[2:]], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    tokens = shlex.split(proc.stdout)
    # IN_RAY_JOB: the trainer itself, not a `ray job submit`.
    assert tokens[:3] == ["python3", "-m", MODULE]
    config = resolve(tokens[3:])
    assert (config["actor"]["num_nodes"], config["actor"]["num_gpus_per_node"]) == (nodes, gpus)
    assert config["vllm"]["num_engines"] == nodes * gpus
