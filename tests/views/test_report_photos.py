"""The report's account of a subject's own photos: refused ones as cards with a thumbnail
and the reason, accepted ones the upload changed, the count of good face photos."""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from pipeline.jobfile.loading import load_job
from pipeline.store.protocol import NewImage
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE
from pipeline.views.report import build_report, write_job_report, write_report
from pipeline.views.summary import summarize
from tests.conftest import force_state, write_job
from tests.views.chromium import page_check, run_chromium

JOB = "photos"
T0 = 1_700_000_000.0
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BLURRY_REASON = "blurry.jpg is out of focus (sharpness 3.1 < 40) & <b>retake</b> it"
HOSTILE_NAME = "\"><img src=x onerror=alert(1)>.jpg"
HOSTILE_REASON = "</span><script>alert(1)</script><a href=\"javascript:alert(1)\">x</a>"
NOT_A_JPEG = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>"
ROTATED = ("rotated upright (EXIF orientation 6)", "metadata removed")
CONVERTED = ("converted from HEIC to JPEG",)


def _jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


BLURRY_THUMB = _jpeg((160, 120), (180, 90, 40))
HOSTILE_THUMB = _jpeg((90, 160), (40, 90, 180))


def _image(name: str, faces: int | None, changes: tuple[str, ...] = ()) -> NewImage:
    return NewImage(name, Path(f"/in/{name}"), f"sha-{name}", "jpeg", None, faces=faces,
                    sharpness=120.5 if faces is not None else None, changes=changes)


def make_store(store: SqliteStore) -> None:
    """carol: three photos (two sent converted, two with one face) and four refused files
    (two with thumbnails, one without, one whose stored bytes are not a JPEG); dave: two
    photos sent as they are, never counted for faces, nothing refused."""
    carol = store.add_version(
        JOB, "carol", "fp", "subject", state="validated", now=T0,
        images=[_image("a.jpg", 1, ROTATED), _image("b.heic", 1, CONVERTED), _image("c.jpg", 2)],
        rejections=[("blurry.jpg", BLURRY_REASON, BLURRY_THUMB),
                    (HOSTILE_NAME, HOSTILE_REASON, HOSTILE_THUMB),
                    ("notes.txt", "notes.txt is not a picture", None),
                    ("fake.jpg", "fake.jpg is damaged", NOT_A_JPEG)],
    )
    force_state(store, carol.id, now=T0 + 10, state=DONE)
    store.add_version(JOB, "dave", "fp", "subject", state="validated", now=T0,
                      images=[_image("x.jpg", None), _image("y.jpg", None)])


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str, cls: str | None = None) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if child.tag == tag and (cls is None or cls in child.classes):
                    found.append(child)
                found.extend(child.find_all(tag, cls))
        return found

    def find(self, tag: str, cls: str | None = None) -> Node | None:
        found = self.find_all(tag, cls)
        return found[0] if found else None


class _TreeBuilder(HTMLParser):
    VOID = frozenset({"img", "br", "meta", "link", "input", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(page)
    builder.close()
    return builder.root


@dataclass
class Written:
    json_path: Path
    html_path: Path

    @property
    def page(self) -> str:
        return self.html_path.read_text(encoding="utf-8")

    def subject(self, name: str) -> Node:
        for section in parse(self.page).find_all("section", "subject"):
            h2 = section.find("h2")
            if h2 is not None and h2.text() == name:
                return section
        raise AssertionError(f"no section for {name}")


@pytest.fixture
def written(tmp_path: Path) -> Iterator[Written]:
    """The report as the CLI writes it: ``write_job_report`` on a job file."""
    job = load_job(write_job(tmp_path / "jobs", name=JOB))
    with SqliteStore(tmp_path / "state.db") as store:
        make_store(store)
        json_path, html_path = write_job_report(job, store, now=T0 + 20)
        yield Written(json_path, html_path)


def _cards(section: Node) -> dict[str, Node]:
    cards = {}
    for card in section.find_all("figure", "refused-photo"):
        name = card.find("span", "file")
        assert name is not None
        cards[name.text()] = card
    return cards


def _decoded(card: Node) -> Image.Image:
    img = card.find("img")
    assert img is not None
    prefix = "data:image/jpeg;base64,"
    assert img.attrs["src"].startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(img.attrs["src"][len(prefix):],
                                                  validate=True)))


