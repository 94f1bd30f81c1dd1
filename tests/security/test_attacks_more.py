"""More attacks on the trust boundary, each asserting a promise of README "Security": error
texts cut around the key, presigned storage answering 401, answers and pages that cost memory
within their byte bound, numbers SQLite cannot hold, duplicate task ids, links in the outbox
and state folders, local addresses from a public API, compression bombs.

Every server here listens on 127.0.0.1; no request leaves this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pipeline.errors import BadCredentials
from pipeline.store.states import DONE

from .conftest import Workspace
from .hostile import Hostile

ROOT = Path(__file__).resolve().parents[2]


def _state_text(workspace: Workspace) -> bytes:
    """Every byte of the state folder (db, wal, shm)."""
    return b"".join(p.read_bytes() for p in (workspace.ws / "state").rglob("*") if p.is_file())


# --- 4. the key -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["message", "reason"])
async def test_an_error_text_is_scrubbed_before_it_is_cut_to_length(
    hostile: Hostile, workspace: Workspace, field: str
) -> None:
    """An error body that echoes the key right at the truncation point (300 chars for the
    message, 80 for the reason): it is scrubbed before it is cut, so no part of the key
    lands in state, logs or report."""

    async def echo(request: web.Request) -> web.Response:
        key = hostile.key
        limit = 300 if field == "message" else 80
        text = "x" * (limit - len(key) + 1) + key
        body = {"code": 400, "reason": "INVALID_REQUEST_BODY", "message": "bad"}
        body[field] = text
        return web.json_response(body, status=400)

    hostile.serve(r"^/v3/async/task-result$", echo)
    result = await workspace.run(hostile.base_url, max_wait=5)
    assert hostile.key, "the stand-in never saw the key"
    subject = result.subjects[0]
    partial = hostile.key[:-1]
    assert partial.encode() not in workspace.written(), (
        f"{len(partial)} of {len(hostile.key)} characters of the key were kept: {subject.error}"
    )


async def test_a_key_given_back_as_an_assets_id_never_reaches_the_state(
    hostile: Hostile, workspace: Workspace
) -> None:
    """An ``assets_id`` holding the key passes the store's scrubber like every other text."""
    counter = iter(range(1000))

    def echo_key(data: dict[str, Any]) -> dict[str, Any]:
        data["assets_id"] = f"{hostile.key}-{next(counter)}"
        return data

    hostile.rewrite_json(r"^/v3/assets/training_dataset$", echo_key, method="POST")
    await workspace.run(hostile.base_url, max_wait=5)
    assert hostile.key
    assert hostile.key.encode() not in _state_text(workspace), "the key is in state.db"


async def test_key_in_training_reason_is_scrubbed(
    hostile: Hostile, workspace: Workspace
) -> None:
    """(held?) The key echoed in a FAILED training's reason, in the task list and status."""

    def fail(data: dict[str, Any]) -> dict[str, Any]:
        tasks = data.get("tasks") if isinstance(data.get("tasks"), list) else [data]
        for task in tasks:
            if isinstance(task, dict) and "task_status" in task:
                task["task_status"] = "FAILED"
                task["reason"] = f"token Bearer {hostile.key} refused; %s" % hostile.key
        return data

    hostile.rewrite_json(r"^/v3/training(/subject)?$", fail)
    result = await workspace.run(hostile.base_url, max_wait=5)
    assert hostile.key
    assert "Bearer ***" in (result.subjects[0].error or "")
    assert hostile.key.encode() not in workspace.written()


async def test_key_in_generation_reason_is_scrubbed(
    hostile: Hostile, workspace: Workspace
) -> None:
    """(held?) The key echoed in a FAILED generation's reason."""

    def fail(data: dict[str, Any]) -> dict[str, Any]:
        data["task"]["status"] = "TASK_STATUS_FAILED"
        data["task"]["reason"] = f"echo {hostile.key} / http://x/y?k={hostile.key}"
        data["images"] = []
        return data

    hostile.rewrite_json(r"^/v3/async/task-result$", fail)
    result = await workspace.run(hostile.base_url, max_wait=5)
    assert hostile.key
    assert "echo ***" in (result.subjects[0].error or "")
    assert hostile.key.encode() not in workspace.written()


