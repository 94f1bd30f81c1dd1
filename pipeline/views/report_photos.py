"""The report page's account of a subject's own photos: the refused ones as cards (a
thumbnail, the file name, the reason) and the accepted ones the upload sent converted.

File names and reasons come from whoever fills the inbox, so every text is HTML-escaped,
and a refused photo's thumbnail only ever reaches the page as the base64 of its bytes in a
``data:image/jpeg;base64,`` URI: nothing of it is read as markup or as a link.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from typing import Any, Final

from .textsafe import html_text as _e

JPEG_DATA_URI: Final = "data:image/jpeg;base64,"
#: Intake makes these at most 160 px a side, a few KB; anything much larger is not one of
#: them and gets the placeholder rather than swelling the page.
MAX_REFUSED_THUMBNAIL_BYTES: Final = 64 * 1024
_JPEG_START: Final = b"\xff\xd8\xff"

PHOTOS_CSS: Final = """
.refused{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px}
.refused-photo{margin:0;border:1px solid var(--line);border-radius:8px;overflow:hidden;
background:var(--card)}
.refused-photo .pic{display:flex;align-items:center;justify-content:center;height:164px;
background:var(--grey-bg)}
.refused-photo img{display:block;max-width:160px;max-height:160px}
.refused-photo .no-preview{color:var(--muted);font-size:12px;line-height:1.3;padding:8px;
text-align:center;overflow-wrap:anywhere}
.refused-photo figcaption{padding:6px 10px 8px;font-size:13px}
.refused-photo .file{display:block;font-family:ui-monospace,"DejaVu Sans Mono",monospace;
font-weight:600;overflow-wrap:anywhere}
.refused-photo .reason{display:block;color:var(--red);overflow-wrap:anywhere}
.converted td.file{font-family:ui-monospace,"DejaVu Sans Mono",monospace;
overflow-wrap:anywhere}
.converted .as-is{color:var(--muted);font-size:13px;margin:4px 0 0}
"""


def jpeg_data_uri(data: bytes) -> str:
    """``data`` (JPEG bytes) as a data URI; the type is always ``image/jpeg``."""
    return JPEG_DATA_URI + base64.b64encode(data).decode("ascii")


def refused_html(
    rejected: list[dict[str, Any]], thumbnails: Mapping[str, bytes]
) -> Iterator[str]:
    """A card per refused file: its thumbnail (or a placeholder box with its name when
    there is none to show), its name and the reason."""
    if not rejected:
        return
    yield "<h3>Refused files</h3><div class=\"refused\">"
    for r in rejected:
        name = str(r.get("file", ""))
        label = _e(name)
        thumbnail = thumbnails.get(name)
        if thumbnail is not None and _looks_like_a_thumbnail(thumbnail):
            picture = f"<img src=\"{jpeg_data_uri(thumbnail)}\" alt=\"{label}\">"
        else:
            picture = f"<span class=\"no-preview\">{label}<br>no preview</span>"
        yield (f"<figure class=\"refused-photo\"><div class=\"pic\">{picture}</div>"
               f"<figcaption><span class=\"file\">{label}</span>"
               f"<span class=\"reason\">{_e(r.get('reason', ''))}</span></figcaption></figure>")
    yield "</div>\n"


def converted_html(photos: list[dict[str, Any]]) -> str:
    """A row per accepted photo the upload changed (converted, turned upright, stripped of
    its metadata...), with what it changed; a line says how many went exactly as on disk."""
    converted = [p for p in photos if p.get("changes")]
    if not converted:
        return ""
    rows = "".join(
        f"<tr><td class=\"file\">{_e(p.get('file', ''))}</td>"
        f"<td class=\"changes\">{_e('; '.join(str(c) for c in p['changes']))}</td></tr>"
        for p in converted)
    as_is = len(photos) - len(converted)
    photo = "photo" if as_is == 1 else "photos"
    note = (f"<p class=\"as-is\">{as_is} other {photo} sent exactly as on disk</p>"
            if as_is else "")
    return ("<h3>Sent converted</h3><div class=\"converted\"><table><thead><tr>"
            "<th>photo</th><th>what the upload changed</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>{note}</div>\n")


def _looks_like_a_thumbnail(data: bytes) -> bool:
    return data.startswith(_JPEG_START) and len(data) <= MAX_REFUSED_THUMBNAIL_BYTES

