"""The pipeline against a script around the official SDK, on one emulator, in one run.

    make bench                      # installs the bench extra, then runs this with defaults
    .venv/bin/python benchmarks/run.py [--workloads 20x20x4,200x20x2,1000x10x1]
        [--sdk-workloads 20x20x4] [--sdk-pool 8] [--workdir /tmp/lora-bench]
        [--json benchmarks/results.json]

Starts the emulator in its own process (``emulator_server.py``, realistic but scaled
settings: see ``EmulatorSettings``), then for each workload resets it and runs
``lora-pipeline run`` as a child process, and for the SDK workloads resets it again and runs
``sdk_baseline.py``. Each child's wall time, CPU and peak RSS come from ``os.wait4``;
requests, uploads and polling from the emulator. Prints a table and writes every figure as
JSON. See benchmarks/README.md for the settings, the lower bound and the results.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    EmulatorProcess,
    EmulatorSettings,
    Measurement,
    PipelineSettings,
    Workload,
    machine,
    measure,
    prepare_inbox,
    run_pipeline,
    run_sdk,
)

DEFAULT_WORKLOADS = "20x20x4,200x20x2,1000x10x1"


def sdk_available() -> bool:
    try:
        import novita_client  # noqa: F401
    except ImportError:
        return False
    return True


def bench(
    workloads: list[Workload],
    sdk_workloads: set[str],
    workdir: Path,
    emulator_settings: EmulatorSettings,
    pipeline_settings: PipelineSettings,
    sdk_pool: int,
    log: bool = True,
    profile: Path | None = None,
) -> list[Measurement]:
    """Every measurement, pipeline then SDK per workload, against one emulator process."""
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[Measurement] = []
    with EmulatorProcess(emulator_settings, workdir / "emulator.log") as emulator:
        for workload in workloads:
            inbox = prepare_inbox(workdir, workload)
            emulator.reset()
            target = profile / f"profile-{workload.name}.txt" if profile else None
            child, outbox = run_pipeline(emulator, workload, inbox, workdir, pipeline_settings,
                                         target)
            results.append(measure("pipeline", emulator, workload, inbox, child, outbox))
            if log:
                print(summary_line(results[-1]), flush=True)
            if workload.name in sdk_workloads:
                emulator.reset()
                child, outbox = run_sdk(emulator, workload, inbox, workdir, sdk_pool,
                                        pipeline_settings.poll_interval_min)
                sdk = measure(f"sdk (pool {sdk_pool})", emulator, workload, inbox, child, outbox)
                sdk.extra["script_summary"] = child.stdout.strip()[-500:]
                sdk.extra["wall_vs_pipeline"] = round(sdk.wall / results[-1].wall, 2)
                results.append(sdk)
                if log:
                    print(summary_line(sdk), flush=True)
    return results


def summary_line(m: Measurement) -> str:
    polls = m.status_polling
    return (
        f"{m.workload:>11} {m.client:<14} wall {m.wall:7.1f} s"
        f"  bound {m.lower_bound['bound']:6.1f} s"
        f"  ratio {m.ratio_to_bound:5.2f}  cpu {m.cpu_seconds:6.1f} s ({m.cpu_share_of_wall:.0%})"
        f"  rss {m.peak_rss_mb:6.1f} MB  req/subj {m.requests_per_subject['total']:6.1f}"
        f"  poll req/cycle mean {polls.get('requests_per_cycle_mean', 0)}"
        f" max {polls.get('requests_per_cycle_max', 0)} @ {polls.get('max_in_flight', 0)} in flight"
        f"  pictures {m.pictures_written}/{m.pictures_expected}"
        f"  bytes identical {m.uploads['identical']}/{m.uploads['files']}"
        f"  exit {m.returncode}"
    )


def source_state() -> dict[str, object]:
    """The commit measured, and the files that differed from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10, check=False)
        except OSError:
            return ""
        return done.stdout.strip()

    changed = [line.split(maxsplit=1)[-1] for line in git("status", "--short").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed": changed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=DEFAULT_WORKLOADS,
                        help="comma-separated SUBJECTSxIMAGESxPROMPTS")
    parser.add_argument("--sdk-workloads", default="20x20x4",
                        help="workloads the SDK baseline also runs ('' for none)")
    parser.add_argument("--sdk-pool", type=int, default=8, help="the SDK script's threads")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lora-bench"))
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results.json"))
    parser.add_argument("--images-per-minute", type=int,
                        default=EmulatorSettings.txt2img_images_per_minute)
    parser.add_argument("--upload-concurrency", type=int,
                        default=PipelineSettings.upload_concurrency)
    parser.add_argument("--train-seconds", type=float, default=EmulatorSettings.train_seconds)
    parser.add_argument("--poll-interval-min", type=float,
                        default=PipelineSettings.poll_interval_min)
    parser.add_argument("--poll-interval-max", type=float,
                        default=PipelineSettings.poll_interval_max)
    parser.add_argument("--profile", type=Path, default=None,
                        help="run the pipeline under py-spy, writing collapsed stacks here "
                             "(figures then include py-spy: for diagnosis only)")
    args = parser.parse_args(argv)

    workloads = [Workload.parse(w) for w in args.workloads.split(",") if w]
    sdk_workloads = {w for w in args.sdk_workloads.split(",") if w}
    if sdk_workloads and not sdk_available():
        print("novita-client is not installed (pip install -e '.[bench]'): pipeline only")
        sdk_workloads = set()
    emulator_settings = replace(EmulatorSettings(), train_seconds=args.train_seconds,
                                txt2img_images_per_minute=args.images_per_minute)
    pipeline_settings = replace(
        PipelineSettings(), upload_concurrency=args.upload_concurrency,
        poll_interval_min=args.poll_interval_min, poll_interval_max=args.poll_interval_max,
    )
    started = time.monotonic()
    results = bench(workloads, sdk_workloads, args.workdir, emulator_settings,
                    pipeline_settings, args.sdk_pool, profile=args.profile)
    report = {
        "machine": machine(),
        "source": source_state(),
        "emulator": asdict(emulator_settings),
        "pipeline": asdict(pipeline_settings),
        "sdk_pool": args.sdk_pool,
        "command": " ".join(["benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "total_seconds": round(time.monotonic() - started, 1),
        "results": [asdict(r) for r in results],
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"figures written to {args.json} ({report['total_seconds']} s in all)")
    return 0 if all(r.returncode == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
