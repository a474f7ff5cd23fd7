"""Who is asking: the address per-address limits count against (``sse_max_per_address``).

The socket peer, unless that peer is one of our own proxies (``trusted_proxies``: addresses
or CIDRs). Then ``X-Forwarded-For`` names the client, read from the right: each proxy appends
the address it saw, and anyone can put anything on the left, so the right-most entry that is
not itself a trusted proxy is the client. With no trusted proxy (the default) the header is
ignored: a client cannot choose its own address.

``proxy.server.http_protocol`` resolves it once per request and puts it in
``scope["client"]``, so the access log and every endpoint see the same address
(:func:`client_host`); limits count per :func:`limit_key` (an IPv6 client per /64).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

IPV6_PREFIX = 64  # one IPv6 client (a home, a phone) routinely holds a whole /64
MAX_HOST_CHARS = 64  # an unparseable X-Forwarded-For entry is kept as text, this long at most
UNKNOWN = "unknown"  # no peer address (a Unix socket)


class TrustedProxies:
    """A set of addresses and networks. Single addresses are a frozenset lookup (the usual
    case: one or two load balancers); networks are tested only when some are configured."""

    __slots__ = ("_hosts", "_networks")

    def __init__(self, entries: Iterable[str] = ()):
        hosts: set[str] = set()
        networks = []
        for entry in entries:
            try:
                net = ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {entry!r} is not an IP address or CIDR"
                                 ) from None
            if net.num_addresses == 1:
                hosts.add(str(net.network_address))
            else:
                networks.append(net)
        self._hosts = frozenset(hosts)
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._hosts or self._networks)

    def __contains__(self, host: str) -> bool:
        if host in self._hosts:
            return True
        ip = _parse(host)
        if ip is None:
            return False
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket names IPv4 peers ::ffff:a.b.c.d
        return str(ip) in self._hosts or any(ip in net for net in self._networks)


def _parse(host: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(host)
    except ValueError:
        return None


def _without_port(hop: str) -> str:
    """``1.2.3.4:5678`` -> ``1.2.3.4``; ``[::1]:80`` -> ``::1``; a bare IPv6 stays whole."""
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


def forwarded_client(peer: str, forwarded_for: Iterable[str], trusted: TrustedProxies) -> str:
    """The client address of a request from ``peer`` whose ``X-Forwarded-For`` header lines
    are ``forwarded_for`` (in arrival order). When every hop is trusted, the left-most one."""
    if peer not in trusted:
        return peer
    hops = [hop.strip() for line in forwarded_for for hop in line.split(",")]
    hops = [hop for hop in hops if hop]
    for hop in reversed(hops):
        host = _without_port(hop)
        if host not in trusted:
            return _normal(host)
    return _normal(_without_port(hops[0])) if hops else peer


def _normal(host: str) -> str:
    ip = _parse(host)
    return str(ip) if ip is not None else host[:MAX_HOST_CHARS]


def forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """The ``X-Forwarded-For`` lines of an ASGI header list (names are lower-case bytes)."""
    return [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]


def client_host(scope: Mapping[str, Any]) -> str:
    """The request's client address as the HTTP server resolved it."""
    client = scope.get("client")
    return str(client[0]) if client else UNKNOWN


def limit_key(scope: Mapping[str, Any]) -> str:
    """What per-address limits count against: the client's IPv4 address, or its IPv6 /64
    (otherwise one client with a /64 has 2**64 addresses, each with a fresh allowance)."""
    host = client_host(scope)
    ip = _parse(host)
    if not isinstance(ip, IPv6Address):
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(IPv6Network((ip, IPV6_PREFIX), strict=False))
