"""Run the generated conformance comparison by hand and print the mismatch report.

    .venv/bin/python -m tests.conformance.run [--seed N] [--docs M] [--examples K] [--shrink]
"""

from __future__ import annotations

import argparse
import time

from tests.conformance.compare import compare_docs
from tests.conformance.generator import generate
from tests.conformance.reference import run_docs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--examples", type=int, default=2)
    ap.add_argument("--shrink", action="store_true")
    args = ap.parse_args()
    from proxy.evaluation.documents import compile_document
    from proxy.evaluation.engine import evaluate

    started = time.monotonic()
    gen = generate(args.seed, args.docs)
    docs = [(d.doc, [(c.key, c.context) for c in d.cases]) for d in gen.docs]
    replies = run_docs(docs)
    t_ref = time.monotonic() - started
    report = compare_docs(docs, replies, compile_document, evaluate)
    print(f"{len(docs)} documents, {report.flags} flags, {report.compared} cases; reference "
          f"threw {report.js_threw} (plain-JS comparison used {report.plain_js}); "
          f"{time.monotonic() - started:.1f}s (reference side {t_ref:.1f}s)")
    print(dict(report.outcomes))
    print(f"refused at load by both: {report.refused_both} cases; refused by flagedge as "
          f"always naming no variant: {report.refused_always_error} cases; documents with an "
          f"unused invalid evaluator: {report.unused_bad_evaluators}")
    if report.mismatches:
        shrinker = None
        if args.shrink:
            from tests.conformance.shrink import shrink

            def shrinker(m):  # type: ignore[no-untyped-def]
                return shrink(m, compile_document, evaluate)
        print(report.render(args.examples, shrink=shrinker))
        return 1
    print("no mismatches")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
