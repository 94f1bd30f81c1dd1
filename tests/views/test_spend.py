"""Spend in the views: ``spend``'s data and lines, and each subject's spend in the report."""

from __future__ import annotations

import html
import json
from pathlib import Path

from rich.console import Console

from pipeline.jobfile.loading import JobConfig, load_job
from pipeline.jobfile.spending import PricesSection
from pipeline.store.ledger import Charge
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import GEN_PENDING, GEN_SUBMITTING, GENERATING, VALIDATED
from pipeline.views.report import build_report, write_job_report
from pipeline.views.spend import print_spend, spend_data
from pipeline.views.summary import summarize
from tests.conftest import closed_after_test, force_state, write_job

PRICES = PricesSection(currency="EUR", subject_training=2.5, txt2img_image=0.01)
ODD = 'o\'<b>"&'


def _paid_for(store: SqliteStore) -> None:
    """alice: a training and two requests of 2 pictures, one sent again after a lost
    answer; the odd name: a training only."""
    for name in ("alice", ODD):
        row = store.add_version("test", name, "fp", "subject", state=VALIDATED, now=1.0)
        force_state(store, row.id, now=1.0, state="uploaded")
        store.transition(row.id, expected="uploaded", to="submitting", now=2.0, charge=Charge(
            "test", row.id, name, 1, "training", 1, "p1", kind="subject"))
    alice = store.latest("test", "alice")
    assert alice is not None
    force_state(store, alice.id, now=3.0, state=GENERATING)
    [gen] = store.ensure_generations(alice.id, [(1, "01-a", "a")], now=3.0)
    charge = Charge("test", alice.id, "alice", 1, "txt2img", 2, "p1", generation_id=gen.id)
    store.transition_generation(gen.id, expected=GEN_PENDING, to=GEN_SUBMITTING, now=4.0,
                                charge=charge)
    store.update_generation(gen.id, now=5.0, charge=Charge(
        "test", alice.id, "alice", 1, "txt2img", 2, "p1", generation_id=gen.id, resend=True))
    store.settle_charge(alice.id, generation_id=gen.id, outcome="created", now=6.0)


def _job(tmp_path: Path, tables: str = "") -> JobConfig:
    path = write_job(tmp_path)
    path.write_text(path.read_text(encoding="utf-8") + tables, encoding="utf-8")
    return load_job(path)


def test_spend_data_per_subject_with_money_and_ceiling(tmp_path: Path) -> None:
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    _paid_for(store)
    job = _job(tmp_path, '[prices]\ncurrency = "EUR"\nsubject_training = 2.5\n'
                         'txt2img_image = 0.01\n[max_spend]\nimages = 10\n'
                         '[max_spend.per_pass]\ntrainings = 1\n')
    data = spend_data(job, store)
    alice = data["subjects"][0]
    assert (alice["name"], alice["trainings"], alice["images"]) == (
        "alice", {"subject": 1}, {"txt2img": 4})
    assert (alice["requests"], alice["resends"], alice["unanswered"]) == (3, 1, 2)
    assert alice["money"] == 2.54
    assert data["total"]["money"] == 5.04 and data["unpriced"] == []
    assert data["ceiling"] == {"job": {"images": {"limit": 10, "spent": 4}},
                               "per_pass": {"trainings": 1}}
    console = Console(record=True, width=200, markup=False, emoji=False, highlight=False)
    print_spend(console, data)
    out = console.export_text()
    assert "alice: 1 subject training, 4 txt2img images = 2.54 EUR" in out
    assert f"{ODD}: 1 subject training = 2.50 EUR" in out
    assert "total: 2 subject trainings, 4 txt2img images = 5.04 EUR" in out
    assert "ceiling: images 4 of 10; per pass: trainings 1" in out
    assert "3 request(s) have no answer on record" in out
    assert "1 request(s) were sent again" in out


def test_a_missing_price_says_which(tmp_path: Path) -> None:
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    _paid_for(store)
    data = spend_data(_job(tmp_path, '[prices]\ncurrency = "EUR"\nsubject_training = 2\n'),
                      store)
    assert data["unpriced"] == ["txt2img_image"] and data["total"]["money"] is None
    console = Console(record=True, width=200)
    print_spend(console, data)
    assert "money unknown: [prices] has no txt2img_image" in console.export_text()


def test_the_report_shows_each_subjects_spend_and_the_total(tmp_path: Path) -> None:
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    _paid_for(store)
    data = build_report("test", summarize(store, "test"), tmp_path / "outbox", store,
                        now=1.0, prices=PRICES)
    by_name = {s["name"]: s for s in data["subjects"]}
    assert by_name["alice"]["spend"]["images"] == {"txt2img": 4}
    assert by_name["alice"]["spend"]["money"] == 2.54
    assert data["spend"]["currency"] == "EUR" and data["spend"]["money"] == 5.04
    job = _job(tmp_path, '[prices]\ncurrency = "EUR"\nsubject_training = 2.5\n'
                         'txt2img_image = 0.01\n')
    json_path, html_path = write_job_report(job, store, now=1.0)
    assert json.loads(json_path.read_text())["spend"]["money"] == 5.04
    page = html_path.read_text(encoding="utf-8")
    assert 'spent <span id="total-spend">2 subject trainings, 4 txt2img images = 5.04 EUR' in page
    assert "spent <b>1 subject training, 4 txt2img images = 2.54 EUR</b>" in page
    assert html.escape(ODD, quote=True) in page and ODD not in page


def test_the_report_without_prices_shows_units(tmp_path: Path) -> None:
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    _paid_for(store)
    _, html_path = write_job_report(_job(tmp_path), store, now=1.0)
    page = html_path.read_text(encoding="utf-8")
    assert "spent <b>1 subject training, 4 txt2img images</b>" in page and "EUR" not in page
