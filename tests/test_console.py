"""The training console (issue 15, part 5; issue 21, items 3 and 4): one line per step under a
progress bar, the rest in the log file, whose path is printed as Ray starts and at the end; a run
refused for its input leaves nothing; a pipe gets the same lines as a terminal.

``run_console`` redirects file descriptors 1 and 2, so each case runs it in a child Python process
that writes what a run writes: stock noise from this process and from a subprocess of it (as the
Ray processes the driver starts), the trainer's step lines with the prefix Ray puts on forwarded
actor output, a library warning, and one of our own messages. The terminal is a pipe (what
`ray job logs` or a Slurm output file sees) or a pseudo-terminal (a person's shell).
"""

from __future__ import annotations

import fcntl
import math
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from helpers import small_run_flags
from mlflow import MlflowClient

from openrlhf_ext.reporting.console import LOG_FILE, format_step_line

STATUS = {"ext/reward_mean": 0.4123, "ext/correct_fraction": 0.41, "ext/kept_fraction": 0.5, "kl": 0.00312,
          "entropy_loss": 2.955, "timing/step_total": 23.0, "timing/generation": 4.05,
          "timing/make_experience": 3.03, "timing/ppo_train": 13.93, "timing/broadcast": 1.99}

RUN = """
import logging, os, sys, time, warnings
from openrlhf_ext.reporting.console import configure_logging, format_step_line, run_console, show_log_path
configure_logging()
with run_console(sys.argv[1], verbose=sys.argv[2] == "1"):
    show_log_path()  # as the run guard does when Ray starts
    print("Namespace(actor=Namespace(model_name_or_path='m', adam=Namespace(lr=1e-06)))")
    print("Actor(\\n  (model): Qwen2ForCausalLM(...)\\n)")
    os.system("echo raylet noise from a child process; echo child stderr noise >&2")
    warnings.warn("torch_dtype is deprecated", FutureWarning)
    print("[openrlhf_ext.cpu] warning: the run needs 9 GiB, 8 are available", file=sys.stderr)
    logging.getLogger("openrlhf_ext.job.restarts").info("restart 1/2 after a dead actor")
    for step in (1, 2, 3):
        status = {"ext/reward_mean": step / 10, "timing/step_total": 1.0}
        print("(_ExtPPOTrainer pid=4242) " + format_step_line(step, 3, status), flush=True)
        print("(_ExtPPOTrainer pid=4242) INFO: Global step " + str(step) + ": {'policy_loss': 0.1}", flush=True)
        time.sleep(0.3)
    if sys.argv[3] == "fail":
        raise RuntimeError("the reward server died")
"""


def run(tmp_path: Path, verbose: bool = False, fail: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN, str(tmp_path), "1" if verbose else "0", "fail" if fail else "ok"],
                          capture_output=True, text=True, timeout=120)


def test_step_line_has_every_field_and_dashes_for_missing():
    line = format_step_line(12, 40, STATUS)
    assert line == ("[step 12/40] reward 0.412 | correct 0.41 | kept 0.50 | kl 0.0031 | entropy 2.955 | "
                    "23.0s (gen 4.0 / exp 3.0 / train 13.9 / sync 2.0)")
    sparse = format_step_line(1, 2, {"ext/reward_mean": math.nan, "kl": None})
    assert sparse.startswith("[step 1/2] reward - | correct - | kept - | kl - | entropy -")


def test_terminal_gets_step_lines_and_the_log_path_and_the_log_gets_everything(tmp_path):
    proc = run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    log = tmp_path / LOG_FILE
    lines = proc.stdout.splitlines()
    assert lines[0] == lines[-1] == f"[openrlhf_ext] log: {log}"
    steps = [line for line in lines if line.startswith("[step ")]
    # Ray's "(actor pid=...)" prefix is cut; the ETA is there from the second step on.
    assert [s.split(" | eta ")[0] for s in steps] == [format_step_line(n, 3, {"ext/reward_mean": n / 10,
                                                                                "timing/step_total": 1.0})
                                                       for n in (1, 2, 3)]
    assert steps[0].endswith("| eta ?") and re.search(r"\| eta 00:0\d$", steps[1])
    assert "[openrlhf_ext.cpu] warning: the run needs 9 GiB, 8 are available" in lines
    assert "[openrlhf_ext] restart 1/2 after a dead actor" in lines  # our logging, through the log
    assert len(lines) == 2 + 3 + 2  # nothing else: no namespace, model repr, stock dict or warning
    assert proc.stderr == ""
    assert "\r" not in proc.stdout  # a pipe gets plain lines, no progress bar
    text = log.read_text()
    for noise in ("Namespace(actor=", "Qwen2ForCausalLM", "raylet noise from a child process", "child stderr noise",
                  "FutureWarning: torch_dtype is deprecated", "Global step 2"):
        assert noise in text