# --- 3. bounds: a presigned 401 ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["picture", "upload", "lora"])
async def test_a_presigned_401_is_about_the_url_never_a_refused_key(
    hostile: Hostile, workspace: Workspace, where: str
) -> None:
    """A presigned URL (storage, not the API) that answers 401 is an error of that
    transfer, recorded on the subject: never "the API refused the key", which would stop
    every subject with exit 5."""

    async def unauthorized(request: web.Request) -> web.Response:
        return web.Response(status=401, text="<Error><Code>Unauthorized</Code></Error>")

    route = {"picture": r"^/_s3/images/", "upload": r"^/_s3/training/",
             "lora": r"^/_s3/models/"}[where]
    hostile.serve(route, unauthorized)
    try:
        result = await workspace.run(hostile.base_url, max_wait=5)
    except BadCredentials as exc:
        pytest.fail(f"a 401 from presigned storage ({where}) stopped the pass as a refused "
                    f"API key: {exc}")
    subject = result.subjects[0]
    assert subject.error or subject.warnings


async def test_a_presigned_401_never_blocks_later_passes(
    hostile: Hostile, workspace: Workspace
) -> None:
    """And the next pass is not stopped by it either."""

    async def unauthorized(request: web.Request) -> web.Response:
        return web.Response(status=401, text="nope")

    hostile.serve(r"^/_s3/images/", unauthorized)
    outcomes = []
    for _ in range(2):
        try:
            await workspace.run(hostile.base_url, max_wait=5)
            outcomes.append("ok")
        except BadCredentials:
            outcomes.append("BadCredentials")
    assert outcomes == ["ok", "ok"], outcomes


# --- 1 and 7. the outbox and collisions -------------------------------------------------------


async def test_a_link_at_outbox_job_is_never_followed(
    hostile: Hostile, workspace: Workspace
) -> None:
    """`outbox/<job>` itself planted as a link: SubjectOutbox.path checks the job root as it
    checks every folder below it, so no result is written through the link (and the runner
    does not clean leftovers through it either)."""
    elsewhere = workspace.root / "elsewhere"
    elsewhere.mkdir()
    (workspace.ws / "outbox").mkdir(parents=True, exist_ok=True)
    workspace.outbox.symlink_to(elsewhere)
    await workspace.run(hostile.base_url)
    written = sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*") if p.is_file())
    assert written == [], f"written through the planted link: {written}"


async def test_two_inbox_folders_with_one_display_name_never_share_a_subject(
    hostile: Hostile, workspace: Workspace
) -> None:
    """Folder b'caf\\xe9' (not UTF-8) is shown as 'caf\\\\xe9'; a folder literally named
    'caf\\\\xe9' (ASCII backslash) has the same display name. The first by name keeps it;
    the second is refused with a reason, recorded as a rejected subject of its own
    ('caf\\\\xe9 (2)'): never a version of the other, never its outbox folder."""
    inbox = workspace.ws / "inbox"
    alice = inbox / "alice"
    raw = os.fsencode(inbox) + b"/caf\xe9"
    os.rename(alice, os.fsdecode(raw))
    literal = inbox / "caf\\xe9"
    literal.mkdir()
    from tests.pictures import picture

    for n in range(2):  # other photos: another person (sharp and distinct: the gate takes them)
        picture(600 + n, (600, 600)).save(literal / f"other{n}.png")
        os.utime(literal / f"other{n}.png", (time.time() - 60, time.time() - 60))
    os.utime(literal, (time.time() - 60, time.time() - 60))
    result = await workspace.run(hostile.base_url)
    with workspace.store() as store:
        rows = store._db.execute("SELECT name, version, state, fingerprint FROM subjects").fetchall()
    names = [s.name for s in result.subjects]
    assert len(names) == 2, f"two folders, subjects {names}; rows {[tuple(r) for r in rows]}"


