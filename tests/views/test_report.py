"""The run report: its JSON, its HTML, and the page as headless Chromium shows it."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from pipeline.jobfile.loading import load_job
from pipeline.store.protocol import NewImage
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE, FAILED, GEN_DONE, GEN_FAILED, REJECTED
from pipeline.views.report import build_report, write_job_report, write_report
from pipeline.views.report_html import thumbnail_data_uri
from pipeline.views.summary import summarize
from tests.conftest import force_generation_state, force_state, write_job
from tests.views.chromium import page_check, run_chromium

JOB = "portraits"
T0 = 1_700_000_000.0
NASTY_NAME = 'o\'<b>"&'
NASTY_REASON = "notes.png is a text file <script>alert(1)</script>: convert it & retry"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Fixture:
    store: SqliteStore
    outbox: Path

    @property
    def report_dir(self) -> Path:
        return self.outbox / JOB


def _picture(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (512, 384)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _images(n: int) -> list[NewImage]:
    return [NewImage(f"{i}.png", Path(f"/in/{i}.png"), f"sha{i}", "png", None) for i in range(n)]


def make_state(store: SqliteStore, tmp_path: Path) -> Fixture:
    """A job with a finished subject (2 prompts, 3 pictures, a LoRA file), a finished one
    with refused files and an odd name, a failed training and a rejected folder."""
    outbox = tmp_path / "outbox"
    folder = outbox / JOB

    alice = store.add_version(JOB, "alice", "fp", "subject", state="validated", now=T0,
                              images=_images(12))
    lora = folder / "alice" / "model_1_ABC.safetensors"
    lora.parent.mkdir(parents=True)
    lora.write_bytes(b"x" * 2048)
    force_state(store, 
        alice.id, now=T0 + 100, state=DONE, task_id="task-alice", task_status="SUCCESS",
        progress=100, model_name="model_1_ABC", lora_path=str(lora), submitted_at=T0 + 5,
        trained_at=T0 + 65, serving_at=T0 + 70, finished_at=T0 + 100,
    )
    gens = store.ensure_generations(alice.id, [
        (1, "01-studio-portrait", "a photo of ohwx person, studio portrait"),
        (2, "02-astronaut", "a photo of ohwx person as an astronaut"),
    ], now=T0 + 70)
    for gen, count, color in ((gens[0], 2, (200, 40, 40)), (gens[1], 1, (40, 40, 200))):
        for n in range(1, count + 1):
            picture = folder / "alice" / gen.slug / f"{n}.png"
            _picture(picture, color)
            store.record_output(gen.id, n, str(picture))
        force_generation_state(store, gen.id, now=T0 + 99, state=GEN_DONE, image_count=count)

    odd = store.add_version(JOB, NASTY_NAME, "fp", "subject", state="validated", now=T0,
                            images=_images(4), warnings=["only 4 usable images"],
                            rejections=[("notes.png", NASTY_REASON),
                                        ("empty.jpg", "empty.jpg is empty (0 bytes)")])
    force_state(store, odd.id, now=T0 + 90, state=DONE, task_id="task-odd",
                         task_status="SUCCESS", submitted_at=T0 + 6, trained_at=T0 + 66,
                         serving_at=T0 + 71, finished_at=T0 + 90,
                         error="1 prompt failed: <NSFW> filter")
    (g,) = store.ensure_generations(odd.id, [(1, "01-x", "a <b>bold</b> prompt")], now=T0)
    picture = folder / NASTY_NAME / "01-x" / "1.png"
    _picture(picture, (40, 160, 40), (300, 600))
    store.record_output(g.id, 1, str(picture))
    force_generation_state(store, g.id, now=T0 + 80, state=GEN_FAILED, error="NSFW <filter>")

    failed = store.add_version(JOB, "bob", "fp", "subject", state="validated", now=T0,
                               images=_images(10))
    force_state(store, failed.id, now=T0 + 50, state=FAILED, task_id="task-bob",
                         task_status="FAILED", submitted_at=T0 + 5, finished_at=T0 + 50,
                         error="the training FAILED on the service: out of memory")
    store.add_version(JOB, "too_many", "fp", "subject", state=REJECTED, now=T0,
                      error="51 images, at most 50 per training")
    return Fixture(store, outbox)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Fixture]:
    with SqliteStore(tmp_path / "state.db") as store:
        yield make_state(store, tmp_path)


def _report(state: Fixture) -> dict:
    return build_report(JOB, summarize(state.store, JOB), state.outbox, state.store, now=T0 + 200)


def _by_name(data: dict) -> dict[str, dict]:
    return {s["name"]: s for s in data["subjects"]}


# --- the data --------------------------------------------------------------------------------


def test_report_data_counts_and_totals(state: Fixture) -> None:
    data = _report(state)
    assert data["job"] == JOB
    assert data["generated_at"] == "2023-11-14T22:16:40+00:00"
    assert data["counts"] == {"done": 2, "failed": 1, "rejected": 1}
    assert data["totals"] == {"subjects": 4, "pictures": 4, "rejected_files": 2}
    json.dumps(data)  # JSON-able as it is


def test_report_data_per_subject(state: Fixture) -> None:
    alice = _by_name(_report(state))["alice"]
    assert alice["state"] == "done" and alice["version"] == 1 and alice["images"] == 12
    assert alice["training"]["task_id"] == "task-alice"
    assert alice["training"]["status"] == "SUCCESS"
    assert alice["lora_file"] == {"path": "alice/model_1_ABC.safetensors", "bytes": 2048}
    assert alice["prompts_done"] == 2 and alice["prompts_total"] == 2
    assert [(p["index"], p["slug"], p["prompt"], p["pictures"]) for p in alice["prompts"]] == [
        (1, "01-studio-portrait", "a photo of ohwx person, studio portrait",
         ["alice/01-studio-portrait/1.png", "alice/01-studio-portrait/2.png"]),
        (2, "02-astronaut", "a photo of ohwx person as an astronaut",
         ["alice/02-astronaut/1.png"]),
    ]
    for picture in (p for prompt in alice["prompts"] for p in prompt["pictures"]):
        assert (state.report_dir / picture).is_file()


def test_report_timings_have_durations_where_computable(state: Fixture) -> None:
    subjects = _by_name(_report(state))
    timings = subjects["alice"]["timings"]
    assert timings["at"]["submitted"] == T0 + 5
    assert timings["at_iso"]["discovered"] == "2023-11-14T22:13:20+00:00"
    assert timings["durations"] == {
        "preparing": 5.0, "training": 60.0, "deploying": 5.0, "generating": 30.0, "total": 100.0
    }
    bob = subjects["bob"]["timings"]["durations"]
    assert bob["training"] is None and bob["deploying"] is None
    assert bob["preparing"] == 5.0 and bob["total"] == 50.0
    rejected = subjects["too_many"]["timings"]["durations"]
    assert set(rejected.values()) == {None}


def test_report_keeps_refusals_warnings_and_errors(state: Fixture) -> None:
    subjects = _by_name(_report(state))
    odd = subjects[NASTY_NAME]
    assert odd["rejected_files"] == [
        {"file": "empty.jpg", "reason": "empty.jpg is empty (0 bytes)"},
        {"file": "notes.png", "reason": NASTY_REASON},
    ]
    assert odd["warnings"] == ["only 4 usable images"]
    assert odd["prompts"][0]["state"] == "failed"
    assert odd["prompts"][0]["error"] == "NSFW <filter>"
    assert subjects["bob"]["error"] == "the training FAILED on the service: out of memory"
    assert subjects["too_many"]["error"] == "51 images, at most 50 per training"


def test_write_report_writes_both_files_atomically(state: Fixture) -> None:
    data = _report(state)
    json_path, html_path = write_report(data, state.outbox)
    assert (json_path, html_path) == (state.report_dir / "report.json",
                                      state.report_dir / "report.html")
    assert json.loads(json_path.read_text(encoding="utf-8")) == data
    assert html_path.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert not list(state.report_dir.glob(".*.part"))
    write_report(data, state.outbox)  # again, over the old files
    assert not list(state.report_dir.glob(".*.part"))


def test_write_job_report_from_a_job_file(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path / "jobs", name=JOB))
    with SqliteStore(tmp_path / "other" / "state.db") as store:
        fixture = make_state(store, tmp_path / "other")
        # The job's outbox is next to its file: move the pictures there.
        shutil.copytree(fixture.outbox, job.job.outbox)
        json_path, html_path = write_job_report(job, store, now=T0)
    assert json_path == job.job.outbox / JOB / "report.json"
    assert html_path.is_file()
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["totals"]["subjects"] == 4


def test_an_empty_job_gets_a_report_too(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        data = build_report("empty", [], tmp_path / "outbox", store)
    _, html_path = write_report(data, tmp_path / "outbox")
    assert "No subjects yet" in html_path.read_text(encoding="utf-8")


# --- the page --------------------------------------------------------------------------------


def _page(state: Fixture) -> str:
    _, html_path = write_report(_report(state), state.outbox)
    return html_path.read_text(encoding="utf-8")


def test_html_escapes_every_text(state: Fixture) -> None:
    page = _page(state)
    assert "<script" not in page
    assert html.escape(NASTY_REASON) in page
    assert html.escape(NASTY_NAME) in page
    assert "a &lt;b&gt;bold&lt;/b&gt; prompt" in page
    assert "NSFW &lt;filter&gt;" in page
    assert "1 prompt failed: &lt;NSFW&gt; filter" in page


def test_html_is_self_contained(state: Fixture) -> None:
    page = _page(state)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/jpeg;base64,") for s in sources)
    for href in re.findall(r'\bhref="([^"]*)"', page):
        assert not re.match(r"^[a-z]+:", href), href  # relative links only
        if not href.startswith("#"):
            target = state.report_dir / unquote(html.unescape(href))
            assert target.is_file(), href


def test_thumbnails_are_small_jpegs_linking_to_the_full_pictures(state: Fixture) -> None:
    page = _page(state)
    links = re.findall(r'<a href="([^"]+)"[^>]*><img src="data:image/jpeg;base64,([^"]+)"', page)
    assert [href for href, _ in links] == [
        "alice/01-studio-portrait/1.png", "alice/01-studio-portrait/2.png",
        "alice/02-astronaut/1.png", "o%27%3Cb%3E%22%26/01-x/1.png",
    ]
    sizes = []
    for _, encoded in links:
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as thumb:
            assert thumb.format == "JPEG"
            sizes.append(thumb.size)
    assert sizes == [(160, 120), (160, 120), (160, 120), (80, 160)]


def test_a_missing_picture_gets_a_placeholder(state: Fixture) -> None:
    (state.report_dir / "alice" / "02-astronaut" / "1.png").unlink()
    (state.report_dir / "alice" / "01-studio-portrait" / "2.png").write_bytes(b"not a png")
    page = _page(state)
    assert page.count('class="missing"') == 2
    assert page.count("<img ") == 2
    assert 'href="alice/02-astronaut/1.png"' in page


def test_thumbnail_flattens_transparency(tmp_path: Path) -> None:
    path = tmp_path / "t.png"
    Image.new("RGBA", (400, 200), (0, 0, 0, 0)).save(path)
    uri = thumbnail_data_uri(path)
    assert uri is not None
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as thumb:
        assert thumb.size == (160, 80)
        assert thumb.getpixel((80, 40)) >= (250, 250, 250)  # white, not black


# --- in a real browser -----------------------------------------------------------------------

_CHECK_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const imgs = [...document.querySelectorAll("img")];
  const visible = (e) => e.getClientRects().length > 0 &&
    getComputedStyle(e).visibility !== "hidden" && e.getBoundingClientRect().height > 0;
  const result = {
    images: imgs.length,
    decoded: imgs.filter((i) => i.complete && i.naturalWidth > 0).length,
    shown: imgs.filter(visible).length,
    widths: imgs.map((i) => i.naturalWidth),
    linked: imgs.filter((i) => i.closest("a") && i.closest("a").getAttribute("href")).length,
    reasons: [...document.querySelectorAll(".refused .reason")]
      .map((e) => ({text: e.innerText, visible: visible(e)})),
    counts: Object.fromEntries([...document.querySelectorAll(".count")]
      .map((e) => [e.dataset.state, e.querySelector("b").innerText])),
    pictures: document.getElementById("total-pictures").innerText,
    subjects: document.querySelectorAll("section.subject").length,
    badges: [...document.querySelectorAll("section.subject")]
      .map((e) => e.querySelector(".badge").innerText.toLowerCase()),
    text: document.body.innerText,
  };
  document.body.setAttribute("data-check", JSON.stringify(result));
});
</script>
"""


