"""bench/unleash.py's translation of the realistic workload's 20 flags into Unleash toggles.

What runs here, without Node: the toggles' shape (one per flag, operators an Unleash server
accepts, payloads that decode to flagd's values, rollout and variant weights equal to the
fractional weights), and their logic: with every fractional pinned to its first or last
variant (so no bucketing decides), flagedge's own engine on the flagd document and a small
reading of the Unleash SDK's rules (below: first strategy whose constraints all hold, wins) on
the toggles must give every flag the same value for the workload's users and for contexts at
the rules' edges. That reading is ours; ``python bench/unleash.py --check`` holds the same
toggles against the real Unleash Proxy (and checks the unpinned shares), which is what makes it
trustworthy. The bench itself also compares the two real servers before it measures.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.evaluation.documents import compile_document
from proxy.evaluation.engine import evaluate_all
from tests.bench_module import load

unleash = load("unleash")
DOCUMENT = unleash.realistic_document()
FEATURES = unleash.unleash_features(DOCUMENT)


def strategies(features: dict) -> list[tuple[str, dict]]:
    return [(f["name"], s) for f in features["features"] for s in f["strategies"]]


def test_every_flag_is_one_toggle_of_its_name_and_state() -> None:
    toggles = {f["name"]: f for f in FEATURES["features"]}
    assert list(toggles) == list(DOCUMENT["flags"])
    for key, flag in DOCUMENT["flags"].items():
        assert toggles[key]["enabled"] == (flag["state"] != "DISABLED"), key
        assert toggles[key]["strategies"] or flag["state"] == "DISABLED", key


def test_only_what_an_unleash_server_accepts() -> None:
    segments = {s["id"]: s for s in FEATURES["segments"]}
    used = [c for _, s in strategies(FEATURES) for c in s["constraints"]]
    used += [c for s in FEATURES["segments"] for c in s["constraints"]]
    for c in used:
        assert c["operator"] in unleash.OPERATORS, c
        one = c["operator"].startswith(("NUM_", "SEMVER_", "DATE_"))
        assert ("value" in c) == one and ("values" in c) == (not one), c
    for key, s in strategies(FEATURES):
        assert s["name"] in ("default", "flexibleRollout"), key
        assert all(ref in segments for ref in s["segments"]), key
        if s["variants"]:
            assert sum(v["weight"] for v in s["variants"]) == 1000, key


def test_payloads_are_flagds_values_and_booleans_have_none() -> None:
    for key, s in strategies(FEATURES):
        values = DOCUMENT["flags"][key]["variants"]
        boolean = all(isinstance(v, bool) for v in values.values())
        assert not (boolean and s["variants"]), key
        for v in s["variants"]:
            assert unleash.decoded(v["payload"]) == values[v["name"]], (key, v)
            assert type(unleash.decoded(v["payload"])) is type(values[v["name"]]), (key, v)


def fractionals(node: Any) -> list[list[tuple[str, float]]]:
    """Each ``fractional``'s shares, in the order the rules hold them."""
    if isinstance(node, dict):
        if "fractional" in node:
            buckets = [b for b in node["fractional"] if isinstance(b, list)]
            total = sum(w for _, w in buckets)
            return [[(name, round(w / total, 9)) for name, w in buckets]]
        return [f for v in node.values() for f in fractionals(v)]
    return [f for v in node for f in fractionals(v)] if isinstance(node, list) else []


def rollouts(feature: dict) -> list[list[tuple[str, float]]]:
    """Each rollout's shares in flagd's terms: a boolean rollout is [on p, off 1 - p]."""
    out = []
    for s in feature["strategies"]:
        if s["variants"] and s["name"] == "flexibleRollout":
            out.append([(v["name"], round(v["weight"] / 1000, 9)) for v in s["variants"]])
        elif s["name"] == "flexibleRollout":
            share = int(s["parameters"]["rollout"]) / 100
            out.append([("on", round(share, 9)), ("off", round(1 - share, 9))])
    return out


def test_rollouts_and_variant_weights_are_the_fractional_weights() -> None:
    for feature in FEATURES["features"]:
        flag = DOCUMENT["flags"][feature["name"]]
        assert rollouts(feature) == fractionals(flag.get("targeting", {})), feature["name"]
    for _, s in strategies(FEATURES):  # bucketing on the user, as flagd's on targetingKey
        if s["name"] == "flexibleRollout":
            assert s["parameters"]["stickiness"] == "userId"
            assert all(v["stickiness"] == "userId" for v in s["variants"])


