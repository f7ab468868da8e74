"""Where the services may send requests: no link-local or cloud-metadata destinations.

The carbon service POSTs to whatever subscriber address it was given, and the accounting
service GETs whatever node URL a job names. Left unchecked, either is a server-side request
forgery: ``http://169.254.169.254/`` (the metadata service of AWS, GCP, Azure, OCI, ...)
hands out cloud credentials to anyone who can make the service ask. So every destination
goes through a :class:`DestinationPolicy`:

- **always refused**: link-local addresses (169.254.0.0/16, fe80::/10), the cloud metadata
  addresses outside them (``fd00:ec2::254``, Alibaba's 100.100.100.200, Azure's
  168.63.129.16), "this host" (0.0.0.0/8, ``::``), multicast and broadcast; the metadata
  names (``metadata``, ``metadata.google.internal``, ...); and IPv4 addresses written in
  any form other than four decimal numbers (``2852039166``, ``0xA9FEA9FE``,
  ``0251.0376.0251.0376``, ``169.254.43518``), which resolvers accept and checks on the
  text miss. An IPv6 address that carries an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``,
  IPv4-compatible, 6to4, NAT64) is judged by the IPv4 address too.
- **optionally restricted**: with ``allow`` networks, only addresses inside them.

Names are resolved first and every address they resolve to is checked; the request then
connects to a checked address (the original name still goes in the ``Host`` header and TLS
SNI), so a name cannot resolve to something harmless for the check and to the metadata
service for the request (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "ALWAYS_REFUSED_NAMES",
    "ALWAYS_REFUSED_NETWORKS",
    "DestinationPolicy",
    "DestinationRefused",
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "parse_networks",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses`` as text; the default asks the system resolver."""

ALWAYS_REFUSED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # IPv4 link-local: AWS/GCP/Azure/OCI/DO metadata, ECS credentials
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS instance metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "168.63.129.16/32",  # Azure WireServer
        "0.0.0.0/8",  # "this host": a connection to 0.0.0.0 reaches the local machine
        "::/128",
        "224.0.0.0/4",  # multicast
        "ff00::/8",
        "255.255.255.255/32",  # broadcast
    )
)
"""Destinations refused whatever the configuration says."""

ALWAYS_REFUSED_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)
"""Host names of cloud metadata services, refused before any resolution."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST_NAME = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*"
)


class DestinationRefused(ValueError):
    """A destination the policy refuses; the message says which and why."""


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDR blocks (``10.0.0.0/8``, ``fd00::/8``; a bare address is a /32 or /128).

    Raises:
        ValueError: If a value is not an IP network, saying which.
    """
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP network; give CIDR blocks such as 10.0.0.0/8 or fd00::/8"
            ) from None
    return tuple(networks)


def _numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address ``host`` means to a resolver that accepts ``inet_aton`` forms, if any.

    ``inet_aton`` takes 1 to 4 parts, each decimal, ``0x`` hex or ``0`` octal, the last one
    filling the remaining bytes: ``2852039166``, ``0xA9FEA9FE`` and ``169.254.43518`` are
    all 169.254.169.254.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        text = part.lower()
        try:
            if text.startswith("0x"):
                number = int(text[2:], 16) if len(text) > 2 else 0
            elif len(text) > 1 and text.startswith("0"):
                number = int(text[1:], 8)
            elif text.isdigit():
                number = int(text)
            else:
                return None
        except ValueError:
            return None
        numbers.append(number)
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _literal(host: str) -> IPAddress | None:
    """The IP address ``host`` is (an IP literal or a numeric IPv4 form), else None.

    Raises:
        DestinationRefused: If ``host`` is an IPv4 address in a form other than dotted decimal.
    """
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    numeric = _numeric_ipv4(host)
    if numeric is not None:
        raise DestinationRefused(
            f"host {host!r} is the IPv4 address {numeric} written another way; write IPv4"
            " addresses as four decimal numbers (a.b.c.d)"
        )
    return None


