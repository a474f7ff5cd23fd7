"""proxy.api.client_address: whose address a request counts against."""

from __future__ import annotations

import pytest

from proxy.api.client_address import (
    MAX_HOST_CHARS,
    TrustedProxies,
    client_host,
    forwarded_client,
    forwarded_for,
    limit_key,
)

LB = TrustedProxies(["10.0.0.1", "192.168.0.0/16", "2001:db8::/32"])


@pytest.mark.parametrize(("peer", "lines", "client"), [
    # Not through a trusted proxy: the header is the client's own word, ignored.
    ("198.51.100.7", ["203.0.113.1"], "198.51.100.7"),
    # Through one: the right-most entry not a trusted proxy; anything left of it is ignored.
    ("10.0.0.1", ["203.0.113.1"], "203.0.113.1"),
    ("10.0.0.1", ["6.6.6.6, 203.0.113.1"], "203.0.113.1"),
    ("10.0.0.1", ["6.6.6.6, 203.0.113.1, 192.168.4.4"], "203.0.113.1"),
    ("10.0.0.1", ["6.6.6.6", "203.0.113.1, 192.168.4.4"], "203.0.113.1"),  # several lines
    ("10.0.0.1", ["203.0.113.1:5555"], "203.0.113.1"),  # with a port
    ("10.0.0.1", ["[2001:db9::1]:443"], "2001:db9::1"),
    ("10.0.0.1", ["2001:DB9:0::1"], "2001:db9::1"),  # normal form: one address, one count
    ("2001:db8::5", ["203.0.113.1"], "203.0.113.1"),  # an IPv6 proxy in a network
    ("::ffff:10.0.0.1", ["203.0.113.1"], "203.0.113.1"),  # dual-stack socket, IPv4 proxy
    # Every hop trusted: the left-most (farthest known); no header: the proxy itself.
    ("10.0.0.1", ["192.168.1.1, 192.168.2.2"], "192.168.1.1"),
    ("10.0.0.1", [], "10.0.0.1"),
    ("10.0.0.1", [" , "], "10.0.0.1"),
    # Not an address: kept as text (bounded), so it still counts as one client.
    ("10.0.0.1", ["unknown"], "unknown"),
    ("10.0.0.1", ["x" * 500], "x" * MAX_HOST_CHARS),
])
def test_forwarded_client(peer, lines, client):
    assert forwarded_client(peer, lines, LB) == client


def test_no_trusted_proxies_trusts_nobody():
    nobody = TrustedProxies()
    assert not nobody
    assert forwarded_client("127.0.0.1", ["203.0.113.1"], nobody) == "127.0.0.1"


def test_membership():
    assert "10.0.0.1" in LB and "192.168.200.3" in LB and "2001:db8:1::9" in LB
    assert "10.0.0.2" not in LB and "not-an-ip" not in LB and "" not in LB


@pytest.mark.parametrize("entry", ["lb.internal", "10.0.0.0/33", ""])
def test_bad_entries_are_named(entry):
    with pytest.raises(ValueError, match=f"trusted_proxies: '{entry}'"):
        TrustedProxies([entry])


def test_header_lines_and_scope():
    headers = [(b"host", b"x"), (b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2")]
    assert forwarded_for(headers) == ["1.1.1.1", "2.2.2.2"]
    assert client_host({"client": ("203.0.113.1", 0)}) == "203.0.113.1"
    assert client_host({"client": None}) == "unknown" and client_host({}) == "unknown"


@pytest.mark.parametrize(("client", "key"), [
    ("203.0.113.1", "203.0.113.1"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same client, another address
    ("::ffff:203.0.113.1", "203.0.113.1"),
    ("unknown", "unknown"),
])
def test_limits_count_an_ipv6_client_per_64(client, key):
    assert limit_key({"client": (client, 0)}) == key
