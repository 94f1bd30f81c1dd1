"""Progress, report and notifications around a pass."""

from __future__ import annotations

import json

from aiohttp import web
from rich.console import Console

from pipeline.cli.samples import create_samples
from pipeline.engine.runner import Runner
from pipeline.jobfile.loading import load_job
from pipeline.notify.pass_hooks import PassHooks
from tests.conftest import EMULATOR_KEY, fast_settings, force_state, write_job


async def _receiver():
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/hook", received


async def test_failures_and_the_end_of_a_run_are_notified(tmp_path, emulator) -> None:
    server, url, received = await _receiver()
    try:
        job_file = write_job(tmp_path)
        job_file.write_text(job_file.read_text() + f'\n[on_complete]\nwebhook = "{url}"\n')
        create_samples(tmp_path / "inbox", count=2, images_per_subject=3, include_bad=False)
        job = load_job(job_file)
        emulator.emulator.config.fault_training_failed = 1.0
        settings = fast_settings(emulator.base_url, tmp_path / "state")
        with open(tmp_path / "out", "w") as out:
            async with PassHooks(job, settings, Console(file=out), check_every=60) as hooks:
                result = await Runner(job, settings).run_once(max_wait=20)
                html = await hooks.finished(result)
    finally:
        await server.cleanup()
    events = [r["event"] for r in received]
    assert events.count("run_finished") == 1 and "subject_failed" in events
    failed = [s["name"] for r in received if r["event"] == "subject_failed" for s in r["subjects"]]
    assert sorted(failed) == ["alice", "bob"]
    finished = next(r for r in received if r["event"] == "run_finished")
    assert {s["state"] for s in finished["subjects"]} == {"failed"}
    assert html is not None and html.exists()
    assert EMULATOR_KEY not in json.dumps(received)
    assert (tmp_path / "out").read_text() == ""  # not a terminal: no progress output


async def test_a_failure_mid_run_is_told_without_waiting_for_the_end(tmp_path) -> None:
    import asyncio

    from pipeline.store.sqlite import SqliteStore
    from pipeline.store.states import FAILED, VALIDATED

    server, url, received = await _receiver()
    try:
        job_file = write_job(tmp_path)
        job_file.write_text(job_file.read_text() + f'\n[on_complete]\nwebhook = "{url}"\n')
        job = load_job(job_file)
        settings = fast_settings("http://127.0.0.1:9", tmp_path / "state")
        with SqliteStore(tmp_path / "state" / "state.db") as store, \
                open(tmp_path / "out", "w") as out:
            row = store.add_version("test", "alice", "fp", "subject", state=VALIDATED, now=0)
            async with PassHooks(job, settings, Console(file=out), check_every=0.02):
                force_state(store, row.id, now=1, state=FAILED, error="boom")
                for _ in range(100):  # the watcher looks every 20 ms
                    if received:
                        break
                    await asyncio.sleep(0.02)
    finally:
        await server.cleanup()
    assert [r["event"] for r in received] == ["subject_failed"]
    assert received[0]["subjects"][0]["error"] == "boom"


async def test_the_hooks_only_read_the_store_and_wait_for_the_runner_to_make_it(tmp_path) -> None:
    from pipeline.store.sqlite import SqliteStore
    from pipeline.store.states import VALIDATED

    job = load_job(write_job(tmp_path))
    settings = fast_settings("http://127.0.0.1:9", tmp_path / "state")
    with open(tmp_path / "out", "w") as out:
        async with PassHooks(job, settings, Console(file=out)) as hooks:
            assert await hooks.snapshot() == []  # no store yet: nothing to show, nothing created
            assert not (tmp_path / "state").exists()
            with SqliteStore(tmp_path / "state" / "state.db") as store:  # the runner's
                store.add_version("test", "alice", "fp", "subject", state=VALIDATED, now=0)
                assert [s.name for s in await hooks.snapshot()] == ["alice"]
            assert hooks._store is not None and hooks._store.read_only


