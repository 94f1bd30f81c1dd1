"""The benchmark's machinery: the emulator process, datasets, the two clients as measured
child processes, the lower bound and the figures. ``run.py`` drives it; the smoke test
(``tests/test_benchmark_smoke.py``) runs it on a tiny workload.

Only the standard library and the project are needed here: child time, peak RSS and CPU come
from ``os.wait4`` (the child's own ``rusage``), requests from the emulator's counters.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
EMULATOR_SCRIPT = BENCH_DIR / "emulator_server.py"
SDK_SCRIPT = BENCH_DIR / "sdk_baseline.py"
API_KEY = "sk-bench-0000000000"
JOB_NAME = "bench"
PROMPTS = (
    "{instance_prompt}, studio portrait, soft light, 85mm",
    "{instance_prompt} as an astronaut on the moon, cinematic lighting",
    "{instance_prompt} in a cozy cafe, film photo, warm tones",
    "{instance_prompt} on a mountain trail at sunrise, wide shot",
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
#: The account's rate-limit window (contract §8: images per minute).
WINDOW_SECONDS = 60.0


# --- settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EmulatorSettings:
    """What the emulator is told (each field is a ``lora-pipeline emulator`` flag)."""

    latency: float = 0.1
    upload_bandwidth: float = 512 * 1024
    queue_seconds: float = 5.0
    train_seconds: float = 40.0
    deploy_seconds: float = 10.0
    generation_queue_seconds: float = 1.0
    generation_seconds: float = 4.0
    txt2img_images_per_minute: int = 300
    seed: int = 1

    def flags(self) -> list[str]:
        out = []
        for name, value in asdict(self).items():
            out += ["--" + name.replace("_", "-"), str(value)]
        return out


@dataclass(frozen=True)
class PipelineSettings:
    """``LORA_*`` settings given to ``lora-pipeline run`` (the rest keep their defaults)."""

    poll_interval_min: float = 1.0
    poll_interval_max: float = 10.0
    generation_poll_interval: float = 2.0
    upload_concurrency: int = 32
    download_concurrency: int = 8
    max_connections: int = 64

    def env(self, base_url: str, state_dir: Path, images_per_minute: int) -> dict[str, str]:
        env = {f"LORA_{k.upper()}": str(v) for k, v in asdict(self).items()}
        env.update(
            LORA_API_KEY=API_KEY, LORA_BASE_URL=base_url, LORA_STATE_DIR=str(state_dir),
            LORA_IMAGES_PER_MINUTE=str(images_per_minute), LORA_LOG_FORMAT="json",
        )
        return env


@dataclass(frozen=True)
class Workload:
    """``subjects`` x ``images`` per subject x ``prompts`` per subject (``image_num`` each)."""

    subjects: int
    images: int
    prompts: int
    image_num: int = 1

    @property
    def name(self) -> str:
        return f"{self.subjects}x{self.images}x{self.prompts}"

    @property
    def pictures(self) -> int:
        return self.subjects * self.prompts * self.image_num

    @classmethod
    def parse(cls, text: str) -> Workload:
        subjects, images, prompts = (int(part) for part in text.lower().split("x"))
        return cls(subjects, images, prompts)


# --- the emulator process ---------------------------------------------------------------


class EmulatorProcess:
    """``benchmarks/emulator_server.py`` in its own process, on a free loopback port."""

    def __init__(self, settings: EmulatorSettings, log_path: Path) -> None:
        self.settings = settings
        self._log = open(log_path, "wb")  # closed in stop()
        self._proc = subprocess.Popen(
            [sys.executable, str(EMULATOR_SCRIPT), "--port", "0", *settings.flags()],
            stdout=subprocess.PIPE, stderr=self._log, cwd=BENCH_DIR,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"the emulator did not start: {line!r} (see {log_path})")
        self.base_url = line.rsplit(" ", 1)[-1]

    def _request(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.base_url + path, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self._request("POST", "/_emulator/bench/reset")

    def counters(self) -> dict[str, Any]:
        return self._request("GET", "/_emulator/counters")  # type: ignore[no-any-return]

    def assets(self) -> list[dict[str, Any]]:
        return self._request("GET", "/_emulator/bench/assets")["assets"]  # type: ignore[no-any-return]

    def polls(self) -> list[dict[str, Any]]:
        return self._request("GET", "/_emulator/bench/polls")["polls"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._log.close()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- datasets ---------------------------------------------------------------------------


def prepare_inbox(root: Path, workload: Workload) -> Path:
    """A folder of ``workload.subjects`` sample subjects (made once, then reused)."""
    from pipeline.cli.samples import create_samples

    inbox = root / f"inbox-{workload.subjects}x{workload.images}"
    done = root / f"inbox-{workload.subjects}x{workload.images}.complete"
    if not done.exists():
        shutil.rmtree(inbox, ignore_errors=True)
        create_samples(inbox, count=workload.subjects, images_per_subject=workload.images,
                       include_bad=False)
        done.write_text("ok\n")
    return inbox


def _images(inbox: Path) -> list[Path]:
    return sorted(p for p in inbox.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)


def disk_digests(inbox: Path) -> Counter[str]:
    """sha256 of every picture in the inbox, with multiplicity."""
    return Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in _images(inbox))


def smallest_largest_image(inbox: Path) -> int:
    """Over the subjects, the smallest of each subject's largest picture (bytes)."""
    largest: dict[str, int] = {}
    for path in _images(inbox):
        largest[path.parent.name] = max(largest.get(path.parent.name, 0), path.stat().st_size)
    return min(largest.values())


