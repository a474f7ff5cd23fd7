"""proxy.ui.sessions: the signed session cookie (signature, expiry, tampering) and the CSRF
and sign-in tokens bound to it."""

from __future__ import annotations

import base64

import orjson

from proxy.ui import sessions

SECRET = b"s" * 32
OTHER = b"o" * 32
NOW = 1_800_000_000.0


def _session() -> sessions.Session:
    return sessions.new_session("0123456789ab", "prod", NOW)


def test_a_cookie_round_trips_and_names_the_key_by_id_only() -> None:
    session = _session()
    cookie = sessions.encode(session, SECRET)
    assert sessions.decode(cookie, (SECRET,), NOW + 60) == session
    payload = orjson.loads(base64.urlsafe_b64decode(cookie.split(".")[0] + "=="))
    assert set(payload) == {"v", "sid", "kid", "env", "exp"}
    assert session.expires == NOW + 8 * 3600


def test_it_expires_after_eight_hours() -> None:
    cookie = sessions.encode(_session(), SECRET)
    assert sessions.decode(cookie, (SECRET,), NOW + 8 * 3600 - 1) is not None
    assert sessions.decode(cookie, (SECRET,), NOW + 8 * 3600) is None


def test_another_secret_or_a_changed_byte_is_refused() -> None:
    session = _session()
    cookie = sessions.encode(session, SECRET)
    assert sessions.decode(cookie, (OTHER,), NOW) is None
    assert sessions.decode(cookie, (OTHER, SECRET), NOW) == session  # any replica's secret
    head, mac = cookie.split(".")
    forged = orjson.dumps({"v": 1, "sid": session.sid, "kid": "ffffffffffff", "env": "prod",
                           "exp": session.expires})
    forged_head = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    assert sessions.decode(f"{forged_head}.{mac}", (SECRET,), NOW) is None
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    assert sessions.decode(f"{head}.{flipped}", (SECRET,), NOW) is None


def test_malformed_cookies_are_refused_not_raised() -> None:
    for value in (None, "", "x", "a.b.c", "!!!.???", "e30.e30"):
        assert sessions.decode(value, (SECRET,), NOW) is None


def test_a_stream_token_mac_does_not_verify_as_a_session() -> None:
    """The purpose prefix: the same secret signs stream tokens (proxy.api.tokens)."""
    import hashlib
    import hmac

    payload = orjson.dumps({"v": 1, "sid": "x", "kid": "k", "env": "prod", "exp": NOW + 99})
    plain = hmac.new(SECRET, payload, hashlib.sha256).digest()
    cookie = (base64.urlsafe_b64encode(payload).rstrip(b"=").decode() + "." +
              base64.urlsafe_b64encode(plain).rstrip(b"=").decode())
    assert sessions.decode(cookie, (SECRET,), NOW) is None


def test_csrf_token_is_per_session_and_checked() -> None:
    one, two = _session(), _session()
    token = sessions.csrf_token(one, SECRET)
    assert sessions.csrf_ok(one, SECRET, token)
    assert not sessions.csrf_ok(two, SECRET, token)
    assert not sessions.csrf_ok(one, OTHER, token)
    assert not sessions.csrf_ok(one, SECRET, None)
    assert not sessions.csrf_ok(one, SECRET, "")


def test_signin_token_is_bound_to_its_nonce() -> None:
    nonce = sessions.new_nonce()
    token = sessions.signin_token(nonce, SECRET)
    assert sessions.signin_ok(nonce, SECRET, token)
    assert not sessions.signin_ok(sessions.new_nonce(), SECRET, token)
    assert not sessions.signin_ok(None, SECRET, token)
    assert not sessions.signin_ok(nonce, SECRET, None)


def test_a_revocation_outlives_the_cookie() -> None:
    session = _session()
    assert session.ttl(NOW) > 8 * 3600 - 1
    assert session.ttl(session.expires + 10) == 1
