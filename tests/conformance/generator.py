"""Seeded generator of flagd documents and evaluation contexts for the conformance test.

Every document is valid flagd JSON that both engines must accept; the rules use every
JsonLogic operator of DESIGN §2 plus flagd's four, over realistic contexts (strings, ints,
floats, numeric strings, bools, nulls, nested objects, arrays; ASCII only).

DESIGN §2's named divergences are excluded by construction (see README.md):
- a ``fractional`` bucketBy expression always yields a string (``cat`` or ``var`` with a
  string default over attributes that are strings when present);
- ASCII only, no ``$flagd.timestamp``;
- literal fractional weights are integers and sum to at most 2^31-1 (flagedge rejects
  other literals at load, the reference returns null at run time);
- comparisons whose operands are all literals have operands of one type (the reference
  folds them at load and would turn a throwing one into PARSE_ERROR);
- a ``$ref`` inside an evaluator names an evaluator defined after it (the reference
  substitutes references textually, in definition order, so a reference to an earlier
  evaluator stays unresolved there);
- ``targetingKey`` is a string when present; no empty variant names.
Mixed-type comparisons on context values are generated on purpose: where the reference throws
the driver re-evaluates with plain-JavaScript comparisons (DESIGN §2) and that is compared.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

JSON = Any

#: Operators of DESIGN §2 the corpus must exercise (checked by the test).
OPERATORS = [
    "var", "missing", "missing_some", "if", "?:", "==", "===", "!=", "!==", "!", "!!", "or",
    "and", "<", "<=", ">", ">=", "max", "min", "+", "-", "*", "/", "%", "map", "filter",
    "reduce", "all", "none", "some", "merge", "in", "cat", "substr", "fractional", "sem_ver",
    "starts_with", "ends_with", "$ref",
]

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


@dataclass
class Case:
    key: str
    context: dict[str, JSON]


@dataclass
class Doc:
    doc: dict[str, JSON]
    cases: list[Case]


@dataclass
class Corpus:
    docs: list[Doc]
    operators: Counter[str] = field(default_factory=Counter)

    @property
    def n_flags(self) -> int:
        return sum(len(d.doc["flags"]) for d in self.docs)

    @property
    def n_cases(self) -> int:
        return sum(len(d.cases) for d in self.docs)


_RUNTIME_OPS = frozenset(
    {"var", "missing", "missing_some", "fractional", "sem_ver", "starts_with", "ends_with", "$ref"}
)


_BARE_TERNARY = frozenset({"or", "and", "all", "missing", "missing_some"})


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


class Generator:
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

    # ---- typed expressions ---------------------------------------------------------------
    def num(self, d: int) -> JSON:
        r = self.r
        roll = r.random()
        if d <= 0 or roll < 0.35:
            return self.var(self.pick(NUM_ATTRS), self.pick([0, 1, 18]))
        if roll < 0.5:
            return self.pick([0, 1, 2, 5, 10, 18, 21, 50, 99, 100, 2.5, 0.1, -3, "7"])
        if roll < 0.75:
            op = self.pick(["+", "-", "*", "/", "%"])
            n = 2 if op in "/%" else r.randrange(1 if op in "+-" else 2, 4)
            args = [self.num(d - 1) for _ in range(n)]
            if op == "/" and self.p(0.8):
                # a literal 0 divisor is a PARSE_ERROR at load in the reference
                args[-1] = self.pick([2, 3, 4, 0.5, 10, 2, 3, 4, 0.5, 10, 0, "0"])
            if op == "%" and self.p(0.7):
                args[-1] = self.pick([2, 3, 7, -3, 2.5])
            if is_constant(args) and self.p(0.9):
                args[0] = self.var(self.pick(NUM_ATTRS), 0)  # few foldable constants
            return {op: args}
        if roll < 0.83:
            op = self.pick(["max", "min"])
            args = [self.num(d - 1) for _ in range(r.randrange(1, 4))]
            if is_constant(args) and self.p(0.9):
                args[0] = self.var(self.pick(NUM_ATTRS), 0)
            return {op: args}
        if roll < 0.92:
            return self.reduce_sum(d)
        return {"if": [self.boolean(d - 1), self.num(d - 1), self.num(d - 1)]}

    def reduce_sum(self, d: int) -> JSON:
        if self.p(0.5):
            body = {"+": [{"var": "accumulator"}, {"var": "current"}]}
            args: list[JSON] = [self.var("scores"), body]
        else:
            body = {"+": [{"var": "accumulator"}, {"*": [{"var": "current.qty"},
                                                          {"var": "current.price"}]}]}
            args = [{"map": [{"var": "items"}, {"var": ""}]} if self.p(0.3) else self.var("items"),
                    body]
        if self.p(0.9):
            args.append(self.pick([0, 1, 10]))
        return {"reduce": args}

    def string(self, d: int) -> JSON:
        r = self.r
        roll = r.random()
        if d <= 0 or roll < 0.4:
            return self.var(self.pick(STR_ATTRS), self.pick(["none", "gold", "US"]))
        if roll < 0.52:
            return self.pick(["gold", "silver", "US", "DE", "admin", "@corp.example", "",
                              "beta", "v1", "x"])
        if roll < 0.62:
            return {"var": "$flagd.flagKey"}
        if roll < 0.77:
            parts = [self.pick([self.string(d - 1), self.num(d - 1), "-", "v"])
                     for _ in range(r.randrange(1, 4))]
            if self.p(0.05):
                parts.append(self.var(self.pick(["tags", "scores", "user.verified", "beta"])))
            if all(not isinstance(a, dict) for a in parts):
                parts.append(self.var(self.pick(STR_ATTRS)))
            # json-logic-engine compiles cat as '' + a + b without parentheses, so an argument
            # compiled to a bare ?: / && / || (or, and, all, missing, missing_some) swallows
            # the concatenation: a reference bug flagedge does not copy (README)
            parts = [{"if": [p, p, p]} if isinstance(p, dict) and set(p) & _BARE_TERNARY else p
                     for p in parts]
            return {"cat": parts}
        if roll < 0.87:
            args = [self.var(self.pick(["email", "user.id", "locale"]), "") if self.p(0.8)
                    else self.string(d - 1),
                    self.pick([0, 1, 2, -3, -1, 5])]
            if self.p(0.6):
                args.append(self.pick([1, 2, 3, -1, -2, 10]))
            return {"substr": args}
        if roll < 0.94:
            return {"or": [self.string(d - 1), self.string(d - 1)]}
        return {"if": [self.boolean(d - 1), self.string(d - 1), self.string(d - 1)]}

    def list_expr(self, d: int) -> JSON:
        r = self.r
        roll = r.random()
        if d <= 0 or roll < 0.35:
            return self.var(self.pick(LIST_ATTRS))
        if roll < 0.5:
            return r.sample(TAGS + ROLES, r.randrange(0, 4)) + (
                [self.pick([1, True, None, "1"])] if self.p(0.15) else [])
        if roll < 0.65:
            src = self.pick(["items", "scores", "tags", "user.roles"])
            mapper = {"items": {"var": "sku"}, "scores": {"*": [{"var": ""}, 2]},
                      "tags": {"cat": [{"var": ""}, "!"]}, "user.roles": {"var": ""}}[src]
            return {"map": [self.var(src), mapper]}
        if roll < 0.8:
            src = self.pick(["items", "scores", "tags"])
            pred = {"items": {">=": [{"var": "qty"}, self.pick([1, 2, 3])]},
                    "scores": {">": [{"var": ""}, self.pick([10, 50, 90])]},
                    "tags": {"!=": [{"var": ""}, "blocked"]}}[src]
            return {"filter": [self.var(src), pred]}
        parts = [self.pick([self.list_expr(d - 1), self.string(d - 1), ["vip", "gold"]])
                 for _ in range(r.randrange(1, 4))]
        return {"merge": parts}

    def any_value(self, d: int) -> JSON:
        roll = self.r.random()
        if roll < 0.35:
            return self.num(d)
        if roll < 0.7:
            return self.string(d)
        if roll < 0.8:
            return self.var(self.pick(BOOL_ATTRS))
        if roll < 0.85:
            return self.pick([True, False, None])
        if roll < 0.9:
            return self.var(self.pick(["user", "user.org", "tags", "missing.attr", "items.0"]))
        return self.boolean(d)

    def comparison(self, d: int) -> JSON:
        r = self.r
        op = self.pick(["==", "===", "!=", "!==", "<", "<=", ">", ">="])
        roll = r.random()
        if roll < 0.45:
            a, b = self.num(d - 1), self.num(d - 1)
        elif roll < 0.75:
            a, b = self.string(d - 1), self.string(d - 1)
        elif roll < 0.85 and op in ("==", "===", "!=", "!=="):
            a, b = self.var(self.pick([*BOOL_ATTRS, "beta"])), self.pick([True, False, None, 1, 0])
        else:  # deliberately mixed (the reference may throw: plain-JS comparison then)
            a, b = self.any_value(d - 1), self.any_value(d - 1)
        args = [a, b]
        if is_constant(args):  # the reference folds these at load: keep them out
            args[0] = self.var(self.pick(NUM_ATTRS if isinstance(b, int | float) else STR_ATTRS))
        if op in ("<", "<=") and self.p(0.25):  # between
            lo = self.pick([0, 10, 18, 2.5])
            mid = self.num(d - 1) if self.p(0.8) else self.string(d - 1)
            if is_constant(mid):
                mid = self.var(self.pick(NUM_ATTRS))
            return {op: [lo, mid, lo + self.pick([10, 50, 0])]}
        if self.p(0.5):
            args.reverse()
        return {op: args}

    def boolean(self, d: int, evaluators: list[str] | None = None) -> JSON:
        r = self.r
        evaluators = evaluators if evaluators is not None else getattr(self, "_evaluators", [])
        roll = r.random()
        if d <= 0:
            roll = r.random() * 0.5
        elif self.p(0.04):
            return self.edge(d)
        if roll < 0.25:
            return self.comparison(d)
        if roll < 0.3:
            return self.var(self.pick(BOOL_ATTRS))
        if roll < 0.37:
            return self.membership(d)
        if roll < 0.43:
            op = self.pick(["starts_with", "ends_with"])
            first = self.var(self.pick(["email", "locale", "user.id", "tier"])) if self.p(0.85) \
                else self.num(d - 1)
            lit = {"starts_with": ["admin", "en", "u1", "go", "de"],
                   "ends_with": ["@corp.example", ".com", "US", "ld", "7"]}[op]
            return {op: [first, self.pick(lit)]}
        if roll < 0.5:
            version = self.var("appVersion") if self.p(0.85) else self.pick(VERSIONS[:8])
            target = self.pick(SEMVER_TARGETS)
            if not isinstance(version, dict):
                version, target = target, self.var("appVersion")
            return {"sem_ver": [version, self.pick(SEMVER_OPS), target]}
        if evaluators and roll < 0.56:
            return {"$ref": self.pick(evaluators)}
        if d <= 0:
            return self.comparison(d)
        if roll < 0.62:
            op = self.pick(["and", "or"])
            return {op: [self.boolean(d - 1) for _ in range(r.randrange(1, 4))]}
        if roll < 0.68:
            op = self.pick(["!", "!!"])
            inner = self.pick([self.boolean(d - 1), self.any_value(d - 1), self.list_expr(d - 1)])
            return {op: [inner] if self.p(0.7) else inner}
        if roll < 0.74:
            keys = r.sample(["email", "tier", "user.id", "user.org.plan", "age", "beta", "x"],
                            r.randrange(1, 4))
            if self.p(0.5):
                return {"missing": keys}
            return {"missing_some": [r.randrange(1, len(keys) + 1), keys]}
        if roll < 0.84:
            return self.quantifier(d)
        if roll < 0.9:
            return {"filter": [self.var("scores"), {">": [{"var": ""}, self.pick([20, 60])]}]}
        if roll < 0.95:
            c = {self.pick(["if", "?:"]): [self.boolean(d - 1), self.boolean(d - 1),
                                           self.boolean(d - 1)]}
            return c
        return self.comparison(d)

    def edge(self, d: int) -> JSON:
        """Less usual but valid shapes: argument counts, argument kinds, computed operands.
        (flagd's own operators always get their arity: flagedge refuses others at load.)"""
        n, st = self.num(d - 1), self.string(d - 1)
        return self.pick([
            {">": [self.num(d - 1), n, self.num(d - 1)]},  # chained, not between
            {"==": [n, self.num(d - 1), self.var("age")]},
            {"!": [self.boolean(d - 1), self.boolean(d - 1)]},
            {"!!": []},
            {"!": []},
            {"if": []},
            {"if": [self.boolean(d - 1)]},
            {"?:": [self.var("beta")]},
            {"or": []},
            {"and": [self.var(self.pick(STR_ATTRS))]},
            {"in": [st, self.var(self.pick(["user", "user.org", "items.0"]))]},
            {"in": [self.var("tier"), {"var": "tags"}]},
            {"substr": [self.var("email", ""), "1", self.pick(["3", 2.7, None])]},
            {"substr": [self.var("age"), 0, 1]},
            {">": [{self.pick(["max", "min"]): [self.var("scores.0", 0)]}, n]},
            {"some": [self.var(self.pick(["user", "tier", "tags.0"])), {"var": ""}]},
            {"all": [self.var("tier"), {"==": [{"var": ""}, "g"]}]},
            {"none": [self.var("user.org"), {"var": ""}]},
            {"map": [self.var("user"), {"var": ""}]},
            {"missing": {"merge": [["email"], self.pick([["tier"], self.var("tags")])]}},
            {"missing": [self.var("tier", "tier")]},
            {"missing_some": [self.var("rollout", 1), ["email", "tier", "user.id"]]},
            {"sem_ver": [self.var("appVersion"), self.var("tier", "="), self.pick(SEMVER_TARGETS)]},
            {"starts_with": [self.var("email"), self.var("tier")]},
            {"var": [self.var("tier", "beta")]},
            {"var": self.pick([0, 1, "0", "tags.1"])},
            {"merge": []},
            {"cat": []},
            {"in": [self.var("age"), self.pick(["12345", "x1y", ""])]},
            {"<": [self.var("tier"), self.var("country")]},
            {">=": [self.var("email"), self.var("user.org.plan")]},
            {"===": [self.var("scores"), self.var("scores")]},
            {"==": [self.var("user"), self.var("user")]},
            {"!=": [self.var("tags"), None]},
        ])

    def membership(self, d: int) -> JSON:
        roll = self.r.random()
        if roll < 0.35:
            return {"in": [self.var(self.pick(["country", "tier", "locale"])),
                           self.r.sample(COUNTRIES + TIERS[:3], self.r.randrange(1, 5))]}
        if roll < 0.55:
            return {"in": [self.pick(TAGS), self.var("tags")]}
        if roll < 0.7:
            return {"in": [self.pick(["@corp", "example", "admin", "."]), self.var("email")]}
        if roll < 0.8:
            pool: list[JSON] = [18, 21, "30", 1, True, 2.0, 0, False, None]
            return {"in": [self.var("age"), self.r.sample(pool, self.r.randrange(1, 5))]}
        if roll < 0.88:
            return {"in": [self.pick(ROLES), self.list_expr(d - 1)]}
        if roll < 0.92:  # haystack read from a number-ish attribute: a string, null or a throw
            return {"in": [self.pick(["1", "2", "e"]), self.var(self.pick(["age", "score"]))]}
        return {"in": [self.string(d - 1), self.list_expr(d - 1)]}

    def quantifier(self, d: int) -> JSON:
        op = self.pick(["all", "none", "some"])
        src = self.pick(["items", "scores", "tags", "user.roles"])
        pred = {
            "items": {self.pick([">", ">=", "<"]): [{"var": "qty"}, self.pick([0, 1, 2, 3])]},
            "scores": {self.pick([">", "<="]): [{"var": ""}, self.pick([10, 50, 90])]},
            "tags": {self.pick(["==", "!="]): [{"var": ""}, self.pick(TAGS)]},
            "user.roles": {"in": [{"var": ""}, ["admin", "billing"]]},
        }[src]
        return {op: [self.var(src), pred]}

    # ---- targeting rules -----------------------------------------------------------------
    def variant_name(self, names: list[str], *, allow_null: bool = True) -> JSON:
        roll = self.r.random()
        if roll < 0.05:
            return NOT_A_VARIANT
        if allow_null and roll < 0.12:
            return None
        return self.pick(names)

    def fractional(self, names: list[str], d: int) -> JSON:
        r = self.r
        args: list[JSON] = []
        if self.p(0.35):
            args.append(self.pick([
                {"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]},
                {"cat": [{"var": "user.id"}, "-", {"var": "$flagd.flagKey"}]},
                {"var": ["user.id", "anonymous"]},
                {"var": ["email", "nobody"]},
                "fixed-bucket",
                {"cat": [{"var": "targetingKey"}]},
            ]))
        n = r.randrange(1, 5)
        chosen = [self.pick(names) for _ in range(n)]
        for name in chosen:
            roll = r.random()
            if roll < 0.12:
                args.append([name])
            elif roll < 0.8:
                args.append([name, r.randrange(0, 101)])
            elif roll < 0.85:
                args.append([name, -r.randrange(1, 30)])
            elif roll < 0.88:
                args.append([name, self.pick([50.0, 25.0])])
            elif roll < 0.92:
                args.append([name, r.randrange(1, 2**31 // 8)])
            else:
                args.append([name, self.pick([
                    {"var": "rollout"}, {"-": [100, {"var": ["rollout", 0]}]},
                    {"*": [{"var": ["rollout", 1]}, 2]}, {"var": "age"},
                    {"if": [{"var": "beta"}, 90, 10]},
                ])])
        return {"fractional": args}

    def targeting(self, names: list[str], vtype: str, d: int) -> JSON:
        r = self.r
        roll = r.random()
        if roll < 0.38:
            n = r.randrange(1, 4)
            args: list[JSON] = []
            for _ in range(n):
                args += [self.boolean(d), self.variant_name(names, allow_null=False)]
            if self.p(0.75):
                args.append(self.variant_name(names))
            return {self.pick(["if", "if", "?:"]): args}
        if roll < 0.55:
            return self.fractional(names, d)
        if roll < 0.63:
            return {"if": [self.boolean(d), self.fractional(names, d),
                           self.variant_name(names)]}
        if roll < 0.73 and (set(names) >= {"true", "false"} or self.p(0.15)):
            return self.boolean(d)  # true/false map to "true"/"false" (a variant or not)
        if roll < 0.78:
            return self.var("tier", self.pick(names)) if self.p(0.5) else self.var("tier")
        if roll < 0.83:
            return {"cat": [self.pick(["v", "a", ""]), self.var(self.pick(
                ["age", "user.org.seats", "tier", "missing"]))]}
        if roll < 0.88:
            return {self.pick(["or", "and"]): [
                {"if": [self.boolean(d - 1), self.variant_name(names, allow_null=False)]},
                self.variant_name(names)]}
        if roll < 0.895:  # arrays and objects name variants by their JS string ("a,b")
            return self.pick([{"merge": [self.var("tier")]}, self.var("user"),
                              {"map": [self.var("tags"), {"var": ""}]}, self.var("items.0")])
        if roll < 0.91 and vtype == "number":
            return {"if": [self.boolean(d - 1), self.pick([0, 1, 2, -1, 1.0, 2.5]),
                           self.pick([0, 1, None])]}
        if roll < 0.95 and getattr(self, "_variant_evaluators", None):
            return {"$ref": self.pick(self._variant_evaluators)}
        return {"if": [self.boolean(d), {"if": [self.boolean(d - 1),
                                                self.variant_name(names, allow_null=False),
                                                self.variant_name(names)]},
                       self.variant_name(names)]}

    # ---- documents -----------------------------------------------------------------------
    def evaluators(self) -> dict[str, JSON]:
        names = self.r.sample(EVALUATOR_NAMES, self.r.randrange(0, 4))
        out: dict[str, JSON] = {}
        for i, name in enumerate(names):
            later = names[i + 1:]
            out[name] = self.boolean(2, evaluators=later)
        return out

    def flag(self, key: str) -> dict[str, JSON]:
        vtype, variants = self.pick(VARIANT_SETS)
        names = list(variants)
        if self.p(0.2):
            names = self.r.sample(names, self.r.randrange(2, len(names) + 1))
            variants = {n: variants[n] for n in names}
        flag: dict[str, JSON] = {
            "state": "DISABLED" if self.p(0.05) else "ENABLED",
            "variants": variants,
        }
        roll = self.r.random()
        if roll < 0.85:
            flag["defaultVariant"] = self.pick(names)
        elif roll < 0.93:
            flag["defaultVariant"] = None
        roll = self.r.random()
        if roll < 0.1:
            pass  # no targeting: STATIC
        elif roll < 0.15:
            flag["targeting"] = {}
        else:
            flag["targeting"] = self.targeting(names, vtype, self.r.randrange(1, 4) if self.p(0.9) else 5)
        if self.p(0.3):
            flag["metadata"] = {self.pick(["owner", "team", "ticket"]): self.pick(["growth", "core"]),
                                "version": self.r.randrange(1, 9)}
            if self.p(0.3):
                flag["metadata"]["experimental"] = self.p(0.5)
        return flag

    def document(self) -> Doc:
        r = self.r
        evaluators = self.evaluators()
        self._evaluators = list(evaluators)
        self._variant_evaluators = []
        if evaluators and self.p(0.2):
            self._variant_evaluators = ["pickColour"]
            evaluators = {"pickColour": {"if": [{"$ref": self.pick(list(evaluators))}
                                                if self.p(0.5) else self.boolean(1, []),
                                                "red", "blue"]}, **evaluators}
        keys = r.sample(FLAG_KEYS, r.randrange(1, 5))
        flags = {k: self.flag(k) for k in keys}
        doc: dict[str, JSON] = {"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": flags}
        if evaluators:
            doc["$evaluators"] = evaluators
        if self.p(0.3):
            doc["metadata"] = {"flagSetId": "shop", "version": r.randrange(1, 5),
                               "owner": "platform"}
        self._evaluators = []
        self._variant_evaluators = []
        contexts = [self.context() for _ in range(r.randrange(3, 8))]
        cases = [Case(k, c) for c in contexts for k in keys]
        if self.p(0.1):
            cases.append(Case("not-a-flag", contexts[0]))
        return Doc(doc, cases)


def generate(seed: int, n_docs: int) -> Corpus:
    gen = Generator(seed)
    docs = [gen.document() for _ in range(n_docs)]
    corpus = Corpus(docs)
    for d in docs:
        count_operators(d.doc["flags"], corpus.operators)
        for body in d.doc.get("$evaluators", {}).values():
            count_operators(body, corpus.operators)
    return corpus
