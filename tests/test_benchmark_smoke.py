"""A small run of the benchmark's machinery (benchmarks/run.py), so that it cannot rot.

Two subjects of three pictures and one prompt, on an emulator whose trainings take half a
second. The pipeline side always runs; the SDK baseline runs too when ``novita-client`` (the
``bench`` extra) is installed. Only the standard library measures: no psutil needed.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_smoke(tmp_path: Path) -> None:
    run = _load("run")
    lib = sys.modules["benchlib"]
    workload = lib.Workload(subjects=2, images=3, prompts=1)
    emulator = lib.EmulatorSettings(
        latency=0.01, upload_bandwidth=10_000_000, queue_seconds=0.1, train_seconds=0.5,
        deploy_seconds=0.2, generation_queue_seconds=0.1, generation_seconds=0.2,
        txt2img_images_per_minute=60,
    )
    pipeline = lib.PipelineSettings(
        poll_interval_min=0.2, poll_interval_max=0.5, generation_poll_interval=0.2
    )
    with_sdk = run.sdk_available()
    results = run.bench(
        [workload], {workload.name} if with_sdk else set(), tmp_path, emulator, pipeline,
        sdk_pool=2, log=False,
    )

    ours = results[0]
    assert ours.client == "pipeline" and ours.returncode == 0
    assert ours.pictures_written == ours.pictures_expected == 2
    assert ours.lower_bound["rate"] == 0 and ours.lower_bound["bound"] > 0.8
    assert ours.ratio_to_bound >= 1
    assert ours.peak_rss_mb > 0 and ours.cpu_seconds > 0
    assert 0 < ours.cpu_share_of_wall < 2
    per_subject = ours.requests_per_subject
    assert per_subject["upload PUT"] == per_subject["upload URL"] == 3
    assert per_subject["create training"] == 1 and per_subject["txt2img"] == 1
    assert ours.status_polling["cycles"] >= 1
    assert ours.uploads == {"files": 6, "uploaded": 6, "identical": 6, "bytes_identical": True}

    line = run.summary_line(ours)
    assert "pipeline" in line and "ratio" in line
    tables = _load("tables").markdown({"results": [asdict(r) for r in results]})
    assert "| 2x3x1 | pipeline |" in tables and "| upload PUT | 3 |" in tables

    if with_sdk:
        sdk = results[1]
        assert sdk.client.startswith("sdk") and sdk.returncode == 0
        assert sdk.pictures_written == 2
        assert sdk.requests_per_subject["upload PUT"] == 3
        assert sdk.uploads["uploaded"] == 6 and not sdk.uploads["bytes_identical"]
        assert sdk.extra["wall_vs_pipeline"] > 0
    else:
        assert len(results) == 1
