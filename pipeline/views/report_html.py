"""The report page: one self-contained HTML file (inline CSS, no script, no external
assets). Thumbnails of the generated pictures are small JPEG data URIs made one at a time
while the page is written, each linking to the full picture by a path relative to the
report; those of refused photos come ready-made from the store (``report_photos``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import structlog
from PIL import Image

from ..budget import money_text, units_text
from ..store.ledger import Tally
from .report_photos import PHOTOS_CSS, converted_html, jpeg_data_uri, refused_html
from .summary import MILESTONES
from .textsafe import html_text as _e

log = structlog.get_logger(__name__)

THUMB_SIZE: Final = 160
THUMB_QUALITY: Final = 78


# --- the page --------------------------------------------------------------------------------

_CSS: Final = """
:root{--fg:#1d232b;--muted:#5b6673;--line:#e3e7ec;--bg:#f5f7fa;--card:#fff;
--green:#1f7a3f;--green-bg:#e3f4e8;--cyan:#0b6a85;--cyan-bg:#e0f2f7;--yellow:#8a5b00;
--yellow-bg:#fdf1d6;--red:#b42318;--red-bg:#fde7e5;--grey:#4b5563;--grey-bg:#eceff3}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header{background:#1d232b;color:#fff;padding:20px 32px}
header h1{margin:0 0 4px;font-size:22px;font-weight:600}
header .meta{margin:0 0 12px;color:#b8c2cc;font-size:13px}
main{max-width:1180px;margin:0 auto;padding:20px 32px 40px}
.counts{display:flex;flex-wrap:wrap;gap:8px;margin:0;padding:0;list-style:none}
.counts b{font-size:15px;margin-right:5px}
.overview{background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:10px 22px 14px;margin:0 0 18px}
.overview a{color:inherit;font-weight:600;text-decoration:none}
.overview a:hover{text-decoration:underline}
.subject{background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:18px 22px;margin:0 0 18px;box-shadow:0 1px 2px rgba(0,0,0,.04)}
.subject-head{display:flex;align-items:center;gap:10px;flex-wrap:wrap}
.subject h2{margin:0;font-size:19px}
.version{color:var(--muted);font-size:13px}
.count{padding:3px 12px;border-radius:999px;font-size:13px;font-weight:600;
background:var(--grey-bg);color:var(--grey)}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:12px;
font-weight:600;text-transform:uppercase;letter-spacing:.04em;background:var(--grey-bg);
color:var(--grey)}
.s-done,.s-trained{background:var(--green-bg);color:var(--green)}
.s-validated,.s-uploading,.s-uploaded,.s-submitting,.s-training,.s-generating
{background:var(--cyan-bg);color:var(--cyan)}
.s-rejected{background:var(--yellow-bg);color:var(--yellow)}
.s-failed,.s-canceled{background:var(--red-bg);color:var(--red)}
.facts{display:flex;flex-wrap:wrap;gap:4px 22px;margin:10px 0 4px;padding:0;
color:var(--muted);font-size:13px;list-style:none}
.facts b{color:var(--fg);font-weight:600}
.facts code,.prompt-text code{font-size:12px}
h3{font-size:14px;margin:16px 0 6px;color:var(--muted);text-transform:uppercase;
letter-spacing:.05em}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 10px 5px 0;border-bottom:1px solid var(--line);
vertical-align:top}
th{color:var(--muted);font-weight:600}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.timings td,.timings th{white-space:nowrap}
.error{background:var(--red-bg);color:var(--red);border-radius:6px;padding:8px 12px;
margin:12px 0 0}
.warnings{margin:6px 0 0;padding-left:20px;color:var(--yellow);font-size:13px}
.prompts{display:flex;flex-wrap:wrap;gap:14px 36px}
.prompt{flex:0 1 auto;min-width:300px;max-width:100%}
.prompt-head{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.slug{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:13px;font-weight:600}
.prompt-text{margin:2px 0 8px;color:var(--muted);font-size:13px}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}
.thumbs a{display:block;border-radius:6px;overflow:hidden;border:1px solid var(--line);
background:var(--grey-bg);line-height:0}
.thumbs img{display:block;max-width:160px;max-height:160px}
.thumbs .missing{display:flex;align-items:center;justify-content:center;width:160px;
height:100px;color:var(--muted);font-size:12px;line-height:1.3;padding:8px;text-align:center}
.none{color:var(--muted);font-size:13px;margin:4px 0}
footer{color:var(--muted);font-size:12px;text-align:center;padding:0 0 24px}
"""


#: Refused photos' thumbnails: (subject, version) -> file name -> a small JPEG.
RefusedThumbnails = Mapping[tuple[str, int], Mapping[str, bytes]]


def render_html(
    data: dict[str, Any], report_dir: Path, thumbnails: RefusedThumbnails | None = None
) -> Iterator[str]:
    """The page, in chunks; thumbnails of the pictures are read from ``report_dir`` as they
    are reached, those of refused photos taken from ``thumbnails``."""
    job = _e(data["job"])
    totals = data["totals"]
    yield ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
           f"<title>lora-pipeline report: {job}</title><style>{_CSS}{PHOTOS_CSS}</style>"
           "</head><body>\n")
    yield (f"<header><h1>Job <span id=\"job\">{job}</span></h1>"
           f"<p class=\"meta\">generated {_e(_human_time(data['generated_at']))}"
           f" &middot; <span id=\"total-subjects\">{totals['subjects']}</span> subjects"
           f" &middot; <span id=\"total-pictures\">{totals['pictures']}</span> pictures"
           f" &middot; <span id=\"total-rejected\">{totals['rejected_files']}</span>"
           f" refused files{_spent_meta(data.get('spend'))}</p>\n<ul class=\"counts\">")
    for state, count in data["counts"].items():
        yield (f"<li class=\"count s-{_e(state)}\" data-state=\"{_e(state)}\"><b>{count}</b>"
               f"{_e(state)}</li>")
    yield "</ul></header>\n<main>\n"
    if not data["subjects"]:
        yield "<p class=\"none\">No subjects yet: nothing has been taken in from the inbox.</p>"
    else:
        yield _overview_html(data["subjects"])
    for subject in data["subjects"]:
        refused = (thumbnails or {}).get((subject["name"], subject["version"]), {})
        currency = (data.get("spend") or {}).get("currency")
        yield from _subject_html(subject, report_dir, refused, currency)
    yield ("</main><footer>lora-pipeline &middot; paths are relative to this page's folder"
           "</footer></body></html>\n")


def _overview_html(subjects: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{column}</th>" for column in (
        "subject", "state", "images", "refused", "prompts", "pictures", "total time"))
    rows = [_overview_row(s) for s in subjects]
    return (f"<div class=\"overview\"><table id=\"overview\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>\n")


def _overview_row(s: dict[str, Any]) -> str:
    label = _e(s["name"]) if s["version"] == 1 else f"{_e(s['name'])} (v{s['version']})"
    state = _e(s["state"])
    prompts = f"{s['prompts_done']}/{s['prompts_total']}" if s["prompts_total"] else ""
    pictures = sum(len(p["pictures"]) for p in s["prompts"])
    cells = [
        f"<a href=\"#subject-{_e(_anchor(s['name']))}\">{label}</a>",
        f"<span class=\"badge s-{state}\">{state}</span>",
        str(s["images"]),
        str(len(s["rejected_files"]) or ""),
        prompts,
        str(pictures or ""),
        _span(s["timings"]["durations"]["total"]).lstrip("+"),
    ]
    return "<tr>" + "".join(
        f"<td>{cell}</td>" if i < 2 else f"<td class=\"num\">{cell}</td>"
        for i, cell in enumerate(cells)) + "</tr>"


def _subject_html(
    s: dict[str, Any], report_dir: Path, thumbnails: Mapping[str, bytes],
    currency: str | None = None,
) -> Iterator[str]:
    name, state = _e(s["name"]), _e(s["state"])
    yield (f"<section class=\"subject\" id=\"subject-{_e(_anchor(s['name']))}\""
           f" data-state=\"{state}\"><div class=\"subject-head\"><h2>{name}</h2>"
           f"<span class=\"badge s-{state}\">{state}</span>"
           f"<span class=\"version\">version {s['version']}</span></div>\n")
    yield _facts_html(s, currency)
    if s["error"]:
        yield f"<p class=\"error\">{_e(s['error'])}</p>"
    if s["warnings"]:
        yield "<ul class=\"warnings\">" + "".join(
            f"<li>{_e(w)}</li>" for w in s["warnings"]) + "</ul>"
    yield _timings_html(s["timings"])
    yield from refused_html(s["rejected_files"], thumbnails)
    yield converted_html(s.get("photos", []))
    if s["prompts"]:
        yield "<h3>Pictures</h3><div class=\"prompts\">"
        for prompt in s["prompts"]:
            yield from _prompt_html(prompt, report_dir)
        yield "</div>"
    yield "</section>\n"


def spend_text(spend: dict[str, Any], currency: str | None) -> str:
    """``1 subject training, 4 txt2img images = 2.54 EUR`` from a spend entry's JSON."""
    units = units_text(Tally(dict(spend["trainings"]), dict(spend["images"])))
    money = money_text(spend.get("money"), currency)
    return f"{units} = {money}" if money else units


