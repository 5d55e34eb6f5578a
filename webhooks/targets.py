"""Where a webhook may send: http(s) URLs whose host resolves only to public
addresses (unless WEBHOOK_ALLOW_PRIVATE).

The check runs when a webhook is created or its URL changed, and again
before every request, because what a name resolves to may change (DNS
rebinding): the request then connects to the very address that was
checked (webhooks.delivery), never to a second lookup of the name.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from django.conf import settings

MAX_URL_LENGTH = 2000
SCHEMES = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(ValueError):
    """A URL the service will not send to; the message says why."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    # The path and query to request ("/" when the URL has none).
    path: str
    # The address to connect to: the first public one the host resolved to.
    address: str


def parse(url: str) -> SplitResult:
    """The URL's parts, if its form is acceptable (TargetRefused otherwise)."""
    if not isinstance(url, str) or not url:
        raise TargetRefused("Give a URL.")
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"A URL has at most {MAX_URL_LENGTH} characters.")
    if not url.isascii() or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise TargetRefused("A URL is ASCII without spaces (percent-encode the rest).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"Not a valid URL: {exc}.") from exc
    if parts.scheme not in SCHEMES:
        raise TargetRefused("Only http and https URLs are allowed.")
    if not parts.hostname:
        raise TargetRefused("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("Credentials in the URL are not allowed.")
    if parts.fragment:
        raise TargetRefused("A URL with a #fragment is not allowed.")
    if port == 0:
        raise TargetRefused("Port 0 is not a port one can send to.")
    return parts


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address reach it on hosts that route
        # them: the wrapped address must be public too. (Teredo's 2001::/32
        # is not global, so refused below.)
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address.sixtofour is not None and not is_public(address.sixtofour):
            return False
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (a seam for tests)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def check(url: str) -> Target:
    """The URL as a Target to send to, or TargetRefused saying why not."""
    parts = parse(url)
    host = parts.hostname or ""
    port = parts.port or SCHEMES[parts.scheme]
    try:
        found = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise TargetRefused(f"The host {host} does not resolve.") from exc
    addresses: list[IPAddress] = []
    for raw in found:
        try:
            # A scoped IPv6 address ("fe80::1%eth0") is link-local anyway.
            addresses.append(ipaddress.ip_address(raw.split("%", 1)[0]))
        except ValueError:
            continue
    if not addresses:
        raise TargetRefused(f"The host {host} does not resolve.")
    if not settings.WEBHOOK_ALLOW_PRIVATE:
        # Every address, not just the first: a name with one public and one
        # private address could otherwise be steered to the private one.
        private = [str(a) for a in addresses if not is_public(a)]
        if private:
            raise TargetRefused(
                f"The host {host} resolves to a loopback, private, link-local or reserved "
                f"address ({private[0]}); such targets are refused."
            )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(
        url=url, scheme=parts.scheme, host=host, port=port, path=path, address=str(addresses[0])
    )
