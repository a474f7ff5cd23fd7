"""Property: after any sequence of pushes, rolling back to any version reproduces exactly
the export taken at that version (the Lua-built before/after entries are complete)."""

from __future__ import annotations

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.release import publisher
from proxy.release.changeset import Document

pytestmark = pytest.mark.integration

FLAG_KEYS = ["a", "b", 'q"k', "ü"]
flag = st.builds(
    lambda state, default, extra: {"state": state, "variants": {"on": True, "off": False,
                                                                **extra},
                                   "defaultVariant": default},
    st.sampled_from(["ENABLED", "DISABLED"]), st.sampled_from(["on", "off"]),
    st.dictionaries(st.sampled_from(["x", "y"]), st.booleans(), max_size=1))
document = st.builds(
    lambda flags, evaluators, metadata: Document(flags, evaluators, metadata),
    st.dictionaries(st.sampled_from(FLAG_KEYS), flag, max_size=4),
    st.dictionaries(st.sampled_from(["e1", "e2"]), st.just({"==": [1, 1]}), max_size=2),
    st.dictionaries(st.sampled_from(["team", "tier"]), st.integers(0, 3), max_size=2))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(document, min_size=1, max_size=6), data=st.data())
def test_rollback_to_any_version_reproduces_its_export(redis_server, docs, data):
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    exports = {0: None}
    for d in docs:
        result = publisher.push(client, "prod", d)
        if result.status == "ok":
            exports[result.version] = publisher.export(client, "prod")
    current = publisher.read_state(client, "prod").version
    if current == 0:
        return
    target = data.draw(st.integers(0, current))
    publisher.rollback(client, "prod", target)
    if target == 0:
        assert publisher.read_state(client, "prod").raw_flags == {}
    else:
        assert publisher.export(client, "prod") == exports[target]