def _spent_meta(spend: dict[str, Any] | None) -> str:
    if not spend or not spend["requests"]:
        return ""
    text = spend_text(spend, spend.get("currency"))
    return f" &middot; spent <span id=\"total-spend\">{_e(text)}</span>"


def _facts_html(s: dict[str, Any], currency: str | None = None) -> str:
    training = s["training"]
    facts = [f"<li><b>{s['images']}</b> images</li>"]
    if s.get("good_face_photos") is not None:
        facts.append(f"<li class=\"good-faces\">good face photos <b>{_e(s['good_face_photos'])}</b>"
                     "</li>")
    if training["task_id"]:
        status = f" &middot; {_e(training['status'])}" if training["status"] else ""
        progress = (f" {training['progress']}%"
                    if training["progress"] is not None and s["state"] == "training" else "")
        facts.append(f"<li>training <code>{_e(training['task_id'])}</code>{status}{progress}"
                     "</li>")
    if s["prompts_total"]:
        facts.append(f"<li><b>{s['prompts_done']}/{s['prompts_total']}</b> prompts done</li>")
    spend = s.get("spend")
    if spend and spend["requests"]:
        facts.append(f"<li class=\"spend\">spent <b>{_e(spend_text(spend, currency))}</b></li>")
    lora = s["lora_file"]
    if lora:
        size = f" ({_size(lora['bytes'])})" if lora["bytes"] is not None else ""
        facts.append(f"<li>LoRA <a class=\"lora\" href=\"{_href(lora['path'])}\">"
                     f"{_e(Path(lora['path']).name)}</a>{size}</li>")
    elif training["model_name"]:
        facts.append(f"<li>model <code>{_e(training['model_name'])}</code></li>")
    return "<ul class=\"facts\">" + "".join(facts) + "</ul>\n"


