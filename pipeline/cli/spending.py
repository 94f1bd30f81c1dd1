"""``spend`` and ``plan``: what a job paid for, and what its next pass would pay for.

Both only look: the state is opened read-only (never created, upgraded or locked), nothing
is recorded, and no network request is made. ``--json`` prints the data instead of lines.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

from ..clock import SystemClock
from ..config import Settings
from ..engine.plan import plan_pass
from ..inputs.photo_cache import CACHE_FILE, PhotoCache
from ..jobfile.loading import JobConfig
from ..store.location import open_reader, photo_cache_dir
from ..store.queries import SqlStore
from ..store.sqlite import SqliteStore
from ..views.plan import plan_data, print_plan
from ..views.spend import print_spend, spend_data
from ..views.summary import EXIT_OK


def spend(job: JobConfig, settings: Settings, console: Console, *, as_json: bool) -> int:
    """Print what the ledger holds for ``job``: per subject, the total, the ceilings."""
    with _state(job, settings) as store:
        data = spend_data(job, store)
    if as_json:
        print_json(console, data)
    else:
        print_spend(console, data)
    return EXIT_OK


def plan(job: JobConfig, settings: Settings, console: Console, *, as_json: bool) -> int:
    """Print what the next pass of ``job`` would pay for, paying and recording nothing."""
    with _state(job, settings) as store, \
            PhotoCache.open_read_only(photo_cache_dir(job, settings) / CACHE_FILE) as cache:
        data = plan_data(plan_pass(job, store, now=SystemClock().now(), cache=cache),
                         job.prices)
    if as_json:
        print_json(console, data)
    else:
        print_plan(console, data)
    return EXIT_OK


def _state(job: JobConfig, settings: Settings) -> SqlStore:
    """The job's state, read-only; an empty one in memory when it has none yet (nothing is
    written anywhere either way)."""
    return open_reader(job, settings) or SqliteStore(":memory:")


def print_json(console: Console, data: dict[str, Any]) -> None:
    # ASCII only (every other character escaped): nothing in it can act on a terminal.
    console.print(json.dumps(data, indent=2, ensure_ascii=True), soft_wrap=True)
