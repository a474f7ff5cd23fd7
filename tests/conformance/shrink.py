"""Shrink a mismatch to a smaller one of the same kind (greedy, one batch per round).

Each round builds every one-step-smaller candidate (drop a context attribute, replace a rule
node by one of its arguments, drop an argument), runs all of them through both engines in one
node process, and keeps the first that still differs in the same way.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from typing import Any

from tests.conformance.compare import Mismatch, classify, compile_py, evaluate_py, js_outcome
from tests.conformance.reference import run_reference

JSON = Any


def _paths(node: JSON, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], JSON]]:
    yield path, node
    if isinstance(node, dict):
        for op, args in node.items():
            yield from _paths(args, (*path, op))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _paths(item, (*path, i))


def _replace(root: JSON, path: tuple[Any, ...], new: JSON) -> JSON:
    if not path:
        return new
    root = copy.deepcopy(root)
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return root


def _smaller_rules(rule: JSON) -> Iterator[JSON]:
    for path, node in _paths(rule):
        if isinstance(node, dict) and len(node) == 1:
            (op, args), = node.items()
            if op in ("var", "$ref"):
                continue
            for arg in args if isinstance(args, list) else [args]:
                if arg is not None and not isinstance(arg, list):
                    yield _replace(rule, path, arg)
        if isinstance(node, list) and len(node) > 1 and path and not isinstance(path[-1], int):
            for i in range(len(node)):
                yield _replace(rule, path, node[:i] + node[i + 1:])


def _smaller_contexts(ctx: dict[str, JSON]) -> Iterator[dict[str, JSON]]:
    for k in ctx:
        yield {kk: vv for kk, vv in ctx.items() if kk != k}
    for k, val in ctx.items():
        if isinstance(val, dict):
            for kk in val:
                yield {**ctx, k: {a: b for a, b in val.items() if a != kk}}
        if isinstance(val, list) and val:
            yield {**ctx, k: val[:-1]}


def shrink(m: Mismatch, compile_document: Callable[..., Any], evaluate: Callable[..., Any],
           *, budget_s: float = 15.0, max_rounds: int = 40) -> Mismatch:
    deadline = time.monotonic() + budget_s
    best = Mismatch(m.repro_doc(), m.key, m.context, m.js, m.py, m.js_raw)
    sig = m.signature()
    for _ in range(max_rounds):
        if time.monotonic() > deadline:
            break
        flag = best.doc["flags"].get(best.key)
        candidates: list[tuple[dict[str, JSON], dict[str, JSON]]] = []
        for ctx in _smaller_contexts(dict(best.context)):
            candidates.append((best.doc, ctx))
        if flag is not None and isinstance(flag.get("targeting"), dict):
            for rule in _smaller_rules(flag["targeting"]):
                if not isinstance(rule, dict) or not rule:
                    continue  # keep a rule at the root: a bare literal is another problem
                doc = copy.deepcopy(best.doc)
                doc["flags"][best.key]["targeting"] = rule
                candidates.append((doc, dict(best.context)))
        if not candidates:
            break
        requests = [{"id": i, "doc": d, "cases": [{"key": best.key, "context": c}]}
                    for i, (d, c) in enumerate(candidates)]
        try:
            replies = run_reference(requests)
        except Exception:  # shrinking is best effort: the unshrunk repro is still shown
            break
        found = None
        for (doc, ctx), reply in zip(candidates, replies, strict=True):
            if "load_error" in reply:
                continue
            raw = reply["results"][0]
            js, _ = js_outcome(raw)
            pydoc = compile_py(doc, compile_document)
            py = evaluate_py(pydoc, best.key, ctx, evaluate)
            cand = Mismatch(doc, best.key, ctx, js, py, raw)
            if classify(raw, js, best.key, pydoc, py) == "mismatch" and cand.signature() == sig:
                found = cand
                break
        if found is None:
            break
        best = Mismatch(found.repro_doc(), found.key, found.context, found.js, found.py,
                        found.js_raw)
    return best
