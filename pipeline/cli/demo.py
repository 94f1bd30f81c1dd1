"""``lora-pipeline demo``: the whole flow on sample folders against the embedded emulator.

It makes a work folder with sample subjects (good ones, and folders of deliberately bad
files to show what the photo gate refuses) and a job with two txt2img prompts and an
img2img one (from a reference picture beside the job file), starts the emulator in-process
with short durations, runs one pass to completion and says where everything went. Nothing
leaves the machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image
from pydantic import SecretStr
from rich.console import Console

from ..config import Settings
from ..emulator import EmulatorConfig, serve_emulator
from ..engine.runner import Runner
from ..errors import ConfigError
from ..jobfile.loading import load_job
from ..store.location import open_store
from ..views.console import print_status
from ..views.report import write_job_report
from ..views.summary import EXIT_FAILED, EXIT_OK, EXIT_REJECTED
from ..views.textsafe import line
from .samples import create_samples

MARKER = ".lora-pipeline-demo"
DEMO_KEY = "sk-demo-emulator-key"
DEMO_JOB = """\
# Written by `lora-pipeline demo`.
[job]
name = "demo"
inbox = "inbox"
outbox = "outbox"
settle_seconds = 0

[training]
kind = "subject"
base_model = "v1-5-pruned-emaonly"
instance_prompt = "a close photo of ohwx {class_word}"
class_word = "person"

[generation]
model_name = "realisticVisionV51_v51VAE_94301.safetensors"
image_num = 2
prompts = [
  "{instance_prompt}, studio portrait, soft light",
  "{instance_prompt} as an astronaut, cinematic",
  # img2img: each picture starts from this reference (refs/ sits beside the job file)
  { prompt = "{instance_prompt}, sunset colours", init_image = "refs/sunset.png", strength = 0.6 },
]
"""
#: The demo's img2img reference: bands of a sunset, easy to recognise in the pictures.
REFERENCE_BANDS = ((255, 196, 87), (244, 128, 55), (201, 70, 80), (98, 54, 110), (32, 38, 84))
DEMO_EMULATOR = EmulatorConfig(
    api_keys=[DEMO_KEY], queue_seconds=1, train_seconds=3, deploy_seconds=1,
    generation_queue_seconds=0.2, generation_seconds=0.8, img2img_images_per_minute=60,
)


def prepare_workdir(workdir: Path) -> Path:
    """A fresh demo folder with sample subjects and a job file; returns the job file."""
    if workdir.exists():
        if not (workdir / MARKER).exists() and any(workdir.iterdir()):
            raise ConfigError(f"{workdir} exists and is not a demo folder: pick another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / MARKER).touch()
    create_samples(workdir / "inbox")
    return write_demo_job(workdir)


def write_demo_job(workdir: Path) -> Path:
    """The demo's job file in ``workdir``, with the reference picture its img2img prompt
    starts from; returns the job file."""
    (workdir / "refs").mkdir(exist_ok=True)
    _reference_picture().save(workdir / "refs" / "sunset.png")
    job_file = workdir / "demo.toml"
    job_file.write_text(DEMO_JOB, encoding="utf-8")
    return job_file


def _reference_picture(side: int = 512) -> Image.Image:
    picture = Image.new("RGB", (side, side))
    bands = len(REFERENCE_BANDS)
    for index, colour in enumerate(REFERENCE_BANDS):
        top, bottom = side * index // bands, side * (index + 1) // bands
        picture.paste(colour, (0, top, side, bottom))
    return picture


async def run_demo(workdir: Path, console: Console) -> int:
    """Run the demo; exit 0 when it showed what it should (bad input refused, the rest done)."""
    job = load_job(prepare_workdir(workdir.resolve()))
    console.print(line("Sample subjects in ", (str(job.job.inbox), "bold"),
                       "; starting the emulator."))
    async with serve_emulator(DEMO_EMULATOR) as server:
        settings = Settings(
            _env_file=None,
            api_key=SecretStr(DEMO_KEY), base_url=server.base_url,
            poll_interval_min=0.5, poll_interval_max=1.0, generation_poll_interval=0.3,
            images_per_minute=DEMO_EMULATOR.txt2img_images_per_minute,
            img2img_images_per_minute=DEMO_EMULATOR.img2img_images_per_minute,
        )
        result = await Runner(job, settings, handle_signals=True).run_once(max_wait=120)
        counters = server.emulator.counters_snapshot()
    with open_store(job, settings) as store:
        _, html = write_job_report(job, store)
    print_status(console, job.job.name, result.subjects)
    console.print(line(
        f"Trainings paid for: {counters['trainings_created']['total']}; pictures and LoRA "
        "files in ", (str(job.job.outbox / job.job.name), "bold"),
    ))
    console.print(line("Report: ", (str(html), "bold"), "; ",
                       (f"lora-pipeline status {workdir / 'demo.toml'}", "bold"),
                       " shows the state again."))
    return EXIT_OK if result.exit_code in (EXIT_OK, EXIT_REJECTED) else EXIT_FAILED