def _timings_html(timings: dict[str, Any]) -> str:
    at, durations = timings["at"], timings["durations"]
    if all(at[m] is None for m in MILESTONES[1:]):
        return ""
    steps = [("discovered", None), ("submitted", "preparing"), ("trained", "training"),
             ("serving", "deploying"), ("finished", "generating")]
    head = "".join(f"<th>{m}</th>" for m, _ in steps) + "<th>total</th>"
    times = "".join(
        f"<td class=\"num\">{_clock(at[m]) if at[m] is not None else '&ndash;'}</td>"
        for m, _ in steps) + "<td></td>"
    spans = "".join(
        f"<td class=\"num\" data-duration=\"{d}\">{_span(durations[d]) if d else ''}</td>"
        for _, d in steps) + f"<td class=\"num\">{_span(durations['total'])}</td>"
    return (f"<h3>Timings (UTC)</h3><table class=\"timings\"><thead><tr>{head}</tr></thead>"
            f"<tbody><tr>{times}</tr><tr>{spans}</tr></tbody></table>\n")


def _prompt_html(prompt: dict[str, Any], report_dir: Path) -> Iterator[str]:
    slug = _e(prompt["slug"] or "pictures")
    state = prompt["state"]
    badge = f"<span class=\"badge s-{_gen_style(state)}\">{_e(state)}</span>" if state else ""
    yield (f"<div class=\"prompt\" data-slug=\"{slug}\"><div class=\"prompt-head\">"
           f"<span class=\"slug\">{slug}</span>{badge}</div>")
    if prompt["prompt"]:
        yield f"<p class=\"prompt-text\">{_e(prompt['prompt'])}</p>"
    if prompt["error"]:
        yield f"<p class=\"error\">{_e(prompt['error'])}</p>"
    if not prompt["pictures"]:
        yield "<p class=\"none\">no pictures yet</p></div>\n"
        return
    yield "<div class=\"thumbs\">"
    for picture in prompt["pictures"]:
        yield _thumb_html(picture, report_dir)
    yield "</div></div>\n"


