"""Scrubbing text before it is kept or shown: the one place that does it.

Text from the wire (error bodies, reasons, URLs) and from libraries (aiohttp's exception
messages quote URLs) reaches the state store, the reports, the logs and the terminal. Every
such text passes through a :class:`Scrubber` first, which

- replaces each secret (the API key, with any of its characters percent-encoded) with ``***``;
- drops the query of every URL (presigned URLs carry signatures, and a hostile service can
  put anything there): ``https://bucket/x.png?X-Amz-Signature=...`` -> ``https://bucket/x.png?…``;
- makes lone surrogates visible (``\\ud800``): such text can be neither stored in SQLite
  nor written as UTF-8.

Secrets shorter than :data:`MIN_SECRET_LENGTH` are refused when settings are read (see
:mod:`pipeline.config`), so replacing every occurrence never garbles unrelated text.

    >>> Scrubber(["sk-0123456789abcdef"]).text("bad key sk-0123456789abcdef at https://h/p?sig=1")
    'bad key *** at https://h/p?…'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import SecretStr

REDACTED = "***"
#: Shorter keys are refused at start-up: blanking a short string everywhere garbles text.
MIN_SECRET_LENGTH = 16
_URL_QUERY = re.compile(r"(?i)\b((?:https?|wss?|ftp|file)://[^\s?#\"'<>]*)\?[^\s\"'<>]*")


def _spellings(char: str) -> str:
    encoded = "".join(f"%{byte:02x}" for byte in char.encode("utf-8"))
    return f"(?:{re.escape(char)}|(?i:{re.escape(encoded)}))"


class Scrubber:
    """Removes secrets, URL queries and lone surrogates from text; see the module doc."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Each character as itself or percent-encoded (either case of hex): a key quoted
        # back inside a URL is caught however much of it was encoded. Longest first, so a
        # secret that contains another is blanked whole.
        self._secrets = [
            re.compile("".join(_spellings(char) for char in secret))
            for secret in sorted({s for s in secrets if s}, key=len, reverse=True)
        ]

    @classmethod
    def for_key(cls, key: SecretStr | None) -> Scrubber:
        """The scrubber of a run: its one secret is the API key, when there is one."""
        return cls([key.get_secret_value()] if key is not None else [])

    def text(self, value: str) -> str:
        value = _URL_QUERY.sub(r"\1?…", value)
        for secret in self._secrets:
            value = secret.sub(REDACTED, value)
        return value.encode("utf-8", "backslashreplace").decode("utf-8")

    def __call__(self, value: str) -> str:
        return self.text(value)

    def value(self, value: Any) -> Any:
        """``value`` with every string inside it scrubbed (dicts, lists, exceptions)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__name__}: {value}")
        return value
