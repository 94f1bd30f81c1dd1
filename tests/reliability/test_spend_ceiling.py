"""The spend ceiling across SIGKILLs: the pipeline as a real process, killed at random
moments with faults injected, never makes the service create more than the job's
``[max_spend]`` allows, and its ledger never counts less than the service made. Raised,
the ceiling lets the following passes finish the job."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE
from pipeline.views.summary import EXIT_OK, EXIT_SPEND_CEILING
from tests.reliability.harness import (
    DEFAULT_FAULTS,
    EMULATOR_TIMINGS,
    JOB,
    EmulatorProcess,
    SoakConfig,
    add_subjects,
    emulator_process,
    start_pipeline,
    subject_names,
    write_workspace,
)

CEILING = "\n[max_spend]\ntrainings = 5\nimages = 7\n"
RAISED = "\n[max_spend]\ntrainings = 50\nimages = 50\n"


def _pass(workdir: Path, job: Path, number: int, *, kill_after: float | None) -> int | None:
    process = start_pipeline(workdir, number, "run", str(job), "--max-wait", "60")
    try:
        return process.wait(kill_after if kill_after is not None else 300)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def _made(emulator: EmulatorProcess) -> tuple[int, int]:
    counters = emulator.counters()
    return int(counters["trainings_created"]["total"]), int(counters["images_requested"])


def _counted(workdir: Path) -> tuple[int, int]:
    with SqliteStore(workdir / "state" / "state.db", read_only=True) as store:
        spent = store.spent(JOB)
    return spent.training_count, spent.image_count


@pytest.mark.timeout(300)
def test_kills_never_take_the_service_past_the_ceiling(tmp_path: Path) -> None:
    config = SoakConfig(subjects=8, prompts=2, image_num=1, max_training_retries=0, seed=5,
                        faults={**DEFAULT_FAULTS, "fault_training_failed": 0.0})
    rng = random.Random(config.seed)
    with emulator_process(tmp_path, {**EMULATOR_TIMINGS, **config.faults,
                                     "seed": config.seed}) as emulator:
        job = write_workspace(tmp_path, emulator.base_url, config)
        job.write_text(job.read_text() + CEILING)
        add_subjects(tmp_path, subject_names(config.subjects), config.images, config.seed)
        number, kills = 0, 0
        while kills < 10:
            code = _pass(tmp_path, job, number, kill_after=rng.uniform(0.3, 2.5))
            number += 1
            kills += code is None
            made, counted = _made(emulator), _counted(tmp_path)
            assert made[0] <= 5 and made[1] <= 7, (made, number)
            assert counted[0] <= 5 and counted[1] <= 7, (counted, number)
            assert counted[0] >= made[0] and counted[1] >= made[1], (counted, made)
        codes = [_pass(tmp_path, job, number + n, kill_after=None) for n in range(3)]
        assert codes[-1] == EXIT_SPEND_CEILING, codes  # 8 trainings and 16 pictures wanted
        made, counted = _made(emulator), _counted(tmp_path)
        assert made[0] <= 5 and made[1] <= 7, made
        assert counted[0] >= made[0] and counted[1] >= made[1], (counted, made)

        job.write_text(job.read_text().replace(CEILING, RAISED))
        number += 3
        for n in range(6):
            if _pass(tmp_path, job, number + n, kill_after=None) == EXIT_OK:
                break
        with SqliteStore(tmp_path / "state" / "state.db", read_only=True) as store:
            states = {row.name: row.state for row in store.subjects(JOB)}
        assert set(states.values()) == {DONE}, states
        made = _made(emulator)
        counted = _counted(tmp_path)
        assert made[0] == 8 and counted[0] >= 8 and counted[1] >= made[1] >= 16
