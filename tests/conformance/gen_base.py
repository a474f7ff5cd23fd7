"""Constants, value pools and realistic evaluation contexts for the conformance generator
(see generator.py for what is generated and why)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

JSON = Any

NUM_ATTRS = ["age", "score", "rollout", "user.org.seats", "items.0.qty", "scores.1", "age",
             "score", "rollout", "tags.length", "accountId"]
STR_ATTRS = ["tier", "country", "email", "user.id", "user.org.plan", "tags.0", "locale", "tier",
             "country", "email", "locale", "app.version", "app\\.version"]
BOOL_ATTRS = ["beta", "user.verified"]
LIST_ATTRS = ["tags", "scores", "user.roles"]
TIERS = ["gold", "silver", "bronze", "platinum", ""]
COUNTRIES = ["US", "DE", "FR", "GB", "CA", "JP", "BR"]
TAGS = ["beta", "internal", "vip", "blocked", "mobile", "eu"]
ROLES = ["admin", "editor", "viewer", "billing"]
PLANS = ["free", "pro", "enterprise"]
VERSIONS = [
    "1.2.3", "v1.2.3", "V2.0.0", "1.2", "2", "v1", "1.2.3-beta.1", "1.2.3-rc.1+build.7",
    "1.2.3+build.5", "2.10.0", "2.9.9", "0.9.0", "1.0.0-alpha", "1.0.0-alpha.beta", "01.2.3",
    "1.2.3.4", "abc", "", " 1.2.3 ", "1.2.x", "10.0.0", 3, 1.5, None,
]
SEMVER_TARGETS = ["1.2.3", "2.0.0", "v1.5.0", "2", "1.2", "1.2.3-beta.2", "1.0.0", "0.9.1"]
SEMVER_OPS = ["=", "!=", "<", "<=", ">", ">=", "^", "~"]
KEY_WORDS = ["user", "acct", "dev", "svc", "cust"]
FLAG_KEYS = [
    "new-checkout", "dark-mode", "kill-switch", "pricing-experiment", "mobile-gate",
    "search-v2", "banner-config", "rate-limit", "beta-dashboard", "onboarding-flow",
]
EVALUATOR_NAMES = ["isInternal", "isBeta", "isPaying", "isMobile", "inEU", "isAdmin"]
NOT_A_VARIANT = "no-such-variant"

#: Variant sets by type: (variants, weight). Falsy values are served like any other.
VARIANT_SETS: list[tuple[str, dict[str, JSON]]] = [
    ("boolean", {"on": True, "off": False}),
    ("boolean", {"true": True, "false": False}),
    ("boolean", {"enabled": True, "disabled": False}),
    ("string", {"control": "control", "treatment-a": "A", "treatment-b": "B"}),
    ("string", {"gold": "G", "silver": "S", "bronze": "B", "platinum": "P"}),
    ("string", {"red": "#f00", "blue": "#00f", "none": ""}),
    ("number", {"low": 1, "mid": 2.5, "high": 100, "zero": 0}),
    ("number", {"1": 10, "0": 0, "2": 20, "-1": -10}),
    ("object", {"small": {"size": 1, "tags": ["a"]}, "large": {"size": 9, "nested": {"x": None}},
                "empty": {}}),
    ("string", {"v1": "one", "v2": "two", "vnull": "null-ish", "anull": "cat-null"}),
]


_RUNTIME_OPS = frozenset(
    {"var", "missing", "missing_some", "fractional", "sem_ver", "starts_with", "ends_with", "$ref"}
)


BARE_TERNARY = frozenset({"or", "and", "all", "missing", "missing_some"})


def is_constant(node: JSON) -> bool:
    """True when the reference would fold ``node`` at load time (no context access)."""
    if isinstance(node, list):
        return all(is_constant(n) for n in node)
    if isinstance(node, dict):
        return all(op not in _RUNTIME_OPS and is_constant(a) for op, a in node.items())
    return True


def count_operators(node: JSON, counter: Counter[str]) -> None:
    if isinstance(node, list):
        for item in node:
            count_operators(item, counter)
    elif isinstance(node, dict):
        for op, args in node.items():
            counter[op] += 1
            count_operators(args, counter)


class ContextGen:
    """Seeded randomness helpers and request contexts."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    # ---- helpers -------------------------------------------------------------------------
    def p(self, prob: float) -> bool:
        return self.r.random() < prob

    def pick(self, seq):  # type: ignore[no-untyped-def]
        return self.r.choice(seq)

    def var(self, path: str, default: JSON = None, *, with_default: float = 0.2) -> JSON:
        roll = self.r.random()
        if default is not None and roll < with_default:
            return {"var": [path, default]}
        if roll < with_default + 0.1:
            return {"var": [path]}
        return {"var": path}

    # ---- contexts ------------------------------------------------------------------------
    def targeting_key(self) -> str:
        return f"{self.pick(KEY_WORDS)}-{self.r.randrange(100000)}"

    def number_value(self) -> JSON:
        roll = self.r.random()
        if roll < 0.45:
            return self.r.randrange(0, 100)
        if roll < 0.6:
            return round(self.r.uniform(-50, 150), self.pick([1, 2, 3]))
        if roll < 0.67:
            return str(self.r.randrange(0, 100))  # numeric string
        if roll < 0.7:  # strings JS Number() reads in its own way
            return self.pick([" 42 ", "1e3", "0x10", "3.50", "-0", "Infinity", "12abc", "", "-7"])
        if roll < 0.75:
            return float(self.r.randrange(0, 10))  # integral float: 3.0
        if roll < 0.82:
            return None
        if roll < 0.86:
            return self.p(0.5)
        if roll < 0.9:
            return -self.r.randrange(1, 20)
        if roll < 0.93:  # numbers JS prints in its own way, or cannot hold exactly
            return self.pick([1e-7, 2.5e-10, 1.2345678901234568e20, 1e21, -0.0, 0.1 + 0.2,
                              9007199254740993, 2**53, 123456789.125])
        return 0

    def string_value(self, pool: list[str]) -> JSON:
        roll = self.r.random()
        if roll < 0.85:
            return self.pick(pool)
        if roll < 0.93:
            return None
        return ""

    def context(self) -> dict[str, JSON]:
        c: dict[str, JSON] = {}
        r = self.r
        if self.p(0.85):
            c["targetingKey"] = self.targeting_key() if self.p(0.95) else ""
        if self.p(0.7):
            c["tier"] = self.string_value(TIERS)
        if self.p(0.7):
            c["country"] = self.string_value(COUNTRIES)
        if self.p(0.6):
            c["locale"] = self.pick(["en-US", "de-DE", "fr-FR", "ja-JP", "en"])
        if self.p(0.7):
            name = self.pick(["alice", "bob", "carol", "admin", "dev.ops", "x"])
            domain = self.pick(["example.com", "corp.example", "mail.test", "corp.example.org"])
            c["email"] = f"{name}@{domain}" if self.p(0.9) else self.pick([None, ""])
        for attr in ("age", "score", "rollout"):
            if self.p(0.65):
                c[attr] = self.number_value()
        if self.p(0.6):
            c["beta"] = self.pick([True, False, True, None, "true", 1, 0])
        if self.p(0.6):
            c["appVersion"] = self.pick(VERSIONS)
        if self.p(0.6):
            c["tags"] = r.sample(TAGS, r.randrange(0, 4)) if self.p(0.9) else None
        if self.p(0.5):
            c["scores"] = [self.pick([r.randrange(0, 100), round(r.uniform(0, 100), 1)])
                           for _ in range(r.randrange(0, 5))]
        if self.p(0.5):
            c["items"] = [
                {"sku": f"sku-{r.randrange(100)}", "qty": r.randrange(0, 6),
                 "price": round(r.uniform(1, 200), 2)}
                for _ in range(r.randrange(0, 4))
            ]
        if self.p(0.7):
            user: dict[str, JSON] = {}
            if self.p(0.9):
                user["id"] = f"u{r.randrange(10000)}"
            if self.p(0.7):
                user["verified"] = self.pick([True, False, None])
            if self.p(0.7):
                user["roles"] = r.sample(ROLES, r.randrange(0, 3))
            if self.p(0.7):
                org: dict[str, JSON] = {"name": self.pick(["acme", "globex", "initech"])}
                if self.p(0.8):
                    org["plan"] = self.string_value(PLANS)
                if self.p(0.8):
                    org["seats"] = self.number_value()
                user["org"] = org
            elif self.p(0.2):
                user["org"] = None
            c["user"] = user
        if self.p(0.3):  # numeric ids, some past 2^53 (JS rounds them to doubles)
            c["accountId"] = self.pick([self.r.randrange(1, 10**6), self.r.randrange(2**53, 2**64),
                                        str(self.r.randrange(1, 10**6))])
        if self.p(0.05):  # a dotted key is not a path: var "app.version" reads app.version
            c["app.version"] = self.pick(VERSIONS[:6])
            if self.p(0.5):
                c["app"] = {"version": self.pick(VERSIONS[:6])}
        if self.p(0.01):
            c["$flagd"] = {"flagKey": "spoofed"}  # the engine's own $flagd must win
        return c
