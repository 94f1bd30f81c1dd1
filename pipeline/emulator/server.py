"""Running the emulator on a real socket: in-process for tests and demos, or standalone.

    async with serve_emulator(EmulatorConfig(train_seconds=1)) as server:
        client = SomeClient(base_url=server.base_url)

``run_emulator`` is the blocking entry point behind ``lora-pipeline emulator``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from pydantic import ValidationError

from pipeline.clock import Clock

from .config import EmulatorConfig, add_cli_arguments, config_from_args
from .core import Emulator
from .routes import create_app

SHUTDOWN_TIMEOUT = 2.0


@dataclass(frozen=True)
class EmulatorHandle:
    """A running emulator: where to reach it and its state."""

    base_url: str
    emulator: Emulator
    host: str
    port: int

    def url(self, path: str) -> str:
        """``base_url`` joined with ``path`` (``"/v3/training"``)."""
        return self.base_url + path


@contextlib.asynccontextmanager
async def serve_emulator(
    config: EmulatorConfig | None = None,
    *,
    clock: Clock | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    emulator: Emulator | None = None,
) -> AsyncIterator[EmulatorHandle]:
    """Serve an emulator on ``host:port`` (0: a free port) until the block exits.

    Pass ``emulator`` to serve an existing one; else one is built from ``config`` and
    ``clock``.
    """
    served = emulator or Emulator(config, clock)
    runner = web.AppRunner(create_app(served), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield EmulatorHandle(f"http://{url_host}:{bound_port}", served, bound_host, bound_port)
    finally:
        await runner.cleanup()


async def _serve_until_stopped(config: EmulatorConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with serve_emulator(config, host=host, port=port) as server:
        sys.stdout.write(f"Emulator listening on {server.base_url}\n")
        sys.stdout.flush()
        await stop.wait()


def run_emulator(config: EmulatorConfig | None = None, host: str = "127.0.0.1",
                 port: int = 8080) -> None:
    """Serve until Ctrl-C or SIGTERM (blocking); prints the base URL once listening."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(config or EmulatorConfig(), host, port))


def run_from_args(args: argparse.Namespace) -> None:
    """:func:`run_emulator` with flags added by ``add_cli_arguments``."""
    host = getattr(args, "host", None) or "127.0.0.1"
    port = getattr(args, "port", None)
    run_emulator(config_from_args(args), host, 8080 if port is None else port)


def main(argv: list[str] | None = None) -> None:
    """``python -m pipeline.emulator [flags]``: parse every setting's flag and serve."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.emulator",
        description="Serve a local stand-in of the hosted LoRA training API.",
    )
    add_cli_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config_from_args(args)
    except ValidationError as exc:
        parser.error(str(exc))
    run_from_args(args)
