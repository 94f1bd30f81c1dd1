"""A local stand-in of the hosted training API (``aiohttp.web``), faithful to its contract.

Client code written for the hosted service runs unchanged against its base URL. State
moves with an injectable clock; faults (429, 5xx, dropped connections, slow answers,
failed/canceled trainings, stuck deployments, failed generations) are injected on demand.

    from pipeline.emulator import EmulatorConfig, serve_emulator

    async with serve_emulator(EmulatorConfig(train_seconds=5)) as server:
        ...  # point the client at server.base_url

Modules: ``config`` (settings and CLI flags), ``core`` (the Emulator), ``store`` (state and
lazy transitions), ``*_requests`` and ``validation`` (request checks), ``handlers_*``
(routes), ``responses`` (bodies), ``middleware`` and ``faults`` (auth, errors, faults),
``signing`` (presigned URLs), ``images`` and ``safetensors`` (files served), ``webhooks``,
``ratelimit``, ``pagination``, ``routes`` (the app) and ``server`` (sockets).
"""

from __future__ import annotations

from .config import EmulatorConfig, add_cli_arguments, config_from_args
from .core import Emulator
from .counters import Counters
from .routes import create_app
from .server import EmulatorHandle, main, run_emulator, run_from_args, serve_emulator

__all__ = [
    "Counters",
    "Emulator",
    "EmulatorConfig",
    "EmulatorHandle",
    "add_cli_arguments",
    "config_from_args",
    "create_app",
    "main",
    "run_emulator",
    "run_from_args",
    "serve_emulator",
]
