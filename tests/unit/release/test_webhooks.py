"""Webhook records, secrets, Standard Webhooks signatures and the SSRF check, without I/O
(the resolver is passed in; the real one is exercised by tests/integration/test_notify.py)."""

from __future__ import annotations

import pytest

from proxy.release import webhooks
from proxy.release.webhooks import UnsafeURL, Webhook


def test_signature_matches_the_standard_webhooks_reference_vector():
    # The sign test of the Standard Webhooks reference libraries (libraries/*/tests).
    body = b'{"test": 2432232314}'
    assert webhooks.sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                         "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_plain_secret_is_its_bytes_and_a_bad_whsec_is_refused():
    assert webhooks.secret_bytes("s3cret") == b"s3cret"
    assert webhooks.secret_bytes("whsec_AAEC") == b"\x00\x01\x02"
    with pytest.raises(ValueError, match="base64"):
        webhooks.secret_bytes("whsec_not base64!")
    with pytest.raises(ValueError, match="empty"):
        webhooks.secret_bytes("")
    assert webhooks.sign("s3cret", "m", 1, b"x") != webhooks.sign("whsec_czNjcmV0", "m", 2, b"x")
    assert webhooks.sign("s3cret", "m", 1, b"x") == webhooks.sign("whsec_czNjcmV0", "m", 1, b"x")


def test_new_secrets_are_whsec_base64_of_24_random_bytes():
    a, b = webhooks.new_secret(), webhooks.new_secret()
    assert a != b and a.startswith("whsec_") and len(webhooks.secret_bytes(a)) == 24


def test_headers_carry_id_timestamp_and_signature():
    h = webhooks.headers("s", "msg_1", b"{}", timestamp=1700000000)
    assert h["webhook-id"] == "msg_1" and h["webhook-timestamp"] == "1700000000"
    assert h["webhook-signature"] == webhooks.sign("s", "msg_1", 1700000000, b"{}")


def resolver(*addresses: str):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.0.0.7", "172.16.3.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1", "240.0.0.1"])
def test_private_loopback_and_special_addresses_are_refused(address):
    with pytest.raises(UnsafeURL, match="private or loopback"):
        webhooks.check_url("https://hooks.example.com/x", False, resolver(address))
    webhooks.check_url("https://hooks.example.com/x", True, resolver(address))  # allowed


def test_every_address_is_checked_not_only_the_first():
    with pytest.raises(UnsafeURL, match=r"10\.0\.0\.1"):
        webhooks.check_url("https://h.example/x", False, resolver("93.184.216.34", "10.0.0.1"))
    webhooks.check_url("https://h.example/x", False, resolver("93.184.216.34",
                                                              "2606:2800:220:1::1"))


@pytest.mark.parametrize("url", ["ftp://h.example/x", "file:///etc/passwd", "http:///x",
                                 "https://user:pw@h.example/x", "http://h.example:99999/x"])
def test_only_plain_http_urls_with_a_host(url):
    with pytest.raises(UnsafeURL):
        webhooks.check_url(url, True, resolver("93.184.216.34"))


def test_a_name_that_does_not_resolve_is_refused():
    def failing(host, port):
        raise OSError("no such host")

    with pytest.raises(UnsafeURL, match="cannot resolve"):
        webhooks.check_url("https://nowhere.invalid/x", False, failing)


def test_the_record_round_trips_and_lists_without_its_secret():
    hook = Webhook("wh_1", "prod", "https://h.example/x", "slack", "whsec_AAEC", True, 12.5,
                   "ann")
    assert Webhook.from_json(hook.dumps()) == hook
    assert "secret" not in hook.public_json()
    with pytest.raises(ValueError, match="not a webhook"):
        Webhook.from_json(b'{"id": "x"}')