def test_a_failure_shows_the_end_of_the_log_and_the_error(tmp_path):
    proc = run(tmp_path, fail=True)
    assert proc.returncode == 1
    assert "[openrlhf_ext] the run failed; the last lines of the log:" in proc.stdout
    assert "Global step 3" in proc.stdout  # the tail
    assert proc.stdout.splitlines()[-1] == f"[openrlhf_ext] log: {tmp_path / LOG_FILE}"
    # The exception itself is printed after stderr is back on the terminal.
    assert "RuntimeError: the reward server died" in proc.stderr


def test_a_run_stopped_before_any_output_leaves_no_log(tmp_path):
    code = ("import sys\nfrom openrlhf_ext.reporting.console import run_console\n"
            "with run_console(sys.argv[1]):\n    raise SystemExit('bad input')")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip() == "bad input"  # the error is not swallowed
    assert not (tmp_path / LOG_FILE).exists()


REFUSED = """
import os, sys, warnings
from openrlhf_ext.reporting.console import run_console, show_log_path
class BadInput(ValueError):
    pass
with run_console(sys.argv[1], input_errors=(BadInput,)):
    print("[WARNING] [real_accelerator.py:199:get_accelerator] Setting accelerator to CPU.")
    warnings.warn("The pynvml package is deprecated", FutureWarning)
    os.system("echo child noise >&2")
    if sys.argv[2] == "ray started":
        show_log_path()
    raise BadInput("--actor.model_name_or_path: /m: no such model folder")
"""


def refused(out: Path, when: str = "before ray") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", REFUSED, str(out), when], capture_output=True, text=True, timeout=60)


def test_a_run_refused_for_its_input_shows_nothing_and_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "run"
    proc = refused(out)
    assert proc.stdout == ""  # the CLI prints the error line itself (tests/test_one_line_errors.py)
    assert proc.stderr.strip().splitlines()[-1] == "BadInput: --actor.model_name_or_path: /m: no such model folder"
    assert not out.exists() and (tmp_path / "new").is_dir()  # the folder the console made, and only that, is gone
    # A log of an earlier run in the same folder is kept as it was.
    out.mkdir()
    (out / LOG_FILE).write_text("the earlier run\n")
    assert refused(out).stdout == ""
    assert (out / LOG_FILE).read_text() == "the earlier run\n"


def test_an_input_error_after_ray_started_is_a_failure_with_its_log(tmp_path):
    proc = refused(tmp_path, "ray started")
    log = tmp_path / LOG_FILE
    lines = proc.stdout.splitlines()
    assert lines[0] == lines[-1] == f"[openrlhf_ext] log: {log}"
    assert "[openrlhf_ext] the run failed; the last lines of the log:" in lines and "child noise" in lines
    assert "child noise" in log.read_text()


def test_our_messages_are_prefixed_and_follow_stderr(capsys):
    import logging

    from openrlhf_ext.reporting.console import configure_logging

    configure_logging()
    configure_logging()  # once per command, however often called
    log = logging.getLogger("openrlhf_ext.job.restarts")
    log.info("restart %d/%d after %s", 1, 2, "a dead actor")
    log.warning("resume: no intact checkpoint")
    logging.getLogger("openrlhf_ext").debug("not shown")
    assert capsys.readouterr() == ("", "[openrlhf_ext] restart 1/2 after a dead actor\n"
                                       "[openrlhf_ext] warning: resume: no intact checkpoint\n")


