"""A subject's uploads start as soon as its folder is checked, while others are still read."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from pipeline.api import ApiClient
from pipeline.emulator import EmulatorHandle
from pipeline.engine.runner import Runner
from pipeline.engine.stages import intake
from pipeline.jobfile.loading import load_job
from pipeline.store.states import DONE
from tests.conftest import fast_settings, write_job
from tests.engine.folders import write_subjects


async def test_the_first_folder_uploads_before_the_last_is_checked(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = load_job(write_job(tmp_path, prompts=1))
    names = write_subjects(tmp_path / "inbox", 2, 2)
    uploading = threading.Event()
    check, upload_url = intake._check, ApiClient.request_upload_url
    waited: list[bool] = []

    def check_after_the_first_upload(job: Any, folder: Any, *rest: Any) -> Any:
        if folder.name == names[-1]:  # the last folder waits for the first one's upload
            waited.append(uploading.wait(timeout=10))
        return check(job, folder, *rest)

    async def noting(client: ApiClient, extension: Any) -> Any:
        uploading.set()
        return await upload_url(client, extension)

    monkeypatch.setattr(intake, "_check", check_after_the_first_upload)
    monkeypatch.setattr(intake, "MAX_CHECK_THREADS", 1)  # one folder after the other
    monkeypatch.setattr(ApiClient, "request_upload_url", noting)
    result = await Runner(job, fast_settings(emulator.base_url, tmp_path / "state")).run_once(
        max_wait=20)
    assert waited == [True]  # the first subject was uploading while the last was checked
    assert [s.state for s in result.subjects] == [DONE, DONE]
