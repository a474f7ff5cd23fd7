"""A small Gherkin reader for the vendored flagd-testbed features: Feature (tags,
Background), Scenario and Scenario Outline with tagged Examples blocks, data tables (doc
strings are skipped). That is
all the testbed uses; anything else raises, so a new construct in a newer release is noticed
instead of skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

STEP_KEYWORDS = ("Given", "When", "Then", "And", "But")


@dataclass(frozen=True)
class Step:
    text: str
    table: tuple[tuple[str, ...], ...] = ()  # data table rows, header first


@dataclass(frozen=True)
class Scenario:
    feature: str  # file stem relative to the vendor folder, e.g. "gherkin/targeting"
    name: str
    tags: frozenset[str]  # feature + scenario + examples tags
    steps: tuple[Step, ...]  # background first, placeholders substituted
    row: int | None = None  # 1-based example row (None: a plain Scenario)

    @property
    def id(self) -> str:
        suffix = "" if self.row is None else f"[{self.row}]"
        return f"{self.feature}:{self.name}{suffix}"


@dataclass
class _Outline:
    name: str
    tags: set[str]
    steps: list[tuple[str, list[tuple[str, ...]]]] = field(default_factory=list)
    examples: list[tuple[set[str], list[tuple[str, ...]]]] = field(default_factory=list)
    outline: bool = False


def _cells(line: str) -> tuple[str, ...]:
    """Cells of a ``| a | b |`` row (Gherkin escapes: ``\\|``, ``\\n``, ``\\\\``)."""
    body = line.strip()[1:-1]
    cells, cur, i = [], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in "|n\\":
            nxt = body[i + 1]
            cur.append({"|": "|", "n": "\n", "\\": "\\"}[nxt])
            i += 2
            continue
        if ch == "|":
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    cells.append("".join(cur).strip())
    return tuple(cells)


def _tags(line: str) -> set[str]:
    return {t for t in line.split() if t.startswith("@")}


def parse(path: Path, name: str) -> list[Scenario]:
    """Every scenario of one feature file, outlines expanded row by row."""
    feature_tags: set[str] = set()
    pending: set[str] = set()
    background: list[tuple[str, list[tuple[str, ...]]]] = []
    blocks: list[_Outline] = []
    current: list[tuple[str, list[tuple[str, ...]]]] | None = None
    table_target: list[tuple[str, ...]] | None = None
    in_doc_string = False
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith('"""'):  # doc strings: only config.feature has them (not run)
            in_doc_string = not in_doc_string
            continue
        if in_doc_string or not line or line.startswith("#"):
            continue
        if line.startswith("|"):
            if table_target is None:
                raise ValueError(f"{path}: table outside a step or Examples: {raw!r}")
            table_target.append(_cells(line))
            continue
        table_target = None
        if line.startswith("@"):
            pending |= _tags(line)
        elif line.startswith("Feature:"):
            feature_tags, pending = pending, set()
        elif line.startswith("Background:"):
            current = background
        elif line.startswith(("Scenario Outline:", "Scenario Template:", "Scenario:")):
            title = line.split(":", 1)[1].strip()
            blocks.append(_Outline(title, pending, outline="Outline" in line or "Template" in line))
            pending = set()
            current = blocks[-1].steps
        elif line.startswith(("Examples:", "Scenarios:")):
            rows: list[tuple[str, ...]] = []
            blocks[-1].examples.append((pending, rows))
            pending = set()
            table_target = rows
        elif line.split(" ", 1)[0] in STEP_KEYWORDS:
            if current is None:
                raise ValueError(f"{path}: step outside a scenario: {raw!r}")
            table_target = []
            current.append((line.split(" ", 1)[1], table_target))
        else:
            raise ValueError(f"{path}: unsupported Gherkin line: {raw!r}")
    return [s for b in blocks for s in _expand(name, feature_tags, background, b)]


def _substitute(step: Step, values: dict[str, str]) -> Step:
    def sub(text: str) -> str:
        return re.sub(r"<([^<>]+)>", lambda m: values.get(m.group(1), m.group(0)), text)

    return Step(sub(step.text), tuple(tuple(sub(c) for c in row) for row in step.table))


def _expand(name: str, feature_tags: set[str],
            background: list[tuple[str, list[tuple[str, ...]]]], block: _Outline
            ) -> list[Scenario]:
    steps = [Step(text, tuple(rows)) for text, rows in (*background, *block.steps)]
    tags = feature_tags | block.tags
    if not block.outline:
        return [Scenario(name, block.name, frozenset(tags), tuple(steps))]
    out = []
    row = 0
    for ex_tags, rows in block.examples:
        header, *body = rows
        for cells in body:
            row += 1
            values = dict(zip(header, cells, strict=True))
            out.append(Scenario(name, block.name, frozenset(tags | ex_tags),
                                tuple(_substitute(s, values) for s in steps), row))
    return out
