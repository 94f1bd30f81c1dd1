"""The baseline: a user's script around the official SDK (``novita-client`` 0.7.1), run as its
own process so that its time, memory and CPU can be measured alone.

    python benchmarks/sdk_baseline.py --base-url URL --inbox DIR --outbox DIR \
        --pool 8 --prompt "..." [--prompt "..."] --poll 1.0

Per subject, in a ``ThreadPoolExecutor(max_workers=--pool)``, the calls the SDK documents:

1. ``create_training_subject(name, base_model, images=[paths], instance_prompt, class_prompt,
   components=FACE_TRAINING_DEFAULT_COMPONENTS)``, which itself calls
   ``upload_training_assets`` (a ``ThreadPool(10)`` per call, every picture re-encoded to
   JPEG with Pillow, then POST upload URL + PUT);
2. ``query_training_subject_status(task_id)`` every ``--poll`` seconds until the task is
   SUCCESS and its model SERVING (FAILED or CANCELED: the subject fails);
3. per prompt, ``txt2img_v3(..., loras=[Txt2ImgV3LoRA(model_name=..., strength=...)])``,
   which polls ``task-result`` every 0.5 s (``wait_for_task_v3``) and downloads the pictures;
   each picture is then written to ``outbox/<subject>/<prompt index>-<n>.<ext>``.

The one thing a user must add to the documented calls: the SDK does not retry, and over the
account's images-per-minute limit ``txt2img_v3`` raises on the 429; the script then waits
``--retry-429`` seconds and sends it again (counted in the summary).

Prints one JSON line: subjects done and failed, pictures written, 429 retries, errors.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from novita_client import NovitaClient
from novita_client.exceptions import NovitaResponseError
from novita_client.proto import FACE_TRAINING_DEFAULT_COMPONENTS, Txt2ImgV3LoRA

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
MODEL_NAME = "realisticVisionV51_v51VAE_94301.safetensors"
BASE_MODEL = "v1-5-pruned-emaonly"


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = 0
        self.failed = 0
        self.pictures = 0
        self.retries_429 = 0
        self.errors: list[str] = []

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def _wait_serving(client: NovitaClient, task_id: str, poll: float) -> str:
    while True:
        status = client.query_training_subject_status(task_id)
        if status.task_status in ("FAILED", "CANCELED"):
            raise RuntimeError(f"training {task_id} {status.task_status}")
        if status.task_status == "SUCCESS" and status.models:
            model = status.models[0]
            if model.model_status == "SERVING":
                return model.model_name
        time.sleep(poll)


def _txt2img(client: NovitaClient, args: argparse.Namespace, prompt: str, lora: str,
             tally: Tally) -> Any:
    while True:
        try:
            return client.txt2img_v3(
                model_name=MODEL_NAME, prompt=prompt, image_num=args.image_num,
                width=512, height=512, steps=20, guidance_scale=7.5, seed=-1,
                sampler_name="DPM++ 2M Karras", response_image_type="png",
                loras=[Txt2ImgV3LoRA(model_name=lora, strength=0.8)],
            )
        except NovitaResponseError as exc:
            if "429" not in str(exc):
                raise
            tally.add(retries_429=1)
            time.sleep(args.retry_429)


def one_subject(client: NovitaClient, folder: Path, args: argparse.Namespace,
                tally: Tally) -> None:
    images = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    try:
        task_id = client.create_training_subject(
            name=f"sdk-{folder.name}", base_model=BASE_MODEL, images=images,
            instance_prompt="a close photo of ohwx person", class_prompt="person",
            max_train_steps=500, learning_rate="1e-4", lr_scheduler="constant",
            components=FACE_TRAINING_DEFAULT_COMPONENTS,
        )
        lora = _wait_serving(client, task_id, args.poll)
        dest = Path(args.outbox) / folder.name
        dest.mkdir(parents=True, exist_ok=True)
        for index, template in enumerate(args.prompt, start=1):
            prompt = template.replace("{instance_prompt}", "a close photo of ohwx person")
            result = _txt2img(client, args, prompt, lora, tally)
            for number, encoded in enumerate(result.images_encoded, start=1):
                (dest / f"{index:02d}-{number}.png").write_bytes(base64.b64decode(encoded))
                tally.add(pictures=1)
        tally.add(done=1)
    except Exception as exc:  # report and go on with the other subjects, as a script would
        tally.add(failed=1)
        with tally.lock:
            tally.errors.append(f"{folder.name}: {exc!r}"[:300])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="sk-bench-0000000000")
    parser.add_argument("--inbox", required=True)
    parser.add_argument("--outbox", required=True)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--prompt", action="append", required=True)
    parser.add_argument("--image-num", type=int, default=1)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--retry-429", type=float, default=5.0)
    args = parser.parse_args(argv)

    client = NovitaClient(args.api_key, args.base_url)
    folders = sorted(p for p in Path(args.inbox).iterdir() if p.is_dir())
    tally = Tally()
    with ThreadPoolExecutor(max_workers=args.pool) as pool:
        for folder in folders:
            pool.submit(one_subject, client, folder, args, tally)
    summary = {"subjects": len(folders), "done": tally.done, "failed": tally.failed,
               "pictures": tally.pictures, "retries_429": tally.retries_429,
               "errors": tally.errors[:5]}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0 if tally.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