# --- refused photos --------------------------------------------------------------------------


def test_each_refused_file_gets_a_card_with_its_name_and_reason(written: Written) -> None:
    cards = _cards(written.subject("carol"))
    assert list(cards) == [HOSTILE_NAME, "blurry.jpg", "fake.jpg", "notes.txt"]  # by name
    reasons = {name: card.find("span", "reason") for name, card in cards.items()}
    assert {name: r.text() for name, r in reasons.items() if r is not None} == {
        "blurry.jpg": BLURRY_REASON, "fake.jpg": "fake.jpg is damaged",
        "notes.txt": "notes.txt is not a picture", HOSTILE_NAME: HOSTILE_REASON,
    }
    page = written.page
    assert html.escape(BLURRY_REASON) in page  # escaped as every other text of the page
    assert html.escape(HOSTILE_REASON) in page and html.escape(HOSTILE_NAME) in page
    assert not _cards(written.subject("dave"))


def test_a_refused_photo_shows_its_thumbnail_decoded(written: Written) -> None:
    cards = _cards(written.subject("carol"))
    for name, size in (("blurry.jpg", (160, 120)), (HOSTILE_NAME, (90, 160))):
        with _decoded(cards[name]) as thumb:
            assert thumb.format == "JPEG" and thumb.size == size, name
        img = cards[name].find("img")
        assert img is not None and img.attrs["alt"] == name


def test_a_refused_file_without_a_usable_thumbnail_gets_a_placeholder(written: Written) -> None:
    cards = _cards(written.subject("carol"))
    for name in ("notes.txt", "fake.jpg"):  # none stored; stored bytes that are no JPEG
        assert cards[name].find("img") is None, name
        placeholder = cards[name].find("span", "no-preview")
        assert placeholder is not None and name in placeholder.text()
    assert base64.b64encode(NOT_A_JPEG).decode() not in written.page
    assert "<svg" not in written.page


def test_hostile_names_and_reasons_stay_text(written: Written) -> None:
    root = parse(written.page)
    assert not root.find_all("script")
    for tag in ("img", "a"):
        for node in root.find_all(tag):
            assert not [a for a in node.attrs if a.startswith("on")], node.attrs
            assert not node.attrs.get("href", "").lower().startswith("javascript")
    sources = [img.attrs["src"] for img in root.find_all("img")]
    assert len(sources) == 2
    assert all(s.startswith("data:image/jpeg;base64,") for s in sources)


def test_without_thumbnails_every_refused_file_gets_a_placeholder(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "state.db") as store:
        make_store(store)
        data = build_report(JOB, summarize(store, JOB), tmp_path / "outbox", store, now=T0)
    _, html_path = write_report(data, tmp_path / "outbox")  # no thumbnails= given
    root = parse(html_path.read_text(encoding="utf-8"))
    assert not root.find_all("img")
    assert len(root.find_all("span", "no-preview")) == 4


# --- accepted photos -------------------------------------------------------------------------


def test_photos_sent_converted_are_listed_with_what_changed(written: Written) -> None:
    table = written.subject("carol").find("div", "converted")
    assert table is not None
    rows = [(tr.find("td", "file"), tr.find("td", "changes")) for tr in table.find_all("tr")[1:]]
    assert [(f.text(), c.text()) for f, c in rows if f is not None and c is not None] == [
        ("a.jpg", "rotated upright (EXIF orientation 6); metadata removed"),
        ("b.heic", "converted from HEIC to JPEG"),
    ]
    note = table.find("p", "as-is")
    assert note is not None and note.text() == "1 other photo sent exactly as on disk"
    assert written.subject("dave").find("div", "converted") is None