def _thumb_html(picture: str, report_dir: Path) -> str:
    href, label = _href(picture), _e(picture)
    uri = thumbnail_data_uri(report_dir / picture)
    if uri is None:
        return (f"<a href=\"{href}\" title=\"{label}\"><span class=\"missing\">"
                f"{_e(Path(picture).name)}<br>not readable</span></a>")
    return (f"<a href=\"{href}\" title=\"{label}\"><img src=\"{uri}\" alt=\"{label}\""
            " loading=\"eager\"></a>")


#: A picture with more pixels than this gets no thumbnail: decoding it would take gigabytes.
MAX_THUMBNAIL_SOURCE_PIXELS = 40_000_000


def thumbnail_data_uri(path: Path, size: int = THUMB_SIZE) -> str | None:
    """A JPEG thumbnail of ``path`` (at most ``size`` px a side) as a data URI, or None
    when the file cannot be read as a picture."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_THUMBNAIL_SOURCE_PIXELS:  # small on disk, huge decoded
                raise ValueError(f"{width}x{height} is too large to make a thumbnail of")
            image.draft("RGB", (size * 2, size * 2))
            image.thumbnail((size, size))
            rgb = _flatten(image)
            buffer = io.BytesIO()
            rgb.save(buffer, "JPEG", quality=THUMB_QUALITY, optimize=True)
    except Exception as exc:  # a missing, damaged or hostile file: a placeholder instead
        log.warning("report.thumbnail_failed", file=str(path), error=str(exc))
        return None
    return jpeg_data_uri(buffer.getvalue())


def _flatten(image: Image.Image) -> Image.Image:
    """RGB on white, whatever the mode (alpha, palette, greyscale)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")



def _href(relative: str) -> str:
    return _e(quote(relative, safe="/"))


def _anchor(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _gen_style(state: str | None) -> str:
    return {"done": "done", "failed": "failed", "pending": "validated"}.get(state or "",
                                                                            "generating")


def _human_time(iso: str) -> str:
    return iso.replace("T", " ").replace("+00:00", " UTC")


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _span(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = int(round(seconds))
    if whole < 60:
        return f"+{seconds:.1f} s" if seconds < 10 else f"+{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"+{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"+{hours} h {minutes:02d} min"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"
