"""Typed JsonLogic expressions (numbers, strings, lists, booleans) for the conformance
generator, over the attributes of the generated contexts."""

from __future__ import annotations

from tests.conformance.gen_base import (
    BARE_TERNARY,
    BOOL_ATTRS,
    COUNTRIES,
    JSON,
    LIST_ATTRS,
    NUM_ATTRS,
    ROLES,
    SEMVER_OPS,
    SEMVER_TARGETS,
    STR_ATTRS,
    TAGS,
    TIERS,
    VERSIONS,
    ContextGen,
    is_constant,
)


class RuleGen(ContextGen):
    """Expressions of a known type; ``boolean`` is the condition of rules."""

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
            parts = [{"if": [p, p, p]} if isinstance(p, dict) and set(p) & BARE_TERNARY else p
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