async def test_a_state_folder_the_runner_refuses_does_not_break_the_hooks(tmp_path) -> None:
    job = load_job(write_job(tmp_path))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "test").symlink_to(tmp_path / "elsewhere")
    settings = fast_settings("http://127.0.0.1:9", None)  # type: ignore[arg-type]
    with open(tmp_path / "out", "w") as out:
        async with PassHooks(job, settings, Console(file=out)) as hooks:
            assert await hooks.snapshot() == []
    assert list((tmp_path / "elsewhere").iterdir()) == []


def _record_reads(monkeypatch) -> list[tuple[int, str]]:
    """(thread, method) of every read through a read-only store: the hooks' reads."""
    import threading

    from pipeline.store.sqlite import SqliteStore

    reads: list[tuple[int, str]] = []
    for method in ("subjects", "generations"):
        real = getattr(SqliteStore, method)

        def recording(self, *args, _real=real, _method=method, **kwargs):
            if self.read_only:
                reads.append((threading.get_ident(), _method))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(SqliteStore, method, recording)
    return reads


def _done_subjects(store, count: int) -> list:
    from pipeline.store.states import DONE, VALIDATED

    rows = []
    for n in range(count):
        row = store.add_version("test", f"s{n:03d}", "fp", "subject", state=VALIDATED, now=0)
        rows.append(force_state(store, row.id, now=1, state=DONE))
    return rows


async def test_the_hooks_read_the_store_off_the_event_loop(tmp_path, monkeypatch) -> None:
    import asyncio
    import io
    import threading

    from pipeline.store.sqlite import SqliteStore
    from pipeline.store.states import FAILED

    server, url, received = await _receiver()
    try:
        job_file = write_job(tmp_path)
        job_file.write_text(job_file.read_text() + f'\n[on_complete]\nwebhook = "{url}"\n')
        job = load_job(job_file)
        settings = fast_settings("http://127.0.0.1:9", tmp_path / "state")
        reads = _record_reads(monkeypatch)
        terminal = Console(file=io.StringIO(), width=120, force_terminal=True)
        with SqliteStore(tmp_path / "state" / "state.db") as store:
            rows = _done_subjects(store, 40)
            async with PassHooks(job, settings, terminal, check_every=0.01):
                force_state(store, rows[7].id, now=2, state=FAILED, error="boom")
                for _ in range(100):  # the watcher looks every 10 ms
                    if received:
                        break
                    await asyncio.sleep(0.02)
    finally:
        await server.cleanup()
    assert [s["name"] for r in received for s in r["subjects"]] == ["s007"]
    assert {method for _, method in reads} == {"subjects", "generations"}  # the view drew
    threads = {thread for thread, _ in reads}
    assert threading.get_ident() not in threads and len(threads) == 1


async def test_a_look_for_failures_reads_only_the_failed(tmp_path, monkeypatch) -> None:
    from pipeline.store.sqlite import SqliteStore
    from pipeline.store.states import FAILED

    job_file = write_job(tmp_path)
    job_file.write_text(job_file.read_text() + '\n[on_complete]\ncommand = ["true"]\n')
    job = load_job(job_file)
    settings = fast_settings("http://127.0.0.1:9", tmp_path / "state")
    with SqliteStore(tmp_path / "state" / "state.db") as store, \
            open(tmp_path / "out", "w") as out:
        rows = _done_subjects(store, 40)
        async with PassHooks(job, settings, Console(file=out), check_every=3600) as hooks:
            force_state(store, rows[3].id, now=2, state=FAILED, error="boom")
            reads = _record_reads(monkeypatch)
            sent = []
            monkeypatch.setattr(hooks, "_notify", lambda event, subjects, report: sent.append(
                (event, [s.name for s in subjects])) or _nothing())
            await hooks._check_failures()
            await hooks._check_failures()
    assert sent == [("subject_failed", ["s003"])]
    assert [method for _, method in reads] == ["subjects", "generations", "subjects"]


async def _nothing() -> None:
    return None