def write_job(path: Path, inbox: Path, outbox: Path, workload: Workload) -> Path:
    prompts = ", ".join(json.dumps(p) for p in PROMPTS[: workload.prompts])
    path.write_text(
        f"""[job]
name = "{JOB_NAME}"
inbox = {json.dumps(str(inbox))}
outbox = {json.dumps(str(outbox))}
settle_seconds = 0

[training]
kind = "subject"
base_model = "v1-5-pruned-emaonly"
instance_prompt = "a close photo of ohwx {{class_word}}"
class_prompt = "person"
class_word = "person"
max_train_steps = 500

[generation]
model_name = "realisticVisionV51_v51VAE_94301.safetensors"
lora_strength = 0.8
image_num = {workload.image_num}
prompts = [{prompts}]
""",
        encoding="utf-8",
    )
    return path


# --- measured children ------------------------------------------------------------------


@dataclass
class Child:
    """What one measured child process took."""

    wall: float
    cpu_user: float
    cpu_system: float
    peak_rss_mb: float
    returncode: int
    stdout: str = ""
    loadavg_before: float = 0.0  # 1-minute load average as the child started

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_system


def run_child(cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> Child:
    """Run ``cmd`` to completion; time, CPU and peak RSS of that child alone (``wait4``)."""
    out_path = log_path.with_suffix(".out")
    load = os.getloadavg()[0]
    with open(log_path, "wb") as err, open(out_path, "wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Child(
        wall=wall, cpu_user=usage.ru_utime, cpu_system=usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024, returncode=proc.returncode,
        stdout=out_path.read_text(errors="replace"), loadavg_before=load,
    )


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_")}
    env.update(extra)
    return env


def pipeline_command() -> list[str]:
    script = Path(sys.executable).with_name("lora-pipeline")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "pipeline.cli.commands"]


def run_pipeline(emulator: EmulatorProcess, workload: Workload, inbox: Path, workdir: Path,
                 settings: PipelineSettings, profile: Path | None = None) -> tuple[Child, Path]:
    """``lora-pipeline run`` on a fresh state and outbox; returns the child and the outbox.

    With ``profile``, the run goes under ``py-spy record`` (collapsed stacks written there):
    its figures then include py-spy's own cost and are not to be reported.
    """
    run_dir = workdir / f"pipeline-{workload.name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    outbox = run_dir / "outbox"
    job = write_job(run_dir / "job.toml", inbox, outbox, workload)
    env = _child_env(settings.env(emulator.base_url, run_dir / "state",
                                  emulator.settings.txt2img_images_per_minute))
    settings_file = run_dir / "settings.env"  # empty: every setting comes from ``env``
    settings_file.write_text("# every setting comes from the environment\n")
    cmd = [*pipeline_command(), "--config", str(settings_file), "run", str(job),
           "--max-wait", "7200"]
    if profile is not None:
        py_spy = Path(sys.executable).with_name("py-spy")
        cmd = [str(py_spy), "record", "--format", "raw", "--rate", "50", "-o", str(profile),
               "--", *cmd]
    return run_child(cmd, env, run_dir, run_dir / "pipeline.log"), outbox / JOB_NAME


