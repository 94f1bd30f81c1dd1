"""What the emulator has seen: requests per route, work created, bytes, injected faults.

Read by tests and benchmarks through :meth:`Counters.snapshot` or ``GET /_emulator/counters``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Counters:
    """Running totals; every field is JSON-able through :meth:`snapshot`."""

    requests: Counter[str] = field(default_factory=Counter)
    responses: Counter[str] = field(default_factory=Counter)
    trainings_created: Counter[str] = field(default_factory=Counter)
    generations_created: Counter[str] = field(default_factory=Counter)
    faults_injected: Counter[str] = field(default_factory=Counter)
    upload_urls_issued: int = 0
    uploads: int = 0
    bytes_received: int = 0
    images_requested: int = 0  # image_num of accepted generation requests
    images_generated: int = 0  # image_num of tasks seen SUCCEED (by a poll or the webhook)
    images_downloaded: int = 0
    models_downloaded: int = 0
    rate_limited: int = 0
    webhooks_delivered: int = 0
    webhooks_failed: int = 0

    def snapshot(self) -> dict[str, Any]:
        """A plain-dict copy: counter fields become ``{name: count}`` (tasks add ``total``)."""
        out: dict[str, Any] = {}
        for name, value in vars(self).items():
            out[name] = dict(value) if isinstance(value, Counter) else value
        for name in ("trainings_created", "generations_created"):
            out[name].setdefault("total", 0)
        return out
