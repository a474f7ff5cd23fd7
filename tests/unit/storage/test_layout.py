"""Key names, environment names, Redis URLs, backoff: the pure parts of the Redis plumbing."""

import pytest

from proxy.sources.base import Backoff
from proxy.storage import layout
from proxy.storage.url import async_client, parse_sentinel, redact, sync_client


def test_keys_share_one_hash_tag_per_environment():
    assert layout.env_keys("prod") == ["flagedge:{prod}:flags", "flagedge:{prod}:meta",
                                       "flagedge:{prod}:changes"]
    assert layout.env_of_changes_key(layout.changes_key("eu-west.1")) == "eu-west.1"


@pytest.mark.parametrize("name", ["prod", "a", "eu-west_1.x", "A" * 64])
def test_good_env_names(name):
    assert layout.check_env(name) == name


@pytest.mark.parametrize("name", ["", "-x", "a{b", "a}b", "a b", "a/b", "A" * 65, "é"])
def test_bad_env_names(name):
    with pytest.raises(ValueError, match="invalid environment name"):
        layout.check_env(name)


def test_sentinel_urls():
    s = parse_sentinel("redis+sentinel://u:p%40ss@h1:26379,h2:26380/mymaster/2")
    assert s.hosts == [("h1", 26379), ("h2", 26380)] and s.service == "mymaster"
    assert (s.db, s.username, s.password, s.ssl) == (2, "u", "p@ss", False)
    s = parse_sentinel("rediss+sentinel://h1/svc")
    assert s.hosts == [("h1", 26379)] and s.ssl and s.db == 0
    with pytest.raises(ValueError, match="service name"):
        parse_sentinel("redis+sentinel://h1:26379")


def test_clients_for_each_scheme_and_a_clear_error_otherwise():
    assert redact("redis://user:secret@h:1/0") == "redis://user:***@h:1/0"
    assert type(sync_client("redis://127.0.0.1:1/0")).__name__ == "Redis"
    assert type(sync_client("unix:///tmp/x.sock")).__name__ == "Redis"
    assert type(async_client("rediss://127.0.0.1:1/0")).__module__.startswith("redis.asyncio")
    with pytest.raises(ValueError, match=r"unsupported Redis URL 'http://h:\*\*\*@x'"):
        sync_client("http://h:pw@x")


def test_backoff_grows_with_jitter_and_is_capped():
    b = Backoff(base=0.1, cap=1.0)
    delays = [b.next() for _ in range(10)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= d <= 1.0 for d in delays[5:])
    b.reset()
    assert b.next() <= 0.1