def _embedded(address: IPAddress) -> list[IPAddress]:
    """``address`` and any IPv4 address it carries (and would reach)."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        packed = address.packed
        if address in _NAT64 or (packed[:12] == bytes(12) and int(address) > 1):
            found.append(ipaddress.IPv4Address(packed[12:]))  # NAT64, IPv4-compatible
    return found


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class DestinationPolicy:
    """Which addresses requests may go to.

    Args:
        allow: If given, only addresses inside these networks (``--allow-subscriber-net``,
            ``--allow-node-net``); the always-refused ones stay refused even if listed.
        resolver: Resolves a name to addresses; default the system resolver (tests replace it).
        what: How refusals name the destination (``subscriber address``, ``node URL``).
    """

    allow: tuple[IPNetwork, ...] = ()
    resolver: Resolver | None = field(default=None, compare=False)
    what: str = "destination"

    def check_address(self, address: IPAddress | str, host: str | None = None) -> IPAddress:
        """Refuse an address that is always refused or outside ``allow``.

        Returns:
            The address, parsed.

        Raises:
            DestinationRefused: If it is refused; the message names ``host`` if given.
        """
        ip = ipaddress.ip_address(str(address).split("%", 1)[0])
        name = f"{host!r} ({ip})" if host is not None and host != str(ip) else str(ip)
        for candidate in _embedded(ip):
            for network in ALWAYS_REFUSED_NETWORKS:
                if candidate.version == network.version and candidate in network:
                    raise DestinationRefused(
                        f"{self.what} {name} is refused: {network} is link-local, a cloud"
                        " metadata service or not a destination; give a routable address"
                    )
        if self.allow:
            candidates = _embedded(ip)
            if not any(c.version == n.version and c in n for c in candidates for n in self.allow):
                allowed = ", ".join(str(n) for n in self.allow)
                raise DestinationRefused(
                    f"{self.what} {name} is outside the networks allowed here ({allowed})"
                )
        return ip

    def check_url(self, url: str) -> tuple[str, str, int]:
        """The checks that need no resolution: scheme, host name, IP literals.

        Returns:
            ``(scheme, host, port)`` with the host lower-cased and without brackets.

        Raises:
            DestinationRefused: If the URL is not http(s) with a host, or its host is refused.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise DestinationRefused(f"{self.what} {url[:80]!r} is not a valid URL") from None
        host = (parts.hostname or "").rstrip(".")
        if parts.scheme not in ("http", "https") or not host:
            raise DestinationRefused(f"{self.what} {url[:80]!r} is not an http(s) URL with a host")
        self.check_host(host)
        return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)

    def check_host(self, host: str) -> IPAddress | None:
        """Check a host name or IP literal without resolving it.

        Returns:
            The address if ``host`` is an IP literal, else None (a name to resolve).

        Raises:
            DestinationRefused: If the name or address is refused.
        """
        host = host.lower().rstrip(".")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host in ALWAYS_REFUSED_NAMES:
            raise DestinationRefused(
                f"{self.what} host {host!r} is a cloud metadata service and is refused"
            )
        try:
            literal = _literal(host)
        except DestinationRefused as exc:
            raise DestinationRefused(f"{self.what} {exc}") from None
        if literal is not None:
            self.check_address(literal, host)
        elif len(host) > 253 or not _HOST_NAME.fullmatch(host):
            raise DestinationRefused(f"{self.what} host {host[:80]!r} is not a valid host name")
        return literal

    async def resolve(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` and check every address it resolves to.

        Returns:
            The addresses to connect to, allowed ones only, in the resolver's order (at
            least one).

        Raises:
            DestinationRefused: If the host or any of its addresses is always refused, or
                none of them is allowed.
            OSError: If the name cannot be resolved.
        """
        literal = self.check_host(host)
        if literal is not None:
            return [str(literal)]
        name = host.lower().rstrip(".")
        resolver = self.resolver or _system_resolver
        try:
            addresses = list(dict.fromkeys(await resolver(name, port)))
        except UnicodeError:  # the IDNA codec refuses the name
            raise DestinationRefused(
                f"{self.what} host {name[:80]!r} is not a valid host name"
            ) from None
        if not addresses:
            raise OSError(f"{name!r} resolved to no address")
        allowed: list[str] = []
        outside: DestinationRefused | None = None
        for address in addresses:
            try:
                allowed.append(str(self.check_address(address, name)))
            except DestinationRefused as exc:
                if not self.allow or _always_refused(address):
                    raise  # one forbidden address taints the name
                outside = exc
        if not allowed:
            assert outside is not None
            raise outside
        return allowed

    async def check_url_resolved(self, url: str) -> None:
        """:meth:`check_url`, then :meth:`resolve` when the host resolves now.

        A name that does not resolve yet passes (it is checked again, and pinned, at every
        request).

        Raises:
            DestinationRefused: If the URL or an address its host resolves to is refused.
        """
        _, host, port = self.check_url(url)
        with contextlib.suppress(OSError):
            await self.resolve(host, port)


def _always_refused(address: str) -> bool:
    try:
        DestinationPolicy().check_address(address)
    except DestinationRefused:
        return True
    return False