def run_sdk(emulator: EmulatorProcess, workload: Workload, inbox: Path, workdir: Path,
            pool: int, poll: float) -> tuple[Child, Path]:
    """The SDK script (``sdk_baseline.py``) with ``pool`` threads; returns child and outbox."""
    run_dir = workdir / f"sdk{pool}-{workload.name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    outbox = run_dir / "outbox"
    cmd = [sys.executable, str(SDK_SCRIPT), "--base-url", emulator.base_url,
           "--api-key", API_KEY, "--inbox", str(inbox), "--outbox", str(outbox),
           "--pool", str(pool), "--poll", str(poll), "--image-num", str(workload.image_num)]
    for prompt in PROMPTS[: workload.prompts]:
        cmd += ["--prompt", prompt]
    return run_child(cmd, _child_env({}), run_dir, run_dir / "sdk.log"), outbox


def count_pictures(outbox: Path) -> int:
    return sum(1 for p in outbox.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
               and not p.name.startswith(".") and not p.name.endswith(".safetensors"))


# --- the lower bound --------------------------------------------------------------------


def lower_bound(
    settings: EmulatorSettings, workload: Workload, image_bytes: int
) -> dict[str, float]:
    """The time no client can beat on this emulator (seconds).

    chain = the unavoidable path of one subject, every request paying ``latency`` L:
        2L + image_bytes / bandwidth       its uploads (URL call, then the PUT; all of a
                                           subject's pictures can go at once, the emulator
                                           throttles each connection, not the sum)
      + L + queue + train + deploy         create, then QUEUING -> TRAINING -> SERVING
      + L + generation_queue + generation  txt2img, QUEUED -> PROCESSING -> SUCCEED
      + L                                  the picture's download
    rate = 60 s x (ceil(M / R) - 1), M = subjects x prompts x image_num pictures, R the
           account's images per minute: at most R pictures start in any 60 s window, and
           none before the first model is SERVING, so the last batch starts that much later.
    bound = chain + rate (= the chain alone while M <= R).
    """
    s = settings
    latency = s.latency
    upload = 2 * latency + image_bytes / s.upload_bandwidth
    train = latency + s.queue_seconds + s.train_seconds + s.deploy_seconds
    generate = latency + s.generation_queue_seconds + s.generation_seconds + latency
    chain = upload + train + generate
    windows = math.ceil(workload.pictures / s.txt2img_images_per_minute)
    rate = WINDOW_SECONDS * (windows - 1)
    return {"chain": chain, "rate": rate, "bound": chain + rate}


# --- figures ----------------------------------------------------------------------------

_ROUTE_NAMES = {
    "POST /v3/assets/training_dataset": "upload URL",
    "PUT /_s3/training/{assets_id}.{ext}": "upload PUT",
    "POST /v3/training/subject": "create training",
    "GET /v3/training": "task list",
    "GET /v3/training/subject": "training status",
    "GET /v3/model": "model list",
    "GET /_s3/models/{name}": "LoRA download",
    "POST /v3/async/txt2img": "txt2img",
    "GET /v3/async/task-result": "task result",
    "GET /_s3/images/{task_id}/{index}.{ext}": "picture download",
}