def test_pinning_leaves_no_bucketing_on_either_side() -> None:
    for pin in unleash.PINS:
        assert "fractional" not in json.dumps(unleash.pinned_document(DOCUMENT, pin))
        for _, s in strategies(unleash.unleash_features(DOCUMENT, pin)):
            assert s["parameters"].get("rollout", "100") in ("0", "100")
            assert len(s["variants"]) <= 1


# -- the Unleash SDK's rules, as read from unleash-client 6 (strategy.js, client.js) -----------
def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def holds(c: dict, context: dict) -> bool:
    value, op = context.get(c["contextName"]), c["operator"]
    if op in ("IN", "NOT_IN"):
        found = (op == "IN") == (value in c["values"])
    elif op.startswith("STR_"):
        test = str.startswith if op == "STR_STARTS_WITH" else str.endswith
        found = isinstance(value, str) and any(test(value, v) for v in c["values"])
    else:
        a, b = ((float(value), float(c["value"])) if op.startswith("NUM_")
                else (version(value), version(c["value"])))
        found = {"LT": a < b, "GT": a > b, "GTE": a >= b, "EQ": a == b}[op.split("_")[1]]
    return found != c["inverted"]


def toggle_value(feature: dict, segments: dict, context: dict) -> Any:
    """A pinned toggle's value (rollouts are 0 or 100 %: no hashing)."""
    if not feature["enabled"]:
        return None
    for s in feature["strategies"]:
        constraints = s["constraints"] + [c for ref in s["segments"]
                                          for c in segments[ref]["constraints"]]
        if s["parameters"].get("rollout") == "0" or not all(holds(c, context)
                                                             for c in constraints):
            continue
        return unleash.decoded(s["variants"][0]["payload"]) if s["variants"] else True
    return False


@pytest.mark.parametrize("pin", ["first", "last"])
def test_pinned_toggles_answer_as_flagedge_does(pin: str) -> None:
    flag_set = compile_document(unleash.pinned_document(DOCUMENT, pin))
    features = unleash.unleash_features(DOCUMENT, pin)
    segments = {s["id"]: s for s in features["segments"]}
    checked = 0
    for who, attrs in unleash.users(1000) + unleash.edge_users(2000):
        edge = {r.to_ofrep()["key"]: r.to_ofrep().get("value")
                for r in evaluate_all(flag_set, {"targetingKey": who, **attrs})}
        context = {"userId": who, **attrs}
        for feature in features["features"]:
            assert toggle_value(feature, segments, context) == edge[feature["name"]], (
                pin, feature["name"], who, attrs)
            checked += 1
    assert checked == 3000 * 20


def test_an_unleash_answer_reads_as_flagedge_values() -> None:
    # GET /proxy lists the enabled toggles only: absent booleans are off, disabled ones None.
    answer = [{"name": "kill-legacy-sync", "enabled": True,
               "variant": {"name": "disabled", "enabled": False}},
              {"name": "promo-discount", "enabled": True, "variant": {
                  "name": "none", "enabled": True, "payload": {"type": "number", "value": "0.0"}}},
              {"name": "footer-links", "enabled": True, "variant": {
                  "name": "v2", "enabled": True, "payload": unleash.payload({"links": ["a"]})}}]
    values = unleash.toggle_values(answer, FEATURES)
    assert values["kill-legacy-sync"] is True and values["dark-mode"] is False
    assert values["kill-payments-v3"] is None
    assert values["promo-discount"] == 0.0 and values["footer-links"] == {"links": ["a"]}


def test_both_load_scripts_make_the_same_users() -> None:
    """The attributes are drawn by the same Lua expression in ofrep_http's script and ours
    (and ``attributes`` mirrors it for the checks)."""
    draw = ('(n % 10 == 0) and "example.com" or "mail.test", plans[n % 4 + 1],\n'
            '    countries[n % 5 + 1], 13 + n % 70, 1 + n % 3, n % 5, n % 7')
    ofrep_http = load("ofrep_http")
    assert draw in ofrep_http.LUA and draw in unleash.UNLEASH_LUA.template
    assert unleash.attributes(30) == {"email": "user30@example.com", "plan": "enterprise",
                                      "country": "US", "age": 43, "appVersion": "1.0.2"}
