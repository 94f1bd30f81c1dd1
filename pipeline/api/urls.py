"""Which URLs from the service the client follows, and where the key may go.

The service hands out presigned URLs (uploads, pictures, LoRA files) and may answer with
redirects. Each is checked here before a request is sent:

- http or https only, with a host and without credentials in it;
- no silent downgrade: with an https base URL, plain http is refused unless it is loopback
  (the emulator on the same machine);
- the ``Authorization`` header goes to the base URL's origin only: an API call redirected
  elsewhere is refused rather than sent there with or without the key.
"""

from __future__ import annotations

import ipaddress

from yarl import URL

from ..errors import UnsafeUrl

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower().rstrip(".") in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class UrlPolicy:
    """The rules above, for one base URL."""

    def __init__(self, base_url: str) -> None:
        self.base = URL(base_url)
        self.origin = self.base.origin()

    def service_url(self, raw: str, *, what: str) -> URL:
        """``raw`` as a URL we may request, or :class:`UnsafeUrl` saying why not."""
        try:
            url = URL(raw)
        except (TypeError, ValueError):
            raise UnsafeUrl(f"the {what} URL is not a URL", what) from None
        if url.scheme not in ("http", "https") or not url.host:
            shown = url.scheme or "no scheme"
            raise UnsafeUrl(f"the {what} URL is not http(s) ({shown}): not followed", what)
        if url.user is not None or url.password is not None:
            raise UnsafeUrl(f"the {what} URL carries credentials: not followed", what)
        if self.base.scheme == "https" and url.scheme == "http" and not is_loopback(url.host):
            raise UnsafeUrl(
                f"the {what} URL is plain http while the API is https: not followed "
                f"(host {url.host})", what,
            )
        return url

    def redirect(self, current: URL, location: str | None, *, api: bool, what: str) -> URL:
        """Where a redirect from ``current`` leads, checked; API calls stay on the origin."""
        if not location:
            raise UnsafeUrl(f"the {what} answer is a redirect without a Location", what)
        try:
            target = current.join(URL(location))
        except (TypeError, ValueError):
            raise UnsafeUrl(f"the {what} answer redirects to something that is not a URL",
                            what) from None
        checked = self.service_url(str(target), what=what)
        if api and checked.origin() != self.origin:
            raise UnsafeUrl(
                f"the API redirected {what} to another origin ({checked.host}); the key is "
                f"only ever sent to {self.origin}: not followed", what,
            )
        return checked

    def may_authorize(self, url: URL) -> bool:
        return url.origin() == self.origin
