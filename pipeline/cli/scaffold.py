"""``lora-pipeline init [DIR]``: a job file, a settings file and an inbox, ready for ``run``.

The settings file is ``config.env.example`` as shipped (a test keeps the two equal), with
the key left empty and only its owner allowed to read it; nothing that exists is overwritten.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError

JOB_FILE = "job.toml"
CONFIG_FILE = "config.env"
INBOX = "inbox"

JOB_TEMPLATE = """\
# Written by `lora-pipeline init`. One folder of photos per person in inbox/, one LoRA per
# person, then every prompt below through txt2img with that LoRA. Every field, its allowed
# values and default: jobs/README.md in the lora-pipeline project.
# Relative paths are taken from this file's folder, whatever the current directory.

[job]
name = "{name}"              # letters, digits, - and _: names the job and its outbox folder
inbox = "inbox"              # inbox/<subject>/*.png|jpg|webp (+ optional subject.toml)
outbox = "outbox"            # results land in outbox/{name}/<subject>/<prompt-slug>/
settle_seconds = 30          # a folder is taken once nothing in it changed for this long

[training]
kind = "subject"                           # a person or an object; "style" for a style
base_model = "v1-5-pruned-emaonly"         # SD 1.5
# "ohwx" is the rare token the LoRA learns to mean this subject.
instance_prompt = "a close photo of ohwx {{class_word}}"
class_word = "person"                      # a subject.toml in a folder may say "man", "dog" ...

[generation]
# The base checkpoint (never the LoRA), of the same family as training.base_model.
model_name = "realisticVisionV51_v51VAE_94301.safetensors"
# {{instance_prompt}}, {{subject}} (the folder name) and {{class_word}} are filled in.
prompts = [
  "{{instance_prompt}}, studio portrait, soft light, 85mm, detailed skin",
  "{{instance_prompt}} in a cozy cafe, film photo, warm tones",
]
negative_prompt = "blurry, deformed, extra fingers, lowres, watermark, text"
lora_strength = 0.8          # 0..1
image_num = 2                # pictures per prompt (1..8)

# What a pass may spend at most (see `lora-pipeline plan` before the first run):
# [max_spend]
# trainings = 5
# images = 100
"""

CONFIG_TEMPLATE = """\
# lora-pipeline settings. Copy to config.env (or set the same LORA_* variables in the
# environment, which win over the file). Every line shows the default.

# Key of the hosted API (https://novita.ai). Required; never printed or logged. Keys
# shorter than 16 characters are refused.
LORA_API_KEY=
# Root of the API. Point it at `lora-pipeline emulator` for a free dry run.
LORA_BASE_URL=https://api.novita.ai
# Sent with every request; the service's edge refuses requests without one.
LORA_USER_AGENT=lora-pipeline/0.1

# Timeouts in seconds, per phase: opening a connection, between reads, a whole request.
LORA_CONNECT_TIMEOUT=10.0
LORA_READ_TIMEOUT=60.0
LORA_TOTAL_TIMEOUT=300.0

# Open connections at most; image uploads and downloads in flight at once.
LORA_MAX_CONNECTIONS=32
LORA_UPLOAD_CONCURRENCY=8
LORA_DOWNLOAD_CONCURRENCY=8

# Training status polling: starts at the minimum, slows to the maximum while nothing changes.
LORA_POLL_INTERVAL_MIN=5.0
LORA_POLL_INTERVAL_MAX=60.0
# Seconds between polls of a generation task; seconds after which one that has not settled
# (queued, processing, unknown) fails with a reason.
LORA_GENERATION_POLL_INTERVAL=2.0
LORA_GENERATION_DEADLINE=3600.0
# On a stop (SIGTERM, Ctrl-C, --max-wait, a refused key): seconds the paid requests already
# sent may take to land and be recorded before the pass ends.
LORA_STOP_GRACE_SECONDS=10.0

# Retries of reads and uploads on 429, 5xx and connection errors: tries, first and longest pause.
LORA_RETRY_MAX_ATTEMPTS=6
LORA_RETRY_BASE_DELAY=0.5
LORA_RETRY_MAX_DELAY=30.0

# Bounds on what the service sends; a breach is an error on the subject, never a crash.
# Largest JSON answer (bytes); most pages of one listing; largest LoRA file and picture.
LORA_MAX_JSON_BYTES=4194304
LORA_MAX_PAGES=1000
LORA_MAX_LORA_BYTES=1073741824
LORA_MAX_PICTURE_BYTES=67108864
# Redirects followed at most (the key is only ever sent to LORA_BASE_URL's origin).
LORA_MAX_REDIRECTS=5
# A transfer with no byte for this many seconds is stalled; over each such window it must
# also average at least the minimum throughput (bytes per second; 0 turns that check off).
LORA_TRANSFER_STALL_SECONDS=60.0
LORA_TRANSFER_MIN_BYTES_PER_SECOND=4096

# The account's txt2img limit (images per minute), shared by every generation of a run.
LORA_IMAGES_PER_MINUTE=20
# Its img2img limit (images per minute; prompts with an init_image), counted apart.
LORA_IMG2IMG_IMAGES_PER_MINUTE=10
# Seconds a training may take from submission before it is reported failed (24 h).
LORA_TRAINING_DEADLINE=86400.0
# Seconds a trained model may stay DEPLOYING before it is reported failed.
LORA_DEPLOY_DEADLINE=3600.0

# Where the state database and the job's lock live. Empty: with the job's results, in
# <outbox>/<job>/.lora-pipeline/, the same from any working directory. A folder set here
# (best absolute: a relative one follows the working directory) holds them instead.
LORA_STATE_DIR=
# Several hosts sharing one job: a PostgreSQL database instead of the SQLite file, e.g.
# postgresql://lora:PASSWORD@db.example/lora (README "Several hosts"). Empty: SQLite.
LORA_STATE_URL=
# With LORA_STATE_URL: seconds a worker's lease on a subject lasts unless renewed (every
# third of it); a worker that dies leaves its subjects to the others after this long.
LORA_LEASE_SECONDS=60.0
# Logs: auto (readable on a terminal, JSON lines otherwise), console or json.
LORA_LOG_FORMAT=auto
# debug, info, warning or error.
LORA_LOG_LEVEL=info
"""


def job_name(folder: Path) -> str:
    """The folder's name as a job name (letters, digits, - and _), or ``job``."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", folder.resolve().name).strip("-")[:64]
    return name or "job"


def scaffold(folder: Path) -> list[Path]:
    """Write the job file, the settings file and the inbox into ``folder``; returns them.
    Refuses (``ConfigError``, naming them) when any of the files is already there."""
    job, config, inbox = folder / JOB_FILE, folder / CONFIG_FILE, folder / INBOX
    taken = [path for path in (job, config) if path.exists() or path.is_symlink()]
    if inbox.exists() and not inbox.is_dir():
        taken.append(inbox)
    if taken:
        raise ConfigError(
            "init writes nothing over what exists: " + ", ".join(str(p) for p in taken)
            + " already there; move it away or choose another folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    job.write_text(JOB_TEMPLATE.format(name=job_name(folder)), encoding="utf-8")
    # Owner-only from the first byte: the key goes in here.
    handle = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(CONFIG_TEMPLATE)
    os.chmod(config, 0o600)
    inbox.mkdir(exist_ok=True)
    return [job, config, inbox]
