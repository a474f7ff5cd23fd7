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

from collections import Counter
from dataclasses import dataclass, field

from tests.conformance.gen_base import (
    EVALUATOR_NAMES,
    FLAG_KEYS,
    JSON,
    NOT_A_VARIANT,
    SEMVER_OPS,
    VARIANT_SETS,
    count_operators,
    is_constant,
)
from tests.conformance.gen_rules import RuleGen

__all__ = ["OPERATORS", "SEMVER_OPS", "Corpus", "Generator", "generate", "is_constant"]

#: Operators of DESIGN §2 the corpus must exercise (checked by the test).
OPERATORS = [
    "var", "missing", "missing_some", "if", "?:", "==", "===", "!=", "!==", "!", "!!", "or",
    "and", "<", "<=", ">", ">=", "max", "min", "+", "-", "*", "/", "%", "map", "filter",
    "reduce", "all", "none", "some", "merge", "in", "cat", "substr", "fractional", "sem_ver",
    "starts_with", "ends_with", "$ref",
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


class Generator(RuleGen):
    """Targeting rules, flags and documents."""

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
