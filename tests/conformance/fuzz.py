"""Adversarial JsonLogic fuzzing against the reference (a tool, not a test).

Random operator trees over every standard operator with random argument counts, literals
and paths, on random small contexts. Unlike ``generator.py`` nothing here is realistic, so
it reaches corners no flag author writes (iterating numbers, folding iterator expressions,
operators as arguments of operators that expect arrays...). Mismatches are printed, smallest
rule first; known divergences are filtered out:

- flagedge refusing a flag at load for a literal argument (README: policy differences);
- constant comparisons the reference folds and throws on at load (DESIGN §2: plain JS),
  counting a var inside an iterator body as constant as the reference does;
- `reduce` with a literal (non-object) body, which crashes the reference's optimizer;
- json-logic-engine code-generation splices (README: reference bugs).

    .venv/bin/python -m tests.conformance.fuzz [--seed N] [--docs M] [--show K]
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import orjson

from tests.conformance.compare import Mismatch, classify, compile_py, evaluate_py, js_outcome
from tests.conformance.generator import is_constant
from tests.conformance.reference import run_docs

JSON = Any
OPS = ["var", "missing", "missing_some", "if", "?:", "==", "===", "!=", "!==", "!", "!!", "or",
       "and", "<", "<=", ">", ">=", "max", "min", "+", "-", "*", "/", "%", "map", "filter",
       "reduce", "all", "none", "some", "merge", "in", "cat", "substr"]
PATHS = ["a", "b", "c", "a.x", "l", "l.0", "s", "n", "o.p", "accumulator", "current", ""]
LITERALS: list[JSON] = [0, 1, 2, -1, 0.5, "", "a", "b", "1", "0", "x", True, False, None, [],
                        [1, 2], ["a"], {}]
COMPARISONS = {"==", "===", "!=", "!==", "<", "<=", ">", ">="}
# Operators json-logic-engine compiles to a bare ?: / && / || (no parentheses).
BARE = {"or", "and", "all", "missing", "missing_some"}


class Fuzzer:
    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def expr(self, d: int) -> JSON:
        r = self.r
        if d <= 0 or r.random() < 0.3:
            return {"var": r.choice(PATHS)} if r.random() < 0.6 else r.choice(LITERALS)
        op = r.choice(OPS)
        if op == "var":
            return {"var": [r.choice(PATHS), self.expr(d - 1)]} if r.random() < 0.5 \
                else {"var": r.choice(PATHS)}
        if op == "missing":
            return {op: r.sample(["a", "b", "a.x", "c"], r.randrange(1, 3))}
        if op == "missing_some":
            return {op: [r.choice([0, 1, 2]), r.sample(["a", "b", "a.x", "c"], r.randrange(1, 3))]}
        if op in ("map", "filter", "all", "none", "some", "in", "/", "%"):
            return {op: [self.expr(d - 1), self.expr(d - 1)]}
        if op in ("reduce", "substr"):
            n = 3 if r.random() < 0.6 else 2
            return {op: [self.expr(d - 1) for _ in range(n)]}
        if op in ("!", "!!"):
            return {op: [self.expr(d - 1)]} if r.random() < 0.7 else {op: self.expr(d - 1)}
        variadic = op in ("if", "?:", "or", "and", "cat", "merge", "+", "*", "-", "max", "min")
        n = r.choice([1, 2, 2, 3, 3, 4]) if variadic else r.choice([2, 2, 3])
        return {op: [self.expr(d - 1) for _ in range(n)]}

    def value(self, d: int = 2) -> JSON:
        r = self.r
        k = r.random()
        if d > 0 and k < 0.15:
            return [self.value(d - 1) for _ in range(r.randrange(0, 3))]
        if d > 0 and k < 0.25:
            return {key: self.value(d - 1) for key in r.sample(["x", "p", "q"], r.randrange(0, 2))}
        return r.choice([0, 1, 2, -1, 0.5, "", "a", "b", "1", "0", "x", True, False, None, "10",
                         3.0])

    def document(self) -> tuple[dict[str, JSON], list[tuple[str, dict[str, JSON]]]]:
        r = self.r
        variants = {"a": "A", "b": "B", "1": "one", "true": "T", "false": "F", "0": "zero"}
        flags = {f"f{j}": {"state": "ENABLED", "variants": variants, "defaultVariant": "b",
                           "targeting": self.expr(r.randrange(1, 5))} for j in range(5)}
        contexts = []
        for _ in range(4):
            c = {k: self.value() for k in r.sample(["a", "b", "c", "l", "s", "n", "o"],
                                                   r.randrange(0, 6))}
            if "o" in c and r.random() < 0.5:
                c["o"] = {"p": self.value()}
            contexts.append(c)
        return {"flags": flags}, [(k, c) for k in flags for c in contexts]


def _has(node: JSON, pred: Any) -> bool:
    if isinstance(node, list):
        return any(_has(x, pred) for x in node)
    if isinstance(node, dict):
        return any(pred(op, a) or _has(a, pred) for op, a in node.items())
    return False


_RUNTIME = {"missing", "missing_some", "fractional", "sem_ver", "starts_with", "ends_with", "$ref"}
_ITERATORS = {"map", "filter", "reduce", "all", "none", "some"}


def folded(node: JSON, in_iterator: bool = False) -> bool:
    """json-logic-engine's isDeterministic, roughly: what it folds at load. A var inside an
    iterator body reads the element, so it counts as constant there."""
    if isinstance(node, list):
        return all(folded(x, in_iterator) for x in node)
    if isinstance(node, dict) and len(node) == 1:
        ((op, a),) = node.items()
        if op == "var":
            return in_iterator
        if op in _RUNTIME:
            return False
        if op in _ITERATORS and isinstance(a, list) and len(a) >= 2:
            # (reduce's initial value is not looked at: folded, it reads empty data)
            return folded(a[0], in_iterator) and folded(a[1], True)
        return folded(a, in_iterator)
    return True


def _folded_comparison(node: JSON, in_iterator: bool = False) -> bool:
    """Is there a comparison the reference folds at load (so a mixed-type one is PARSE_ERROR
    there, plain JS in flagedge)? Iterator bodies count their element reads as constant."""
    if isinstance(node, list):
        return any(_folded_comparison(x, in_iterator) for x in node)
    if isinstance(node, dict) and len(node) == 1:
        ((op, a),) = node.items()
        if op in COMPARISONS and folded(a, in_iterator):
            return True
        if op in _ITERATORS and isinstance(a, list) and len(a) >= 2:
            return (_folded_comparison(a[0], in_iterator) or _folded_comparison(a[1], True)
                    or _folded_comparison(a[2:], in_iterator or folded(node, in_iterator)))
        return _folded_comparison(a, in_iterator)
    return False


def known_divergence(rule: JSON, js_error: str | None) -> bool:
    if js_error == "PARSE_ERROR" and (_folded_comparison(rule) or _has(
            rule, lambda op, a: op in COMPARISONS and is_constant(a))):
        return True
    if js_error == "PARSE_ERROR" and _has(rule, lambda op, a: op == "reduce" and isinstance(a, list)
                                          and len(a) > 1 and not isinstance(a[1], dict)):
        return True  # the reference's optimizer reads mapper["+"]: a null/literal body crashes it
    # a bare ?: / && / || spliced into a larger expression: cat's '+', var's '??' default,
    # an iterator's '(x || [])', ...
    return _has(rule, lambda op, a: isinstance(a, list) and any(
        isinstance(x, dict) and set(x) & BARE for x in a) and op not in ("if", "?:", "or", "and"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--docs", type=int, default=1500)
    ap.add_argument("--show", type=int, default=15)
    args = ap.parse_args()
    from proxy.evaluation.documents import compile_document
    from proxy.evaluation.engine import evaluate

    fz = Fuzzer(args.seed)
    docs = [fz.document() for _ in range(args.docs)]
    replies = run_docs(docs)
    compared = filtered = 0
    found: list[Mismatch] = []
    for (doc, cases), reply in zip(docs, replies, strict=True):
        if "load_error" in reply:
            continue
        pydoc = compile_py(doc, compile_document)
        for (key, ctx), raw in zip(cases, reply["results"], strict=True):
            compared += 1
            js, _ = js_outcome(raw)
            py = evaluate_py(pydoc, key, ctx, evaluate)
            if classify(raw, js, key, pydoc, py) != "mismatch":
                continue
            rule = doc["flags"][key]["targeting"]
            if "refused at load" in py.note or known_divergence(rule, js.error_code):
                filtered += 1
                continue
            found.append(Mismatch(doc, key, ctx, js, py, raw))
    print(f"{compared} cases, {len(found)} mismatches, {filtered} known divergences filtered")
    seen: set[bytes] = set()
    for m in sorted(found, key=lambda m: len(orjson.dumps(m.doc["flags"][m.key]["targeting"]))):
        rule = orjson.dumps(m.doc["flags"][m.key]["targeting"])
        if rule in seen:
            continue
        seen.add(rule)
        print(f"{rule.decode()} {orjson.dumps(m.context).decode()}\n"
              f"    reference {m.js.brief()}  flagedge {m.py.brief()}")
        if len(seen) >= args.show:
            break
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
