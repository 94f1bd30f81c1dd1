"""How long a subject waits for its pictures once its model is ready, from a run's state.

    .venv/bin/python benchmarks/run.py --workloads 20x20x2 --sdk-workloads '' \\
        --images-per-minute 20 --json /tmp/ttp.json
    .venv/bin/python benchmarks/time_to_pictures.py /tmp/lora-bench/pipeline-20x20x2/state/state.db

Prints, over the subjects that finished: the mean and the longest wait from SERVING to done,
and how often two subjects finished in the order their models became ready (1.0: the
generation slots went to subjects first come, first served).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import sys
from statistics import mean


def main(path: str) -> dict[str, float]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT serving_at, finished_at FROM subjects WHERE state = 'done'"
        " AND serving_at IS NOT NULL AND finished_at IS NOT NULL"
    ).fetchall()
    db.close()
    waits = [finished - serving for serving, finished in rows]
    pairs = [(a, b) for a, b in itertools.combinations(rows, 2) if a[0] != b[0]]
    in_order = sum((a[0] < b[0]) == (a[1] <= b[1]) for a, b in pairs)
    return {
        "subjects": len(rows),
        "mean_wait_s": round(mean(waits), 1) if waits else 0.0,
        "longest_wait_s": round(max(waits), 1) if waits else 0.0,
        "finished_in_ready_order": round(in_order / len(pairs), 3) if pairs else 1.0,
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(main(sys.argv[1])) + "\n")