RAY_RUN = """
import logging, os, subprocess, sys, time
import ray
from openrlhf_ext.reporting.console import configure_logging, format_step_line, run_console, show_log_path

# vLLM's engine core: a process the actor starts, logging to stdout.
ENGINE_CORE = ("import logging, sys; logging.basicConfig(stream=sys.stdout, level=logging.INFO); "
               "logging.getLogger('vllm.engine').info('Automatically detected platform cpu.')")

@ray.remote(num_cpus=0)
class Trainer:
    def step(self, step):
        if step == 1:
            print("Actor(\\n  (model): Qwen2ForCausalLM(...)\\n)")
            logging.getLogger("transformers").warning("torch_dtype is deprecated")
            print("a DeepSpeed warning", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-c", ENGINE_CORE], check=True)
        print(format_step_line(step, 2, {"ext/reward_mean": step / 10}), flush=True)

if __name__ == "__main__":
    configure_logging()
    with run_console(sys.argv[1]):
        show_log_path()
        ray.init(address="local", num_cpus=1, include_dashboard=False)
        trainer = Trainer.remote()
        for step in (1, 2):
            ray.get(trainer.step.remote(step))
            time.sleep(1.5)  # Ray forwards actor output about every 0.5 s
        logging.getLogger("openrlhf_ext.job.restarts").info("done")
        ray.shutdown()
"""


def test_with_stdout_a_pipe_ray_actors_output_goes_to_the_log(tmp_path):
    """Issue 21, item 4: a pipe (CI logs, nohup, `ray job logs`) shows the lines a terminal shows."""
    script = tmp_path / "ray_run.py"
    script.write_text(RAY_RUN)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300, env=env)
    log = tmp_path / "out" / LOG_FILE
    assert proc.returncode == 0, proc.stdout + proc.stderr + (log.read_text() if log.exists() else "")
    lines = proc.stdout.splitlines()
    assert [line.split(" | eta")[0] for line in lines] == [
        f"[openrlhf_ext] log: {log}",
        format_step_line(1, 2, {"ext/reward_mean": 0.1}),
        format_step_line(2, 2, {"ext/reward_mean": 0.2}),
        "[openrlhf_ext] done",
        f"[openrlhf_ext] log: {log}",
    ]
    assert proc.stderr == "" and "\r" not in proc.stdout
    text = log.read_text()
    for noise in ("Qwen2ForCausalLM", "torch_dtype is deprecated", "a DeepSpeed warning",
                  "Automatically detected platform cpu."):
        assert noise in text


def test_verbose_prints_everything_and_writes_no_log(tmp_path):
    proc = run(tmp_path, verbose=True)
    assert proc.returncode == 0, proc.stderr
    assert "Namespace(actor=" in proc.stdout and "Qwen2ForCausalLM" in proc.stdout
    assert "FutureWarning" in proc.stderr
    assert not (tmp_path / LOG_FILE).exists()


def test_on_a_terminal_a_progress_bar_of_the_whole_run(tmp_path):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # rows, columns of a window
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(tmp_path), "0", "ok"], stdout=follower,
                            stderr=follower, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the pseudo-terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    screen = b"".join(chunks).decode()
    assert "3/3 steps" in screen and "100%" in screen
    assert "[step 3/3]" in screen and "Qwen2ForCausalLM" not in screen


@pytest.mark.slow
def test_a_real_run_prints_its_steps_and_keeps_the_rest_in_the_log(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray",
                           *small_run_flags(tiny_model_dir, out), "--advantage_estimator", "group_norm",
                           "--ext.mlflow_uri"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    log = out / LOG_FILE
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:] + (log.read_text()[-5000:] if log.exists() else "")
    lines = proc.stdout.splitlines()
    # The log's path once the inputs are checked (as Ray starts, after the lines of the input
    # stage), before the first step, and at the end of the console.
    log_line = f"[openrlhf_ext] log: {log}"
    assert lines.count(log_line) == 2 and lines.index(log_line) < lines.index(next(x for x in lines if "[step " in x))
    # The end-of-run report follows the console.
    assert lines[-1] == f"curves: {out / 'curves.png'}" and f"summary: {out / 'summary.md'}" in lines
    # 8 prompts in rollout batches of 4: two steps, each with its line, nothing of the stock output.
    assert [line.split("]")[0] for line in lines if line.startswith("[step ")] == ["[step 1/2", "[step 2/2"]
    text = log.read_text()
    assert "Global step 2" in text and "[step 2/2]" in text  # the stock per-step dict, in the log only
    assert "Global step" not in proc.stdout + proc.stderr
    # mlflow got the same steps.
    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("openrlhf-ext").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/ext/reward_mean")] == [1, 2]