@pytest.mark.parametrize("name", ["report.html", "report.json"])
async def test_a_subject_named_like_the_report_is_refused_and_never_collides_with_it(
    hostile: Hostile, workspace: Workspace, name: str
) -> None:
    """outbox/<job>/report.html and report.json are the pipeline's: an inbox folder of
    either name would take the report's place (or, once the report exists, its results could
    not be written). It is refused with a reason saying to rename it, nothing of it is paid
    for or written, and the report is written, on this pass and the next."""
    from pipeline.views.report import write_job_report

    inbox = workspace.ws / "inbox"
    os.rename(inbox / "alice", inbox / name)
    result = await workspace.run(hostile.base_url)
    problems = []
    subject = result.subjects[0]
    if subject.state != "rejected" or "rename the folder" not in (subject.error or ""):
        problems.append(f"subject: {subject.state} {subject.error}")
    if hostile.upstream.emulator.counters_snapshot()["uploads"]:
        problems.append("its photos were uploaded")
    try:
        with workspace.store() as store:
            write_job_report(workspace.job, store)
    except OSError as exc:
        problems.append(f"report: {exc!r}")
    # and the other order: the report is there first
    again = await workspace.run(hostile.base_url)
    if (again.subjects[0].state, again.subjects[0].error) != (subject.state, subject.error):
        problems.append(f"after the report: {again.subjects[0].state} {again.subjects[0].error}")
    if again.subjects[0].warnings or not (workspace.outbox / name).is_file():
        problems.append(f"after the report: {again.subjects[0].warnings}, the report is gone")
    assert problems == [], "\n".join(problems)


# --- 3. bounds: memory and time behind the JSON bound -----------------------------------------


def _tool(name: str, *args: str, timeout: float = 55, **env: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "probes" / name), *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["models", "tasks"])
def test_a_listing_page_crammed_with_entries_is_refused_before_it_costs_memory(kind: str) -> None:
    """A 4 MiB page (the LORA_MAX_JSON_BYTES default) of some 100 000 minimal entries: the
    page is refused for holding more entries than the 100 asked for, before any becomes an
    object; the process grows by the parse alone and the loop is never held for long."""
    figures = _tool("json_amplification.py", kind, "1", "4")
    grown = figures["rss_peak_mib"] - figures["rss_before_mib"]
    assert "more than the 100 asked for" in figures["refused"], figures
    assert grown < 128, f"a 4 MiB answer grew the process by {grown} MiB: {figures}"
    assert figures["longest_loop_block_s"] < 0.5, figures


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("what", ["json", "picture"])
def test_compression_bombs_are_counted_inflated(encoding: str, what: str) -> None:
    """(held) 1 GiB of JSON / picture sent as ~1 MiB of gzip or deflate: refused at the
    1 MiB bound, counted after inflation, with no memory growth."""
    figures = _tool("gzip_bomb.py", encoding, what)
    assert figures["outcome"].startswith("TooLarge"), figures
    assert figures["rss_peak_mib"] - figures["rss_before_mib"] < 64, figures


# --- 5. the inbox: one huge photo -------------------------------------------------------------


def _sparse_photo(path: Path, size: int) -> None:
    """A valid 600x600 PNG (:mod:`tests.pictures`, which the photo gate passes) followed by
    ``size`` bytes of (sparse) nothing: Pillow stops at IEND, so only its size is wrong."""
    from tests.pictures import picture_bytes

    path.write_bytes(picture_bytes("PNG", (600, 600), seed=700))
    os.truncate(path, size)
    past = time.time() - 120
    os.utime(path, (past, past))
    os.utime(path.parent, (past, past))


