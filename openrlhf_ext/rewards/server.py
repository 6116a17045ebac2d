"""Standalone math reward server speaking OpenRLHF's remote reward-model protocol (docs/rewards.md).

    python -m openrlhf_ext.rewards.server --host 127.0.0.1 --port 5000 --workers 4

then train with ``--reward.remote_url http://HOST:5000/get_reward`` (several servers: comma-separated
URLs, OpenRLHF shards batches across them). Scoring runs in this process's worker pool, so it can sit on
CPU nodes apart from the GPUs.

Protocol (as ``openrlhf.utils.agent.SingleTurnAgentExecutor._fetch_rewards_via_http`` speaks it):
``POST /get_reward`` (``POST /`` too) with JSON ``{"query": [str], "prompts": [str], "labels": [str]}``;
``query`` is prompt + response, ``prompts`` (optional) lets the server cut the prompt off. The answer is
``{"rewards": [float], "scores": [float], "extra_logs": {name: [float]}}``, with the meanings of
:mod:`openrlhf_ext.rewards.math_reward_func`. A malformed request gets HTTP 400 with a message.

``GET /health`` answers ``{"status": "ok", "workers": [pid, ...], "busy": [pid, ...], "counters": {...}}``. SIGTERM or
SIGINT stops accepting requests, kills the workers and exits with status 0. Defaults for the reward
settings come from ``OPENRLHF_EXT_REWARD_*`` (:class:`~openrlhf_ext.rewards.config.RewardConfig`),
and the flags below override them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
from collections.abc import Sequence

from aiohttp import web

from openrlhf_ext.data.templates import TEMPLATE_NAMES
from openrlhf_ext.rewards.config import RewardConfig
from openrlhf_ext.rewards.pool import ScoringPool
from openrlhf_ext.rewards.scoring import score_queries

logger = logging.getLogger("openrlhf_ext.rewards.server")

_POOL_KEY = web.AppKey("pool", ScoringPool)
_CONFIG_KEY = web.AppKey("config", RewardConfig)


class BadRequest(ValueError):
    pass


def parse_request(data: object) -> tuple[list[str], list[str], list[str]]:
    """Validated ``(queries, prompts, labels)`` of a reward request; raises :class:`BadRequest`."""
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    queries, labels = data.get("query"), data.get("labels")
    prompts = data.get("prompts")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise BadRequest("'query' must be a list of strings")
    if not isinstance(labels, list) or len(labels) != len(queries):
        raise BadRequest(f"'labels' must be a list with one label per query ({len(queries)})")
    if prompts is None:
        prompts = [""] * len(queries)
    if not isinstance(prompts, list) or len(prompts) != len(queries) or not all(isinstance(p, str) for p in prompts):
        raise BadRequest(f"'prompts' must be a list of {len(queries)} strings when given")
    for i, label in enumerate(labels):
        # A null or object label would be stringified ("None", "{...}") and could match an answer.
        if isinstance(label, bool) or not isinstance(label, str | int | float):
            raise BadRequest(f"'labels' must be strings or numbers; labels[{i}] is {json.dumps(label)[:80]}")
    return queries, prompts, [str(label) for label in labels]


async def _get_reward(request: web.Request) -> web.Response:
    try:
        queries, prompts, labels = parse_request(await request.json())
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return web.json_response({"error": str(exc)}, status=400)
    except RecursionError:  # the JSON decoder recurses once per nesting level
        return web.json_response({"error": "request body: JSON nested too deep"}, status=400)
    app = request.app
    answer = await asyncio.get_running_loop().run_in_executor(
        None, score_queries, queries, prompts, labels, app[_CONFIG_KEY], app[_POOL_KEY]
    )
    return web.json_response(answer)


async def _health(request: web.Request) -> web.Response:
    pool = request.app[_POOL_KEY]
    return web.json_response(
        {"status": "ok", "workers": pool.worker_pids(), "busy": pool.busy_pids(), "counters": pool.counters.snapshot()}
    )


def make_app(pool: ScoringPool, config: RewardConfig) -> web.Application:
    """The aiohttp application (also usable in-process, e.g. with aiohttp's test client)."""
    app = web.Application(client_max_size=256 * 1024 * 1024)  # a batch of long responses is large
    app[_POOL_KEY] = pool
    app[_CONFIG_KEY] = config
    app.router.add_post("/get_reward", _get_reward)
    app.router.add_post("/", _get_reward)
    app.router.add_get("/health", _health)
    return app


async def serve(host: str, port: int, config: RewardConfig) -> None:
    """Run until SIGTERM / SIGINT, then shut down cleanly."""
    pool = ScoringPool(workers=config.workers)
    runner = web.AppRunner(make_app(pool, config), access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        logger.info("reward settings: %s", config)
        # The exact line tests and launch scripts wait for (it carries the port when --port 0).
        print(f"openrlhf_ext reward server listening on http://{bound[0]}:{bound[1]}/get_reward", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logger.info("reward server: signal received, shutting down")
    finally:
        await runner.cleanup()
        pool.close()


def main(argv: Sequence[str] | None = None) -> None:
    env_config = RewardConfig.from_env()
    parser = argparse.ArgumentParser(description="OpenRLHF-compatible math reward server (openrlhf_ext)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port (printed on start)")
    parser.add_argument("--workers", type=int, default=env_config.workers, help="scoring worker processes")
    parser.add_argument("--timeout", type=float, default=env_config.timeout_s, help="hard limit per response, s")
    parser.add_argument("--signed", action=argparse.BooleanOptionalAction, default=env_config.signed)
    parser.add_argument("--format-coef", type=float, default=env_config.format_coef)
    parser.add_argument("--template", choices=TEMPLATE_NAMES, default=env_config.template)
    parser.add_argument("--fallback", action=argparse.BooleanOptionalAction, default=env_config.fallback)
    parser.add_argument("--strict", action=argparse.BooleanOptionalAction, default=env_config.strict,
                        help="Dr. GRPO's strict per-template answer extraction")
    args = parser.parse_args(argv)
    config = dataclasses.replace(
        env_config,
        workers=args.workers,
        timeout_s=args.timeout,
        signed=args.signed,
        format_coef=args.format_coef,
        template=args.template,
        fallback=args.fallback,
        strict=args.strict,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.host, args.port, config))


if __name__ == "__main__":
    main()
