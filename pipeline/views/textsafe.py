"""Text from outside, shown as text: folder names and the service's words on a terminal.

Folder names come from whoever drops a folder in the inbox, and failure reasons and error
messages from the hosted service. Printed as they are, their control characters drive the
terminal (an ESC sequence can retitle the window, hide text or make a link; a bidi override
makes a line read backwards) and, through rich, their brackets become markup (``[/]`` makes
rich raise, ``[link=...]`` makes a clickable link). Two things make that impossible:

* :func:`printable` spells every character that is not ordinary text as a visible escape.
  It has no dependency beyond the standard library, so the logging module can use it too.
* :func:`line` builds a rich ``Text`` from pieces, each passed through :func:`printable`;
  a ``Text`` is never parsed as markup, emoji codes or highlighted. Our own styling is the
  ``(text, style)`` pairs:

      console.print(line(("error:", "red"), " ", str(exc)))

Every terminal line in ``cli``, ``console``, ``progress`` and ``demo`` is built this way, so
there is one rule to keep: nothing reaches a console or a table cell as a plain ``str``.
"""

from __future__ import annotations

import html
import re
from typing import Final

from rich.text import Text

__all__ = ["html_text", "line", "printable"]

#: Bidi marks, embeddings, overrides and isolates: they reorder how the rest of a line reads.
_BIDI: Final = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: C0 (tab and newline included), DEL, C1, the Unicode line and paragraph separators, the
#: bidi controls and surrogates. Tab and newline count: a name or a reason is shown inside a
#: line of ours, where a newline could forge a whole line ("alice: done") and a tab break the
#: columns. A lone surrogate (a name that is not valid UTF-8, or odd JSON from the service)
#: cannot even be encoded for output.
_UNSAFE: Final = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}\ud800-\udfff]")
_SHORT: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """``text`` with every control character spelt as a visible escape, Python style.

    Letters of every script, emoji and punctuation stay as they are. A backslash is left
    alone, so ``\\x1b`` in the result may have been typed that way: the point is that
    nothing reaches the terminal as a control, and names that were not valid UTF-8 are
    already spelt with ``\\xNN`` escapes (``dataset.display_name``), which stay readable.

    >>> printable("evil\\x1b]8;;http://x\\x07\\u202egnp.exe")
    'evil\\\\x1b]8;;http://x\\\\x07\\\\u202egnp.exe'
    """
    return _UNSAFE.sub(_escape, text)


def line(*pieces: str | tuple[str, str]) -> Text:
    """One line for a rich console from plain pieces and ``(text, style)`` pieces.

    Every piece's text goes through :func:`printable` and none is read as markup, so a
    folder name or a reason from the service can be passed as it is; styles are ours.
    """
    text = Text()
    for piece in pieces:
        if isinstance(piece, tuple):
            text.append(printable(piece[0]), style=piece[1])
        else:
            text.append(printable(piece))
    return text


def html_text(value: object) -> str:
    """``value`` as text for an HTML page: its controls spelt out as :func:`printable` does
    (so a bidi override cannot turn a name around on the page either), then escaped for
    both text and attribute values. None is the empty string."""
    return html.escape(printable("" if value is None else str(value)), quote=True)