def test_a_huge_photo_is_refused_unread_and_a_pass_answers_sigterm_at_once(
    tmp_path: Path,
) -> None:
    """A photo over the byte cap (MAX_PHOTO_BYTES, 50 MiB) is refused from its size before
    a byte of it is hashed, intake reads in worker threads (the SIGTERM handler runs
    meanwhile) and --max-wait counts from the start of the pass, intake included: a 2 GiB
    sparse file (a valid PNG then zeros) no longer holds `run --max-wait 0.5` past SIGTERM."""
    from tests.conftest import write_job

    job = write_job(tmp_path, prompts=1)
    (tmp_path / "inbox" / "alice").mkdir()
    _sparse_photo(tmp_path / "inbox" / "alice" / "photo.png", 2 << 30)
    env = {**os.environ, "LORA_API_KEY": "sk-review-0123456789abcdef",
           "LORA_BASE_URL": "http://127.0.0.1:9", "LORA_STATE_DIR": str(tmp_path / "state"),
           "LORA_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)}
    settings = tmp_path / "settings.env"
    settings.write_text("# every setting comes from the environment\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--config", str(settings), "run",
         str(job), "--max-wait", "0.5"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    try:
        time.sleep(1.0)  # the CLI is up and in intake by now
        sent = time.monotonic()
        process.send_signal(15)
        process.wait(timeout=50)
        after_signal = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.communicate()  # closes the pipes
    # Not a usage error (2): the pass ran and refused the photo (3), or was stopped by the
    # signal, handled (143) or still starting up with Python's default handler (-15).
    assert process.returncode in (3, 143, -15), process.returncode
    assert after_signal < 1.0, (
        f"SIGTERM answered only {after_signal:.1f} s later (exit {process.returncode})")


async def test_a_folder_swapped_for_a_link_after_the_hash_check_is_never_uploaded(
    hostile: Hostile, workspace: Workspace
) -> None:
    """Upload opens each photo once, from the inbox down with no link followed on any
    component (open_beneath), checks its hash on that descriptor and sends that same
    descriptor: a subject folder renamed and replaced by a link to a folder outside the inbox
    after the hash check (here while the upload URL is asked for: an inbox writer racing the
    pipeline) cannot make a file from outside go out."""
    inbox = workspace.ws / "inbox"
    alice = inbox / "alice"
    secret = workspace.root / "secret"
    secret.mkdir()
    for photo in alice.iterdir():
        (secret / photo.name).write_bytes(b"TOP SECRET, readable by root only\n" * 10)
    swapped: list[bool] = []

    def swap(data: dict[str, Any]) -> dict[str, Any]:
        if not swapped:
            alice.rename(inbox / ".alice-moved")
            alice.symlink_to(secret)
            swapped.append(True)
        return data

    bodies: list[bytes] = []

    async def bucket(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=200)

    hostile.rewrite_json(r"^/v3/assets/training_dataset$", swap, method="POST")
    hostile.serve(r"^/_s3/training/", bucket)
    await workspace.run(hostile.base_url, max_wait=5)
    assert swapped
    leaked = [b for b in bodies if b.startswith(b"TOP SECRET")]
    assert leaked == [], f"{len(leaked)} file(s) from outside the inbox were uploaded"


# --- 3. bounds: a picture within its byte bound that the report decodes in full --------------


def _png_bomb(width: int, height: int) -> bytes:
    """An RGBA PNG of width x height transparent pixels, compressed to a few hundred KiB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    comp = zlib.compressobj(9)
    row = b"\0" * (1 + 4 * width)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


async def test_a_small_picture_that_decodes_huge_gets_no_thumbnail(
    hostile: Hostile, workspace: Workspace
) -> None:
    """The service sends a 13000x13000 RGBA PNG of ~0.7 MiB (under LORA_MAX_PICTURE_BYTES):
    `lora-pipeline report` (also run at the end of every pass) gives it no thumbnail rather
    than decode its 169 M pixels."""
    bomb = _png_bomb(13000, 13000)

    async def picture(request: web.Request) -> web.Response:
        return web.Response(body=bomb, content_type="image/png")

    hostile.serve(r"^/_s3/images/", picture)
    await workspace.run(hostile.base_url)
    assert len(list(workspace.outbox.rglob("*.png"))) == 1  # kept: only the report is at risk
    settings = workspace.root / "settings.env"
    settings.write_text("# every setting comes from the environment\n")
    figures = _tool("report_memory.py", str(workspace.job.path), str(settings),
                    timeout=55, LORA_STATE_DIR=str(workspace.ws / "state"),
                    LORA_LOG_FORMAT="json")
    assert figures["rss_peak_mib"] < 300, f"the report of one picture took {figures}"


# --- 1. the state folder: "a link planted there is refused, not followed" --------------------


@pytest.mark.parametrize("planted", ["state.db", "test.lock"])
async def test_a_link_planted_in_the_state_folder_is_never_written_through(
    hostile: Hostile, workspace: Workspace, planted: str
) -> None:
    """The outbox and state folders are the pipeline's own: a link at state/state.db (or
    the job's lock file) pointing at a file elsewhere is refused, not followed."""
    victim = workspace.root / "elsewhere" / "victim"
    victim.parent.mkdir()
    victim.write_bytes(b"" if planted == "state.db" else b"precious\n")
    state = workspace.ws / "state"
    state.mkdir(parents=True)
    (state / planted).symlink_to(victim)
    before = victim.read_bytes()
    try:
        await workspace.run(hostile.base_url, max_wait=5)
        outcome = "ran"
    except Exception as exc:  # noqa: BLE001
        outcome = f"refused: {exc!r}"
    assert victim.read_bytes() == before, f"the file behind the link was written ({outcome})"
    others = [f for f in workspace.files_outside() if f != "elsewhere/victim"]
    assert others == [], others


# --- 3. bounds: an integer too large for SQLite ----------------------------------------------


async def test_numbers_out_of_range_never_stall_the_monitor(
    hostile: Hostile, workspace: Workspace
) -> None:
    """`extra.progress_percent` = 10**30 in one training's status: the percentage is
    clamped, numbers past SQLite's 64 bits are a bad answer, and one odd status never
    keeps the other subject's finished training from being applied."""
    import shutil

    inbox = workspace.ws / "inbox"
    shutil.copytree(inbox / "alice", inbox / "bob")
    created: list[str] = []

    def remember(data: dict[str, Any]) -> dict[str, Any]:
        created.append(data["task_id"])
        return data

    def poison(data: dict[str, Any]) -> dict[str, Any]:
        entries = data.get("tasks") if isinstance(data.get("tasks"), list) else [data]
        for entry in entries:
            if created and entry.get("task_id") == created[0]:
                entry["task_status"], entry["models"] = "TRAINING", []
                entry["extra"] = {"progress_percent": 10**30, "eta_relative": 5}
        return data

    hostile.rewrite_json(r"^/v3/training/subject$", remember, method="POST")
    hostile.rewrite_json(r"^/v3/training(/subject)?$", poison)
    result = await workspace.run(hostile.base_url, max_wait=4)
    states = {s.name: (s.state, s.error) for s in result.subjects}
    assert "OverflowError" not in workspace.logs.getvalue()
    assert [s.state for s in result.subjects].count(DONE) == 1, states


# --- 2. URLs and redirects ---------------------------------------------------------------------

from .test_client_boundary import Server, serving, settings_for  # noqa: E402


@pytest.mark.parametrize("location", [
    "//127.0.0.1:{other}/steal", "http://127.0.0.1:{other}/steal", "http://localhost:{port}/steal",
    "http://x:y@127.0.0.1:{port}/steal", "http://127.0.0.1:{port}@127.0.0.1:{other}/steal",
])
async def test_api_redirects_never_carry_the_key_elsewhere(
    tmp_path: Path, location: str
) -> None:
    """(held) An API answer redirecting to another origin in various spellings."""
    from pipeline.errors import UnsafeUrl

    async with serving(Server()) as api, serving(Server()) as other:
        port, other_port = api.url.rsplit(":", 1)[1], other.url.rsplit(":", 1)[1]

        async def redirect(request: web.Request) -> web.Response:
            return web.Response(status=307, headers={
                "Location": location.format(port=port, other=other_port)})

        async def steal(request: web.Request) -> web.Response:
            return web.json_response({"task_id": "t1", "task_status": "TRAINING"})

        api.route("GET", "/v3/training/subject", redirect)
        api.route("GET", "/steal", steal)
        other.route("GET", "/steal", steal)
        from pipeline.api import ApiClient

        async with ApiClient(settings_for(api.url)) as client:
            with pytest.raises(UnsafeUrl):
                await client.training_status("subject", "t1")
        assert [auth for *_, auth in other.seen] == []
        assert [auth for _m, path, auth in api.seen if path == "/steal"] == []


def test_a_public_api_cannot_send_us_to_local_or_private_addresses() -> None:
    """(no traffic sent) With the hosted https API, presigned URLs from the service may not
    point at link-local, private or loopback addresses, nor use plain http: a hostile or
    compromised service cannot make the pipeline (often root) GET and PUT on local
    services. The emulator's loopback URLs are followed only when the API is local too."""
    from pipeline.api.urls import UrlPolicy

    policy = UrlPolicy("https://api.novita.ai")
    followed = []
    for url in ("https://169.254.169.254/latest/meta-data/", "https://10.0.0.5/admin",
                "https://[fd00::1]/x", "http://127.0.0.1:6379/x", "http://localhost:2375/v1/x",
                "https://0.0.0.0:8443/x"):
        try:
            policy.service_url(url, what="picture")
            followed.append(url)
        except Exception:  # noqa: BLE001
            pass
    assert followed == [], followed


# --- 4. the key: other spellings ---------------------------------------------------------------


async def test_a_key_echoed_percent_encoded_is_scrubbed_too(
    hostile: Hostile, workspace: Workspace
) -> None:
    """An echo of the key with every byte percent-encoded is recognised (base64 or other
    encodings are not: the scrubber matches the key's own characters)."""

    async def echo(request: web.Request) -> web.Response:
        encoded = "".join(f"%{b:02X}" for b in hostile.key.encode())
        return web.json_response(
            {"code": 400, "reason": "INVALID_REQUEST_BODY", "message": f"auth={encoded}"},
            status=400)

    hostile.serve(r"^/v3/async/task-result$", echo)
    result = await workspace.run(hostile.base_url, max_wait=5)
    encoded = "".join(f"%{b:02X}" for b in hostile.key.encode())
    assert "auth=***" in (result.subjects[0].error or "")
    assert encoded.encode() not in workspace.written()


# --- 6. the report's links ---------------------------------------------------------------------


async def test_report_links_from_hostile_names(
    hostile: Hostile, workspace: Workspace
) -> None:
    """(held) A subject folder named like a URL scheme or with quotes: every href stays a
    relative path, every attribute quoted."""
    from pipeline.views.report import write_job_report

    inbox = workspace.ws / "inbox"
    evil = "javascript:alert(1)\" onmouseover=\"x"
    os.rename(inbox / "alice", inbox / evil)
    await workspace.run(hostile.base_url)
    with workspace.store() as store:
        _, html_path = write_job_report(workspace.job, store)
    page = html_path.read_text()
    import re

    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and all(h.startswith(("#", "javascript%3A")) for h in hrefs), hrefs
    assert 'onmouseover="x' not in page


# --- 4. the notification command's environment -------------------------------------------------


async def test_the_key_is_hidden_from_the_notify_command_whatever_its_case(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """pydantic-settings reads LORA_* case-insensitively, so `lora_api_key=...` is the key:
    notify hides every spelling of it from the command's environment."""
    from pipeline.config import Settings
    from pipeline.jobfile.schema import NotifySection
    from pipeline.notify.delivery import run_command

    key = "sk-lowercase-env-0123456789"
    monkeypatch.delenv("LORA_API_KEY", raising=False)
    monkeypatch.setenv("lora_api_key", key)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.api_key is not None and settings.api_key.get_secret_value() == key
    section = NotifySection(command=["/bin/sh", "-c", "env > \"$0\"", str(tmp_path / "env.txt")],
                            timeout_seconds=5, retries=0)
    delivery = await run_command(section, b"{}", base_delay=0)
    assert delivery.ok, delivery
    assert key not in (tmp_path / "env.txt").read_text(), "the command was handed the key"


# --- 3. a bound breached on a paid create ------------------------------------------------------


async def test_a_create_answer_over_the_json_bound_is_reconciled_never_paid_twice(
    hostile: Hostile, workspace: Workspace
) -> None:
    """A bad answer to a paid create (over its bound, here) leaves the outcome unknown: the
    training is found by name and followed, never recorded as refused (which `retry` would
    pay for again)."""

    def bloat(data: dict[str, Any]) -> str:
        return json.dumps({**data, "pad": "a" * 8192})

    hostile.rewrite_json(r"^/v3/training/subject$", bloat, method="POST")
    result = await workspace.run(hostile.base_url, max_wait=5, max_json_bytes=4096)
    subject = result.subjects[0]
    paid = hostile.upstream.emulator.counters_snapshot()["trainings_created"]["total"]
    assert subject.state == DONE and subject.task_id, (subject.state, subject.error)
    hostile.clear()
    await workspace.run(hostile.base_url)
    assert paid == 1
    assert hostile.upstream.emulator.counters_snapshot()["trainings_created"]["total"] == 1


# --- 3. bounds: a trickling error body on a presigned transfer --------------------------------


@pytest.mark.parametrize("where", ["download", "upload"])
async def test_a_trickled_error_body_on_a_presigned_url(
    tmp_path: Path, where: str
) -> None:
    """(held) Presigned transfers have no total timeout; an error answer whose body
    trickles one byte at a time: read_error_body returns what is there (StreamReader.read(n)
    does not wait for n bytes), so the error comes at once."""
    import asyncio

    from pipeline.api import ApiClient

    async def trickle(request: web.Request) -> web.StreamResponse:
        if request.method == "PUT":
            await request.read()
        response = web.StreamResponse(status=500)
        await response.prepare(request)
        try:
            for _ in range(10_000):
                await response.write(b"x")
                await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    async with serving(Server()) as server:
        server.route("GET", "/bucket/x.png", trickle)
        server.route("PUT", "/bucket/x.png", trickle)
        settings = settings_for(server.url, transfer_stall_seconds=0.5,
                                transfer_min_bytes_per_second=4096, retry_max_attempts=1)
        photo = tmp_path / "photo.png"
        photo.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
        async with ApiClient(settings) as api:
            call = (api.download(server.url + "/bucket/x.png", tmp_path / "x.png")
                    if where == "download" else
                    api.put_file(server.url + "/bucket/x.png", photo, "image/png"))
            started = time.monotonic()
            try:
                await asyncio.wait_for(call, timeout=6)
                outcome = "returned"
            except TimeoutError:
                outcome = "still reading after 6 s (stall limit 0.5 s, minimum 4096 B/s)"
            except Exception as exc:  # noqa: BLE001
                outcome = f"{type(exc).__name__} after {time.monotonic() - started:.1f} s"
    assert not outcome.startswith("still reading"), outcome


async def test_key_split_between_reason_and_message(
    hostile: Hostile, workspace: Workspace
) -> None:
    """(held) Half the key in `reason`, half in `message`: they are joined by ": " and never
    form the key again."""

    async def echo(request: web.Request) -> web.Response:
        half = len(hostile.key) // 2
        return web.json_response({"code": 400, "reason": hostile.key[:half],
                                  "message": hostile.key[half:]}, status=400)

    hostile.serve(r"^/v3/async/task-result$", echo)
    await workspace.run(hostile.base_url, max_wait=5)
    assert hostile.key and hostile.key.encode() not in workspace.written()


async def test_a_result_with_many_pictures_is_refused_whole(
    hostile: Hostile, workspace: Workspace
) -> None:
    """(held) 5000 image URLs for image_num = 1: none downloaded."""

    def many(data: dict[str, Any]) -> dict[str, Any]:
        if data.get("images"):
            data["images"] = data["images"] * 5000
        return data

    hostile.rewrite_json(r"^/v3/async/task-result$", many)
    result = await workspace.run(hostile.base_url, max_wait=5)
    assert "5000 pictures for image_num = 1" in (result.subjects[0].error or "")
    assert hostile.upstream.emulator.counters_snapshot()["images_downloaded"] == 0


async def test_two_subjects_given_one_task_id_are_told_not_left_waiting(
    hostile: Hostile, workspace: Workspace
) -> None:
    """The create answer for a second subject repeats the first subject's task_id: the
    second subject is told why it is not followed, never left waiting without a word."""
    import shutil

    inbox = workspace.ws / "inbox"
    shutil.copytree(inbox / "alice", inbox / "bob")
    first: list[str] = []

    def same_id(data: dict[str, Any]) -> dict[str, Any]:
        if not first:
            first.append(data["task_id"])
        data["task_id"] = first[0]
        return data

    hostile.rewrite_json(r"^/v3/training/subject$", same_id, method="POST")
    result = await workspace.run(hostile.base_url, max_wait=3)
    states = {s.name: (s.state, s.task_id, s.error) for s in result.subjects}
    hostile.clear()
    again = await workspace.run(hostile.base_url, max_wait=3)
    assert any(s.state == DONE for s in again.subjects)
    stuck = [name for name, (state, _t, error) in states.items()
             if state == "training" and not error]
    assert stuck == [], f"waiting silently: {stuck}; {states}"


# --- 5. the inbox watcher follows links out of the inbox --------------------------------------


def _inotify_watches() -> int:
    total = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "inotify" not in os.readlink(f"/proc/self/fd/{fd}"):
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                total += sum(1 for row in info if row.startswith("inotify wd:"))
        except OSError:
            continue
    return total


async def test_watch_never_follows_a_link_out_of_the_inbox(tmp_path: Path) -> None:
    """`watch` watches the inbox and each subject folder one level deep (restarting when
    the set of subject folders changes), never recursively: a link in the inbox to a tree
    elsewhere (/usr, a large data disk, /) adds no inotify watch at all, as the scan refuses
    it as a subject."""
    import asyncio

    from pipeline.inputs.inbox import watch_inbox

    inbox = tmp_path / "inbox"
    (inbox / "alice").mkdir(parents=True)
    outside = tmp_path / "outside"
    for n in range(300):
        (outside / f"d{n}").mkdir(parents=True)
    (inbox / "evil").symlink_to(outside)
    stop = asyncio.Event()

    async def consume() -> None:
        async for _names in watch_inbox(inbox, stop_event=stop):
            pass

    task = asyncio.create_task(consume())
    try:
        await asyncio.sleep(1.0)
        count = _inotify_watches()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert count < 10, f"{count} inotify watches for an inbox of 3 folders"


async def test_planted_result_and_sidecar_links_are_replaced_not_followed(
    hostile: Hostile, workspace: Workspace
) -> None:
    """(held) The LoRA file, its sidecar, a picture and its sidecar pre-planted as links to
    files outside, the sidecar link claiming the right model: nothing outside is read as a
    sidecar, written or truncated; the links are replaced by the results."""
    await workspace.run(hostile.base_url, max_wait=0)  # the job's state exists, as in use
    outside = workspace.root / "outside"
    outside.mkdir()
    victims = {}
    for name in ("lora", "lora.json", "pic", "pic.json"):
        victims[name] = outside / name
        victims[name].write_text('{"model_name": "whatever", "generation_task_id": "x"}')
    folder = workspace.outbox / "alice"
    (folder / "01-take-1").mkdir(parents=True, exist_ok=True)
    (folder / "alice.safetensors").symlink_to(victims["lora"])
    (folder / "alice.json").symlink_to(victims["lora.json"])
    (folder / "01-take-1" / "alice-01-take-1-1.png").symlink_to(victims["pic"])
    (folder / "01-take-1" / "alice-01-take-1-1.json").symlink_to(victims["pic.json"])
    result = await workspace.run(hostile.base_url)
    assert result.subjects[0].state == DONE and result.subjects[0].error is None
    assert all(v.read_text().startswith('{"model_name": "whatever"') for v in victims.values())
    assert not any(p.is_symlink() for p in folder.rglob("*"))


async def test_names_equal_after_safe_stem_keep_their_own_places(
    hostile: Hostile, workspace: Workspace
) -> None:
    """(held) "a b" and "a-b" (same safe_stem) each get their own folder and files."""
    import shutil

    from PIL import Image

    inbox = workspace.ws / "inbox"
    os.rename(inbox / "alice", inbox / "a b")
    shutil.copytree(inbox / "a b", inbox / "a-b")
    for photo in (inbox / "a-b").iterdir():
        Image.open(photo).rotate(90).save(photo)
    result = await workspace.run(hostile.base_url)
    assert [(s.name, s.state) for s in result.subjects] == [("a b", DONE), ("a-b", DONE)]
    files = sorted(str(p.relative_to(workspace.outbox)) for p in workspace.outbox.rglob("*.*"))
    assert "a b/a-b.safetensors" in files and "a-b/a-b.safetensors" in files
    with workspace.store() as store:
        outputs = [o.path for s in store.subjects("test") for o in store.outputs(s.id)]
    assert len(outputs) == len(set(outputs)) == 2
