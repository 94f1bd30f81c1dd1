"""Presigned URLs in the shape of S3's query-string authentication.

A URL carries ``X-Amz-Date`` (UTC, ``20231102T060519Z``), ``X-Amz-Expires`` (seconds) and
``X-Amz-Signature``, an HMAC over the method, path, date and lifetime under a secret of the
emulator. Changing any of them, or using the URL after ``date + expires`` on the emulator's
clock, answers 403 with an ``AccessDenied`` XML body.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlencode

from .errors import S3Error

_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_SIGNED_METHOD = {"HEAD": "GET"}


class UrlSigner:
    """Makes and checks presigned URLs with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _signature(self, method: str, path: str, date: str, expires: str) -> str:
        message = "\n".join((_SIGNED_METHOD.get(method, method), path, date, expires))
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()

    def sign(self, base_url: str, method: str, path: str, now: float, ttl: int) -> str:
        """A URL under ``base_url`` for ``method path`` valid ``ttl`` seconds from ``now``."""
        stamp = datetime.fromtimestamp(int(now), UTC)
        date = stamp.strftime(_DATE_FORMAT)
        expires = str(ttl)
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"EMULATOR/{stamp:%Y%m%d}/local/s3/aws4_request",
            "X-Amz-Date": date,
            "X-Amz-Expires": expires,
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": self._signature(method, path, date, expires),
        }
        return f"{base_url}{path}?{urlencode(query)}"

    def verify(self, method: str, path: str, query: Mapping[str, str], now: float) -> None:
        """Raise a 403 :class:`S3Error` unless the URL is intact and unexpired at ``now``."""
        date = query.get("X-Amz-Date", "")
        expires = query.get("X-Amz-Expires", "")
        given = query.get("X-Amz-Signature", "")
        expected = self._signature(method, path, date, expires)
        if not given or not hmac.compare_digest(given, expected):
            raise S3Error(
                403,
                "AccessDenied",
                "The request signature we calculated does not match the signature you provided",
            )
        try:
            issued = datetime.strptime(date, _DATE_FORMAT).replace(tzinfo=UTC).timestamp()
            lifetime = int(expires)
        except ValueError as exc:
            raise S3Error(403, "AccessDenied", "Invalid date or expiry") from exc
        if now > issued + lifetime:
            raise S3Error(403, "AccessDenied", "Request has expired")
