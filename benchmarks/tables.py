"""Markdown tables of a results file written by ``run.py``.

    .venv/bin/python benchmarks/tables.py [benchmarks/results.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROUTES = (
    "upload URL", "upload PUT", "create training", "task list", "training status",
    "model list", "LoRA download", "txt2img", "task result", "picture download", "total",
)


def _main_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| workload | client | wall (s) | bound (s): chain + rate | wall / bound "
        "| SDK / pipeline | CPU (s) | CPU / wall | peak RSS (MB) | requests / subject "
        "| pictures | uploads byte-identical | 429s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        bound = r["lower_bound"]
        versus = r["extra"].get("wall_vs_pipeline")
        lines.append(
            f"| {r['workload']} | {r['client']} | {r['wall']:.1f} "
            f"| {bound['bound']:.1f} = {bound['chain']:.1f} + {bound['rate']:.0f} "
            f"| {r['ratio_to_bound']:.2f} | {f'{versus:.2f}x' if versus else ''} "
            f"| {r['cpu_seconds']:.1f} | {r['cpu_share_of_wall']:.1%} | {r['peak_rss_mb']:.0f} "
            f"| {r['requests_per_subject']['total']:.1f} "
            f"| {r['pictures_written']}/{r['pictures_expected']} "
            f"| {r['uploads']['identical']}/{r['uploads']['files']} | {r['rate_limited_429']} |"
        )
    return lines


def _routes_table(results: list[dict[str, Any]]) -> list[str]:
    heads = [f"{r['workload']} {r['client']}" for r in results]
    lines = ["| route | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for route in ROUTES:
        cells = [f"{r['requests_per_subject'].get(route, 0):g}" for r in results]
        lines.append(f"| {route} | " + " | ".join(cells) + " |")
    return lines


def _polling_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| workload | client | poll cycles | requests per cycle: mean | max "
        "| most trainings in flight | requests in that cycle (task-list pages) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p = r["status_polling"]
        lines.append(
            f"| {r['workload']} | {r['client']} | {p.get('cycles', 0)} "
            f"| {p.get('requests_per_cycle_mean', 0)} | {p.get('requests_per_cycle_max', 0)} "
            f"| {p.get('max_in_flight', 0)} | {p.get('requests_at_max_in_flight', 0)} "
            f"({p.get('list_pages_at_max_in_flight', 0)}) |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    results = report["results"]
    parts = [_main_table(results), _routes_table(results), _polling_table(results)]
    return "\n\n".join("\n".join(part) for part in parts) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path(__file__).with_name("results.json")
    sys.stdout.write(markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
