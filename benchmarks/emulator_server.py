"""The emulator in its own process, for the benchmark: ``lora-pipeline emulator`` plus two
read-only views the benchmark needs and the stock emulator does not serve.

    python benchmarks/emulator_server.py --port 0 --latency 0.1 --train-seconds 40 ...

Every ``EmulatorConfig`` flag of ``lora-pipeline emulator`` is accepted unchanged. Added
routes (under ``/_emulator/``, so they skip latency, faults and auth like the stock ones):

- ``GET /_emulator/bench/assets``: every upload slot with the sha256 and size of the bytes
  the PUT delivered (byte identity against the files on disk);
- ``GET /_emulator/bench/polls``: one record per training-status request (task list page or
  detail call): when, which, the list cursor, and how many trainings were in flight (not yet
  SUCCESS+SERVING, FAILED or CANCELED) on the emulator at that moment;
- ``POST /_emulator/bench/reset``: the stock reset plus forgetting the poll records.

Prints ``Emulator listening on <base url>`` once the socket is bound, then serves until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from pipeline.emulator import Emulator, add_cli_arguments, config_from_args, create_app

POLL_PATHS = ("/v3/training", "/v3/training/subject", "/v3/training/style")
SETTLED = ("FAILED", "CANCELED")
RECORDS: web.AppKey[list[dict[str, Any]]] = web.AppKey("bench_records", list)
EMULATOR: web.AppKey[Emulator] = web.AppKey("bench_emulator", Emulator)


def _in_flight(emulator: Emulator) -> int:
    count = 0
    for training in emulator.trainings.values():
        view = emulator.training_view(training)
        if not view.serving and view.status not in SETTLED:
            count += 1
    return count


@web.middleware
async def record_polls(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Note every GET of the task list or of a training's status before it is served."""
    if request.method == "GET" and request.path in POLL_PATHS:
        request.app[RECORDS].append(
            {
                "t": time.time(),
                "kind": "list" if request.path == "/v3/training" else "detail",
                "cursor": request.query.get("pagination.cursor", ""),
                "in_flight": _in_flight(request.app[EMULATOR]),
            }
        )
    return await handler(request)


async def bench_assets(request: web.Request) -> web.Response:
    assets = request.app[EMULATOR].assets.values()
    return web.json_response(
        {
            "assets": [
                {"assets_id": a.assets_id, "extension": a.extension, "uploaded": a.uploaded,
                 "size": a.size, "sha256": a.sha256}
                for a in assets
            ]
        }
    )


async def bench_polls(request: web.Request) -> web.Response:
    return web.json_response({"polls": request.app[RECORDS]})


async def bench_reset(request: web.Request) -> web.Response:
    request.app[EMULATOR].reset()
    request.app[RECORDS].clear()
    return web.json_response({"reset": True})


def build_app(emulator: Emulator) -> web.Application:
    """The stock emulator application with the recording middleware and the bench routes."""
    app = create_app(emulator)
    app.middlewares.insert(0, record_polls)
    app[RECORDS] = []
    app[EMULATOR] = emulator
    app.router.add_get("/_emulator/bench/assets", bench_assets)
    app.router.add_get("/_emulator/bench/polls", bench_polls)
    app.router.add_post("/_emulator/bench/reset", bench_reset)
    return app


async def serve(args: argparse.Namespace) -> None:
    emulator = Emulator(config_from_args(args))
    runner = web.AppRunner(build_app(emulator), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, args.host, args.port, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        sys.stdout.write(f"Emulator listening on http://{host}:{port}\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_cli_arguments(parser)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
