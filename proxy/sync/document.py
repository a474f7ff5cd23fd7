"""The flagd document a sync stream carries for one environment (DESIGN §9).

What real providers need, each point one that breaks one of them when done otherwise:
- every ``{"$ref": name}`` inlined (recursively) and ``$evaluators`` dropped: providers
  inline one level only;
- each flag stripped to ``state``, ``variants``, ``defaultVariant``, ``targeting``,
  ``metadata``: the Python provider rejects a whole document over one unknown field;
- flag-set ``metadata`` with ``scope: ENV`` (unless the document sets ``scope``): the JS
  provider otherwise copies its selector, which may hold the API key, into every flag's
  ``scope``; and no version: JS hashes set metadata into every flag's change detection;
- a flag flagedge serves as an error (an invalid definition a source held anyway) is left
  out: a provider would refuse the whole document over it (it answers FLAG_NOT_FOUND
  where OFREP answers the flag's PARSE_ERROR/GENERAL; either way the caller's default).

The text is canonical (sorted keys, compact), so equal rules give byte-equal documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from proxy.model import JSON, Flag, FlagSet

FLAG_FIELDS = ("state", "variants", "defaultVariant", "targeting", "metadata")


class UnresolvableRef(ValueError):
    """A ``$ref`` names no evaluator, or evaluators refer to each other in a cycle."""


def inline_refs(node: JSON, evaluators: Mapping[str, JSON],
                stack: tuple[str, ...] = ()) -> JSON:
    """``node`` with every ``{"$ref": name}`` replaced by ``evaluators[name]``, inlined too."""
    if node.__class__ is dict:
        if len(node) == 1 and "$ref" in node:
            name = node["$ref"]
            if name.__class__ is not str or name not in evaluators:
                raise UnresolvableRef(f"unknown $ref {name!r}")
            if name in stack:
                raise UnresolvableRef(f"cyclic $ref {name!r}")
            return inline_refs(evaluators[name], evaluators, (*stack, name))
        return {k: inline_refs(v, evaluators, stack) for k, v in node.items()}
    if node.__class__ is list:
        return [inline_refs(v, evaluators, stack) for v in node]
    return node


def servable(flag: Flag) -> bool:
    """Is ``flag`` served as written (warnings allowed), not as an invalid definition's error?"""
    return not any(not p.warning for p in flag.problems)


def stripped_flag(flag: Flag, evaluators: Mapping[str, JSON]) -> dict[str, JSON] | None:
    """The flag's five fields with its targeting's $refs inlined; None when it cannot be
    sent (served as an error, or its $refs do not resolve)."""
    if not servable(flag):
        return None
    raw = flag.raw
    out = {name: raw[name] for name in FLAG_FIELDS if name in raw}
    targeting = out.get("targeting")
    if targeting is not None:
        try:
            out["targeting"] = inline_refs(targeting, evaluators)
        except (UnresolvableRef, RecursionError):
            return None
    return out


#: id(Flag) -> (the Flag, its stripped form): a new FlagSet keeps the Flag objects a change
#: did not touch, so a render re-shapes only the changed flags (holding the Flag keeps its id
#: from being reused; the caller keeps one memo per environment and :func:`render` prunes it).
ShapeMemo = dict[int, tuple[Flag, dict[str, JSON] | None]]


def sync_document(flag_set: FlagSet, env: str, memo: ShapeMemo | None = None
                  ) -> dict[str, Any]:
    """The document for ``env``'s rules (a dict; :func:`render` gives its text)."""
    flags = {}
    for key in sorted(flag_set.flags):
        flag = flag_set.flags[key]
        known = memo.get(id(flag)) if memo is not None else None
        if known is not None and known[0] is flag:
            shaped = known[1]
        else:
            shaped = stripped_flag(flag, flag_set.evaluators)
            if memo is not None:
                memo[id(flag)] = (flag, shaped)
        if shaped is not None:
            flags[key] = shaped
    metadata = dict(flag_set.metadata)
    metadata.setdefault("scope", env)
    return {"flags": flags, "metadata": metadata}


def render(flag_set: FlagSet, env: str, memo: ShapeMemo | None = None) -> str:
    """The document's canonical text (sorted keys, compact UTF-8). With ``memo`` (one per
    environment), flags shaped for an earlier render are reused and the rest forgotten."""
    doc = sync_document(flag_set, env, memo)
    if memo is not None and len(memo) > len(flag_set.flags):
        live = {id(f) for f in flag_set.flags.values()}
        for stale in [k for k in memo if k not in live]:
            del memo[stale]
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()
