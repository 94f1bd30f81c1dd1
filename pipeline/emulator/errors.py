"""Error answers as the hosted service shapes them.

The API answers JSON ``{"code", "reason", "message", "metadata"}``; the storage behind the
presigned URLs answers S3-style XML; the edge answers plain text (``error code: 1010``).
Handlers raise :class:`ApiError` or :class:`S3Error`; the middleware turns them into bodies.
"""

from __future__ import annotations

import uuid
from xml.sax.saxutils import escape

from aiohttp import web

INVALID_REQUEST_BODY = "INVALID_REQUEST_BODY"


class ApiError(Exception):
    """An error answer of the JSON API: HTTP status, UPPER_SNAKE reason and message."""

    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}

    def response(self) -> web.Response:
        """The JSON error answer."""
        return json_error(self.status, self.reason, self.message, self.headers)


class S3Error(Exception):
    """An error answer of the object storage behind presigned URLs (XML body)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> web.Response:
        """The XML error answer."""
        return xml_error(self.status, self.code, self.message, self.headers)


def invalid(message: str) -> ApiError:
    """A 400 INVALID_REQUEST_BODY naming what is wrong."""
    return ApiError(400, INVALID_REQUEST_BODY, message)


def json_error(
    status: int, reason: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """``{"code": status, "reason": ..., "message": ..., "metadata": {}}`` with that status."""
    body = {"code": status, "reason": reason, "message": message, "metadata": {}}
    return web.json_response(body, status=status, headers=headers)


def xml_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An S3-style ``<Error>`` document with that status."""
    request_id = uuid.uuid4().hex[:16].upper()
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{request_id}</RequestId><HostId>emulator</HostId></Error>"
    )
    return web.Response(
        status=status, text=text, content_type="application/xml", headers=headers
    )


def edge_block() -> web.Response:
    """The edge's answer to a request without a User-Agent."""
    return web.Response(status=403, text="error code: 1010", content_type="text/plain")
