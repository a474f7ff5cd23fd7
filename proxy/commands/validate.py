"""`flagedge validate FILE [--json]`: check a flagd flag document without serving it.

Exit codes: 0 valid (one-line summary), 1 invalid (every problem, one per line, prefixed with
the file name, then which flags a source holding the file anyway serves as errors), 2 the
file cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "validate a flagd flag-definition file (every problem, with its JSON path)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="flag document (JSON), '-' for stdin")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def summarize(flag_set: Any) -> dict[str, Any]:
    from proxy.model import FlagState

    kinds = {"boolean": 0, "string": 0, "number": 0, "object": 0}
    disabled = targeted = 0
    for flag in flag_set.flags.values():
        kinds[flag.variant_type.value] += 1
        disabled += flag.state is FlagState.DISABLED
        targeted += flag.rule is not None
    return {
        "flags": len(flag_set.flags),
        "evaluators": len(flag_set.evaluators),
        "kinds": kinds,
        "disabled": disabled,
        "targeted": targeted,
    }


def served_as(data: bytes) -> dict[str, str]:
    """Flag -> the error code ``serve`` answers for it when a source holds this file anyway
    (empty when the file cannot be served at all, or every flag is served)."""
    from proxy.evaluation.documents import compile_document, load_document
    from proxy.model import InvalidDocument

    try:
        fs = compile_document(load_document(data), tolerant=True)
    except InvalidDocument:
        return {}
    return {k: f.static_result.error_code.value for k, f in fs.flags.items()
            if f.problems and f.static_result is not None and f.static_result.error_code}


def run(args: argparse.Namespace) -> int:
    import orjson

    from proxy.evaluation.documents import compile_document, load_document, validate_document
    from proxy.model import InvalidDocument

    name = args.file
    try:
        data = sys.stdin.buffer.read() if name == "-" else open(name, "rb").read()  # noqa: SIM115
    except OSError as exc:
        print(f"flagedge validate: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        problems = validate_document(load_document(data))
    except InvalidDocument as exc:
        problems = exc.problems
    summary = None
    if not problems:
        try:
            summary = summarize(compile_document(load_document(data)))
        except InvalidDocument as exc:  # validate and compile agree; belt and braces
            problems = exc.problems
    served = served_as(data) if problems else {}
    if args.json:
        out = {
            "file": name,
            "valid": not problems,
            "problems": [{"path": p.path, "message": p.message, "warning": p.warning}
                         for p in problems],
            "summary": summary,
            "served_as_errors": served,
        }
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 1 if problems else 0
    if problems:
        for p in problems:
            print(f"{name}: {p}")
        print(f"{name}: {len(problems)} problem{'s' if len(problems) != 1 else ''}, nothing changed", file=sys.stderr)
        warned = [p.path for p in problems if p.warning]
        if warned:
            print(f"{name}: flagd answers null when it evaluates these (a source holding the file "
                  f"serves them so): {', '.join(warned[:20])}{' ...' if len(warned) > 20 else ''}",
                  file=sys.stderr)
        if served:
            listed = ", ".join(f"{k} ({code})" for k, code in sorted(served.items())[:20])
            more = " ..." if len(served) > 20 else ""
            print(f"{name}: served as a file (serve --flags, --bootstrap), every other flag is "
                  f"served and these answer their error: {listed}{more}", file=sys.stderr)
        return 1
    assert summary is not None
    kinds = ", ".join(f"{v} {k}" for k, v in summary["kinds"].items() if v)
    print(
        f"{name}: valid - {summary['flags']} flags ({kinds or 'none'}; "
        f"{summary['disabled']} disabled, {summary['targeted']} targeted), "
        f"{summary['evaluators']} evaluators"
    )
    return 0
