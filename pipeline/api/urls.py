"""Which URLs from the service the client follows, and where the key may go.

The service hands out presigned URLs (uploads, pictures, LoRA files) and may answer with
redirects. Each is checked here before a request is sent:

- http or https only, with a host and without credentials in it;
- no silent downgrade: with an https base URL, plain http is refused;
- a service on the internet cannot point us at this machine or its network: unless the base
  URL is itself local, an address literal that is loopback, private, link-local (cloud
  metadata at 169.254.169.254), unspecified or reserved is refused (a name is not resolved
  here: that is left to the network's own rules);
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
    address = _address(host)
    return address is not None and address.is_loopback


def is_local(host: str | None) -> bool:
    """Loopback, or an address literal no public service should send us to."""
    if is_loopback(host):
        return True
    address = _address(host or "")
    return address is not None and not address.is_global


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class UrlPolicy:
    """The rules above, for one base URL."""

    def __init__(self, base_url: str) -> None:
        self.base = URL(base_url)
        self.origin = self.base.origin()
        self._local_base = is_local(self.base.host)

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
        if self.base.scheme == "https" and url.scheme == "http":
            raise UnsafeUrl(
                f"the {what} URL is plain http while the API is https: not followed "
                f"(host {url.host})", what,
            )
        if not self._local_base and is_local(url.host):
            raise UnsafeUrl(
                f"the {what} URL points at a local or private address ({url.host}) while the "
                "API is on the internet: not followed", what,
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
