"""Rollout impact for ``push --dry-run``: for each flag a push touches, the share of sample
contexts whose result (variant and value) would change."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from proxy.evaluation.engine import evaluate
from proxy.evaluation.flags import compile_flag
from proxy.model import (
    DEFAULT_FRACTIONAL_HASH,
    ErrorCode,
    Flag,
    FlagSet,
    FractionalHash,
    InvalidDocument,
    canonical,
)
from proxy.release.changeset import Document, Plan

SYNTHETIC_COUNT = 10_000


def synthetic_contexts(n: int = SYNTHETIC_COUNT) -> list[dict[str, Any]]:
    return [{"targetingKey": f"user-{i}"} for i in range(n)]


def load_samples(path: Path | str) -> list[dict[str, Any]]:
    """JSON lines, one context object per line (blank lines skipped). Raises ValueError
    naming the file and line."""
    out = []
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                ctx = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON: {exc}") from None
            if not isinstance(ctx, dict):
                raise ValueError(f"{path}:{n}: each line must be a JSON object (a context)")
            out.append(ctx)
    if not out:
        raise ValueError(f"{path}: no contexts in sample file")
    return out


def _compile(doc: Document, fractional_hash: FractionalHash) -> FlagSet:
    """Compile flag by flag for the environment's hashing: a flag that does not compile
    (stored by another tool) is left out rather than failing the whole estimate."""
    flags: dict[str, Flag] = {}
    for key, raw in doc.flags.items():
        try:
            flags[key] = compile_flag(key, raw, doc.evaluators, doc.metadata, fractional_hash)
        except (InvalidDocument, Exception):
            continue
    return FlagSet(flags=flags, evaluators=doc.evaluators, metadata=doc.metadata,
                   fractional_hash=fractional_hash)


@dataclass(frozen=True, slots=True)
class Impact:
    flag: str
    total: int
    changed: int
    transitions: list[tuple[str, str, int]]  # (from, to, count), most common first

    @property
    def share(self) -> float:
        return self.changed / self.total if self.total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"flag": self.flag, "contexts": self.total, "changed": self.changed,
                "share": round(self.share, 6),
                "transitions": [{"from": a, "to": b, "count": c} for a, b, c in self.transitions]}

    def line(self) -> str:
        top = ", ".join(f"{a} -> {b}: {c}" for a, b, c in self.transitions[:3])
        return f"  {self.flag}: {self.share:.2%} of {self.total} contexts change" + (
            f" ({top})" if top else "")


def _label(result: Any) -> tuple[str, bytes]:
    if result.error_code is ErrorCode.FLAG_NOT_FOUND:
        return "(absent)", b""
    if result.error_code is not None:
        return f"error:{result.error_code.value}", b""
    if result.variant is None:
        return f"({result.reason.value.lower()})", b""
    return str(result.variant), canonical(result.value)


def rollout_impact(old: Document, new: Document, plan: Plan,
                   contexts: Iterable[Mapping[str, Any]],
                   progress: Callable[[int, int], None] | None = None,
                   fractional_hash: FractionalHash = DEFAULT_FRACTIONAL_HASH) -> list[Impact]:
    """``progress(done, total)`` is called after each flag (long estimates show progress);
    both sides are evaluated with the environment's ``fractional_hash``."""
    before, after = _compile(old, fractional_hash), _compile(new, fractional_hash)
    contexts = list(contexts)
    out = []
    # Evaluator or metadata changes can move flags the plan does not name.
    keys = set(plan.touched)
    if plan.evaluators or plan.metadata:
        keys |= set(new.flags)
    for n, key in enumerate(sorted(keys), 1):
        if progress is not None:
            progress(n, len(keys))
        counts: Counter[tuple[str, str]] = Counter()
        changed = 0
        for ctx in contexts:
            a, b = _label(evaluate(before, key, ctx)), _label(evaluate(after, key, ctx))
            if a != b:
                changed += 1
                counts[(a[0], b[0])] += 1
        if changed or key in plan.touched:
            out.append(Impact(key, len(contexts), changed,
                              [(x, y, c) for (x, y), c in counts.most_common()]))
    return out
