"""Bad input found before Ray prints exactly its error line (issue 21, item 3): no log path, no log
tail, no library warning, and no train.log or output folder left behind.

Each case runs the real CLI in a subprocess (the console redirects file descriptors, and the pynvml
warning fires at most once per process). Hub ids are checked against a stand-in Hub on localhost
(``HF_ENDPOINT``) or offline (``HF_HUB_OFFLINE=1``), with an empty cache: no test touches the network.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

PROG = "python -m openrlhf_ext.cli.train_ppo_ray"
OWN_NOTE = re.compile(r"^\[openrlhf_ext\] (platform: |--)")

# What the stand-in Hub answers for .../<repo>/resolve/main/config.json: (status, X-Error-Code).
HUB_ANSWERS = {
    "nosuchorg/nosuchmodel": (401, "RepoNotFound"),  # the Hub's answer to a missing (or private) repo
    "org/gated": (401, "GatedRepo"),
    "org/a-dataset": (404, "EntryNotFound"),
}
CONFIG = b'{"model_type": "llama"}'


class FakeHub(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.answer(with_body=False)

    def do_GET(self) -> None:
        self.answer(with_body=True)

    def answer(self, with_body: bool) -> None:
        repo = self.path.split("/resolve/")[0].strip("/")
        status, code = HUB_ANSWERS.get(repo, (200, None))
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
        else:  # a model repository with a config.json
            self.send_header("X-Repo-Commit", "0" * 40)
            self.send_header("ETag", '"config-etag"')
            self.send_header("Content-Length", str(len(CONFIG)))
        self.end_headers()
        if with_body and not code:
            self.wfile.write(CONFIG)

    def log_message(self, *args: object) -> None:  # no request lines in the test output
        pass


@pytest.fixture
def hub_env(tmp_path) -> Iterator[dict[str, str]]:
    """The environment of a CLI run that asks the stand-in Hub, with an empty Hugging Face cache."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}", HF_HOME=str(tmp_path / "hf"),
               HF_HUB_DISABLE_IMPLICIT_TOKEN="1")
    try:
        yield env
    finally:
        server.shutdown()
        server.server_close()


def train_cli(tmp_path: Path, model: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"input": "1+1?", "answer": "2"}\n')
    return subprocess.run([sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray", "--pretrain", model,
                           "--prompt_data", str(prompts), "--save_path", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)


def assert_one_line(proc: subprocess.CompletedProcess, tmp_path: Path, error: str) -> None:
    """The error line last; before it nothing of the console (log path, log tail) nor of a library
    (warnings): at most our own notes on the configuration made while parsing (the platform's)."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    *before, last = proc.stderr.splitlines()
    assert last == f"{PROG}: error: {error}"
    assert all(OWN_NOTE.match(line) and " log: " not in line for line in before), before
    assert not (tmp_path / "out").exists()  # nor a train.log holding only import-time chatter


def test_a_missing_model_folder_is_one_line(tmp_path):
    proc = train_cli(tmp_path, str(tmp_path / "no_model"), dict(os.environ))
    assert_one_line(proc, tmp_path, f"--actor.model_name_or_path: {tmp_path / 'no_model'}: no such model folder")


def test_a_hub_id_not_in_the_cache_offline_is_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = train_cli(tmp_path, "Qwen/Qwen2.5-Math-1.5B", env)
    assert_one_line(proc, tmp_path, "--actor.model_name_or_path: Qwen/Qwen2.5-Math-1.5B: not a local folder, and "
                                    "not in the Hugging Face cache (offline: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set)")


def test_a_hub_id_the_hub_does_not_know_is_one_line(tmp_path, hub_env):
    proc = train_cli(tmp_path, "nosuchorg/nosuchmodel", hub_env)
    assert_one_line(proc, tmp_path, "--actor.model_name_or_path: nosuchorg/nosuchmodel: not a local folder, and no "
                                    "model of that name on the Hugging Face Hub (a typo? a private one needs `hf auth login`)")


def test_each_answer_of_the_hub_has_its_reason(tmp_path, hub_env):
    """hub_model_problem against every answer of the stand-in Hub, a real model repository included."""
    repos = [*HUB_ANSWERS, "org/model"]
    code = ("import json, sys\nfrom openrlhf_ext.job.checks import hub_model_problem\n"
            "print(json.dumps({r: hub_model_problem(r) for r in sys.argv[1:]}))")
    proc = subprocess.run([sys.executable, "-c", code, *repos], capture_output=True, text=True, timeout=120,
                          env=hub_env)
    assert proc.returncode == 0, proc.stderr
    problems = json.loads(proc.stdout)
    assert problems["nosuchorg/nosuchmodel"].startswith("no model of that name on the Hugging Face Hub")
    assert problems["org/gated"].startswith("a gated model on the Hugging Face Hub")
    assert problems["org/a-dataset"] == "its Hugging Face Hub repository has no config.json (not a transformers model)"
    assert problems["org/model"] is None
    # The fetched config.json is in the cache: the Ray actors will not fetch it again.
    assert list((tmp_path / "hf").rglob("config.json"))