def requests_per_subject(counters: dict[str, Any], subjects: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for route, count in sorted(counters["requests"].items()):
        if "/_emulator/" in route:
            continue
        out[_ROUTE_NAMES.get(route, route)] = round(count / subjects, 2)
    out["total"] = round(sum(out.values()), 2)
    return out


def poll_cycles(polls: list[dict[str, Any]]) -> dict[str, Any]:
    """Group status requests into cycles: a task-list read of the first page opens one.

    Without any task-list read (the SDK), a cycle is every status request in one second.
    """
    if not polls:
        return {"cycles": 0}
    cycles: list[list[dict[str, Any]]] = []
    if any(p["kind"] == "list" for p in polls):
        for record in polls:
            if (record["kind"] == "list" and not record["cursor"]) or not cycles:
                cycles.append([])
            cycles[-1].append(record)
    else:
        start = polls[0]["t"]
        bins: dict[int, list[dict[str, Any]]] = {}
        for record in polls:
            bins.setdefault(int(record["t"] - start), []).append(record)
        cycles = list(bins.values())
    busy = [c for c in cycles if max(r["in_flight"] for r in c) > 0]
    sizes = [len(c) for c in busy] or [0]
    peak = max(busy, key=lambda c: max(r["in_flight"] for r in c), default=[])
    return {
        "cycles": len(busy),
        "requests_per_cycle_mean": round(sum(sizes) / len(sizes), 2),
        "requests_per_cycle_max": max(sizes),
        "max_in_flight": max((r["in_flight"] for r in peak), default=0),
        "requests_at_max_in_flight": len(peak),
        "list_pages_at_max_in_flight": sum(1 for r in peak if r["kind"] == "list"),
    }


def byte_identity(inbox: Path, assets: list[dict[str, Any]]) -> dict[str, Any]:
    """Did the emulator receive exactly the files on disk, each once?"""
    on_disk = disk_digests(inbox)
    received = Counter(a["sha256"] for a in assets if a["uploaded"])
    identical = sum((on_disk & received).values())
    return {
        "files": sum(on_disk.values()),
        "uploaded": sum(received.values()),
        "identical": identical,
        "bytes_identical": identical == sum(on_disk.values()) == sum(received.values()),
    }


@dataclass
class Measurement:
    """Every figure of one client on one workload."""

    client: str
    workload: str
    subjects: int
    pictures_expected: int
    pictures_written: int
    returncode: int
    wall: float
    lower_bound: dict[str, float]
    ratio_to_bound: float
    cpu_seconds: float
    cpu_share_of_wall: float
    peak_rss_mb: float
    requests_per_subject: dict[str, float]
    status_polling: dict[str, Any]
    uploads: dict[str, Any]
    rate_limited_429: int
    extra: dict[str, Any] = field(default_factory=dict)


def measure(client: str, emulator: EmulatorProcess, workload: Workload, inbox: Path,
            child: Child, outbox: Path) -> Measurement:
    """Read the emulator's view of the run just finished and assemble its figures."""
    counters = emulator.counters()
    bound = lower_bound(emulator.settings, workload, smallest_largest_image(inbox))
    return Measurement(
        client=client,
        workload=workload.name,
        subjects=workload.subjects,
        pictures_expected=workload.pictures,
        pictures_written=count_pictures(outbox),
        returncode=child.returncode,
        wall=round(child.wall, 2),
        lower_bound={k: round(v, 2) for k, v in bound.items()},
        ratio_to_bound=round(child.wall / bound["bound"], 3),
        cpu_seconds=round(child.cpu, 2),
        cpu_share_of_wall=round(child.cpu / child.wall, 3),
        peak_rss_mb=round(child.peak_rss_mb, 1),
        requests_per_subject=requests_per_subject(counters, workload.subjects),
        status_polling=poll_cycles(emulator.polls()),
        uploads=byte_identity(inbox, emulator.assets()),
        rate_limited_429=int(counters.get("rate_limited", 0)),
        extra={"loadavg_before": round(child.loadavg_before, 2)},
    )


def machine() -> dict[str, Any]:
    """nproc, memory, Python: psutil when the bench extra is installed, else /proc."""
    import platform

    try:
        import psutil

        memory = psutil.virtual_memory().total / 1024**3
    except ImportError:
        memory = 0.0
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) / 1024 / 1024

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": model,
    }
