"""Failures after Ray has started, turned into one line: which part failed, why, and where the full log is.

A Ray failure reaches the driver as a chain: ``RayTaskError`` of the trainer's ``fit`` wrapping
the ``RayTaskError`` or ``ActorDiedError`` of the actor that really failed, whose own cause is
the exception. :func:`summarize_failure` walks to the innermost link and names its actor class,
pid and node; the full text of the chain goes to ``<ckpt.output_dir>/error.log`` and the dead
worker's own Ray log file is named when it can be found.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlparse

ERROR_LOG = "error.log"


class RunFailure(RuntimeError):
    """A run that failed after start; the message is the one line to show."""


class RewardUnavailable(RuntimeError):
    """Rollout samples came back without a reward: the reward server or function failed."""


def _first_line(text: object, limit: int = 300) -> str:
    line = next((part.strip() for part in _plain(str(text)).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _died_actor_fields(error_msg: str) -> dict[str, str]:
    """``class_name`` / ``pid`` / ``ip`` from Ray's ``ActorDiedError`` message (tab-indented ``key: value``)."""
    fields = {}
    for line in error_msg.splitlines():
        key, sep, value = line.strip().partition(": ")
        if sep and key in ("class_name", "pid", "ip"):
            fields[key] = value
    return fields


_ANSI_COLOR = re.compile(r"\x1b\[[0-9;]*m")


def _plain(text: str) -> str:
    """``text`` without the terminal colour codes Ray puts in task errors."""
    return _ANSI_COLOR.sub("", text)


# First line of a RayTaskError's text: "ray::Class.method() (pid=123, ip=10.0.0.1, actor_id=...)".
_TASK_HEADER = re.compile(r"ray::(?P<name>[^\s(]+)(?:\(\))? \(pid=(?P<pid>\d+), ip=(?P<ip>[^,)]+)")


def _task_part(err: BaseException) -> tuple[str, int | None]:
    """(name, pid) of the innermost failed Ray task, the last header in the error's text: the chain's
    objects lose the inner tasks' names (a task error that is also an instance of its cause's class
    keeps only the text and the cause), the text keeps every task's traceback."""
    matches = list(_TASK_HEADER.finditer(_plain(str(err))))
    if not matches:
        return "a Ray task", None
    match = matches[-1]
    return f"{match['name']} (pid {match['pid']}, node {match['ip']})", int(match["pid"])


# A traceback's exception line: "module.Name: message" at the start of a line.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*: \S")


def _exception_line(traceback_text: str) -> str:
    """The last exception of a formatted traceback, its message continued by the indented lines
    after it (pydantic puts the reason there), cut to one line."""
    lines = _plain(traceback_text).splitlines()
    starts = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
    if not starts:
        return _first_line(lines[-1] if lines else "")
    tail = lines[starts[-1]:]
    end = next((i for i, line in enumerate(tail[1:], 1) if not line.startswith(" ")), len(tail))
    return _first_line(" ".join(part.strip() for part in tail[:end]))


# A gloo collective or send whose peer process is gone: its socket closed (a killed process's is) or
# reset. torch 2.13 raises them as RuntimeError (other releases: DistBackendError), e.g.
# "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:20353. ..."
# and "[.../pair.cc:537] Read error [127.0.0.1]:9143: Connection reset by peer. ...".
_GLOO_PEER_LOST = re.compile(r"\bgloo\b.*\b(?:Connection closed by peer|Connection reset by peer|Broken pipe)")


def gloo_peer_lost(err: BaseException) -> bool:
    """Whether ``err`` (a Ray failure chain: its text holds every task's traceback) is a gloo error of a
    rank that lost its peer, the echo of another process's death."""
    return _GLOO_PEER_LOST.search(_plain(str(err))) is not None


def summarize_failure(err: BaseException) -> tuple[str, str, int | None]:
    """(failed part, cause, worker pid) of a Ray failure chain, from its innermost link."""
    from ray.exceptions import ActorDiedError, RayError, RayTaskError

    part, pid = "the driver", None
    while True:
        if isinstance(err, RayTaskError):
            part, pid = _task_part(err)
            if isinstance(err.cause, RayError):
                err = err.cause
                continue
            cause = err.cause if err.cause is not None else err
            return part, f"{type(cause).__name__}: {_first_line(cause)}", pid
        if isinstance(err, ActorDiedError) and err.actor_init_failed:
            # The text is the constructor's task header and traceback, not the tab-indented fields.
            part, pid = _task_part(err)
            return part, f"actor died in its constructor: {_exception_line(err.error_msg)}", pid
        if isinstance(err, ActorDiedError):
            fields = _died_actor_fields(err.error_msg)
            pid = int(fields["pid"]) if fields.get("pid", "").isdigit() else pid
            part = f"{fields.get('class_name', 'an actor')} (pid {fields.get('pid', '?')}, node {fields.get('ip', '?')})"
            reason = "died in its constructor" if err.actor_init_failed else "died"
            return part, f"actor {reason}: {_first_line(err.error_msg.splitlines()[-1])}", pid
        return part, f"{type(err).__name__}: {_first_line(err)}", pid


def worker_log(pid: int | None) -> str | None:
    """The Ray log file of worker ``pid`` on this node, else the session's log folder (None without Ray)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)  # set once this process has joined Ray
    if node is None:
        return None
    logs = Path(node.get_logs_dir_path())
    matches = sorted(logs.glob(f"worker-*-{pid}.err")) if pid else []
    return str(matches[0] if matches else logs)


def describe_failure(err: BaseException, output_dir: str) -> str:
    """The one line for a run that failed after start; writes the full chain to ``output_dir/error.log``."""
    part, cause, pid = summarize_failure(err)
    log = Path(output_dir) / ERROR_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(_plain(f"{type(err).__name__}: {err}\n"), encoding="utf-8")
    ray_log = worker_log(pid)
    where = f"full log: {log}" + (f", Ray worker log: {ray_log}" if ray_log else "")
    return f"{part} failed: {cause} ({where})"


def reward_connect_error(url: str, timeout_s: float = 2.0) -> str | None:
    """Why the reward server at HTTP(S) ``url`` does not accept connections; None when it does, or when
    ``url`` is a reward file."""
    if not url.startswith(("http://", "https://")):
        return None
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"


def probe_reward_url(url: str, timeout_s: float = 2.0) -> str:
    """Why ``url`` may give no reward: a reward file raised (its log is the generator's), or the
    server does not accept connections."""
    if not url.startswith(("http://", "https://")):
        return "the reward function raised or returned nothing (see the rollout generator's log)"
    return reward_connect_error(url, timeout_s) or "the server accepts connections but answered with errors (see its log)"


def check_rewards(samples: list, reward_urls: list[str] | None) -> None:
    """Raise :class:`RewardUnavailable` naming the reward URL(s) when rollout samples came back without
    a reward (OpenRLHF's generator logs the failure at INFO and moves on)."""
    missing = sum(1 for sample in samples if sample.rewards is None)
    if not missing or not reward_urls:
        return
    causes = "; ".join(f"{url}: {probe_reward_url(url)}" for url in reward_urls)
    raise RewardUnavailable(f"no reward for {missing} of {len(samples)} rollout samples from --reward.remote_url {causes}")