def test_good_face_photos_are_counted_when_known(written: Written) -> None:
    fact = written.subject("carol").find("li", "good-faces")
    assert fact is not None and fact.text() == "good face photos 2"
    assert written.subject("dave").find("li", "good-faces") is None


# --- report.json -----------------------------------------------------------------------------


def test_report_json_has_the_photos_but_no_image_bytes(written: Written) -> None:
    text = written.json_path.read_text(encoding="utf-8")
    assert "thumbnail" not in text
    for thumb in (BLURRY_THUMB, HOSTILE_THUMB, NOT_A_JPEG):
        assert base64.b64encode(thumb).decode()[:40] not in text
    assert "/9j/" not in text and "data:image" not in text  # no JPEG, base64 or as a URI
    carol = {s["name"]: s for s in json.loads(text)["subjects"]}["carol"]
    assert carol["good_face_photos"] == 2
    assert carol["photos"] == [
        {"file": "a.jpg", "faces": 1, "sharpness": 120.5, "changes": list(ROTATED)},
        {"file": "b.heic", "faces": 1, "sharpness": 120.5, "changes": list(CONVERTED)},
        {"file": "c.jpg", "faces": 2, "sharpness": 120.5, "changes": []},
    ]
    assert [r["file"] for r in carol["rejected_files"]] == [
        HOSTILE_NAME, "blurry.jpg", "fake.jpg", "notes.txt"]


# --- in a real browser -----------------------------------------------------------------------

_CHECK_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const visible = (e) => e.getClientRects().length > 0 &&
    getComputedStyle(e).visibility !== "hidden" && e.getBoundingClientRect().height > 0;
  const cards = [...document.querySelectorAll("figure.refused-photo")].map((card) => {
    const img = card.querySelector("img");
    const missing = card.querySelector(".no-preview");
    return {
      file: card.querySelector(".file").innerText,
      reason: card.querySelector(".reason").innerText,
      reasonShown: visible(card.querySelector(".reason")),
      width: img && img.complete ? img.naturalWidth : null,
      imgShown: img ? visible(img) : null,
      placeholderShown: missing ? visible(missing) : null,
    };
  });
  document.body.setAttribute("data-check", JSON.stringify({
    cards,
    converted: [...document.querySelectorAll(".converted td.changes")].map((e) => e.innerText),
    goodFaces: [...document.querySelectorAll(".good-faces")].map((e) => e.innerText),
  }));
});
</script>
"""


def test_refused_photos_in_headless_chromium(written: Written, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = tmp_path / "report-photos.png"
    run_chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1200,1400",
                 written.html_path.as_uri())
    shutil.copyfile(screenshot, ARTIFACTS / "report-photos.png")

    check = page_check(tmp_path, written.html_path, _CHECK_SCRIPT)
    cards = {card["file"]: card for card in check["cards"]}
    assert set(cards) == {"blurry.jpg", "fake.jpg", "notes.txt", HOSTILE_NAME}
    assert all(card["reasonShown"] for card in cards.values())
    assert cards[HOSTILE_NAME]["reason"] == HOSTILE_REASON
    assert (cards["blurry.jpg"]["width"], cards["blurry.jpg"]["imgShown"]) == (160, True)
    assert (cards[HOSTILE_NAME]["width"], cards[HOSTILE_NAME]["imgShown"]) == (90, True)
    for name in ("notes.txt", "fake.jpg"):
        assert cards[name]["imgShown"] is None and cards[name]["placeholderShown"], name
    assert check["converted"] == ["rotated upright (EXIF orientation 6); metadata removed",
                                  "converted from HEIC to JPEG"]
    assert check["goodFaces"] == ["good face photos 2"]