def test_report_in_headless_chromium(state: Fixture, tmp_path: Path) -> None:
    _, html_path = write_report(_report(state), state.outbox)

    # What a person sees: a screenshot, kept as a test artifact.
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = tmp_path / "report.png"
    run_chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1200,2000",
                 html_path.as_uri())
    with Image.open(screenshot) as shot:
        assert shot.size == (1200, 2000)
        low, high = shot.convert("L").getextrema()
        assert high - low > 100  # not a blank page
    shutil.copyfile(screenshot, ARTIFACTS / "report.png")

    # What the page holds once rendered.
    check = page_check(tmp_path, html_path, _CHECK_SCRIPT)

    assert check["images"] == 4
    assert check["decoded"] == 4  # every thumbnail decodes
    assert check["shown"] == 4
    assert check["widths"] == [160, 160, 160, 80]
    assert check["linked"] == 4
    assert check["pictures"] == "4"
    assert check["counts"] == {"rejected": "1", "done": "2", "failed": "1"}
    assert check["subjects"] == 4
    assert sorted(check["badges"]) == ["done", "done", "failed", "rejected"]
    reasons = {r["text"]: r["visible"] for r in check["reasons"]}
    assert reasons == {NASTY_REASON: True, "empty.jpg is empty (0 bytes)": True}
    text = check["text"]
    assert "the training FAILED on the service: out of memory" in text
    assert "51 images, at most 50 per training" in text
    assert "a photo of ohwx person as an astronaut" in text
    assert "01-studio-portrait" in text
