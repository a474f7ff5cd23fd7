"""flagedge push FILE --env ENV: validate, show the diff, write the changes atomically."""

from __future__ import annotations

import argparse
import sys

from proxy.commands import _common as c

HELP = "validate a flag file, show the diff and push the changes to Redis atomically"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="flagd flag-definition JSON (- for stdin)")
    c.add_env_argument(parser)
    parser.add_argument("--expect-version", type=int, metavar="N",
                        help="fail (exit 3) unless the environment is at version N")
    parser.add_argument("--message", "-m", default="", help="change description (audit log)")
    parser.add_argument("--author", default=None, help="who pushes (default: $FLAGEDGE_AUTHOR "
                        "or the login name)")
    parser.add_argument("--dry-run", action="store_true",
                        help="change nothing; print the diff and the rollout impact")
    parser.add_argument("--sample", metavar="FILE", help="contexts for the rollout impact "
                        "(JSON lines); default 10,000 synthetic targeting keys")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_write_arguments(parser)


def _progress(done: int, total: int) -> None:
    sys.stderr.write(f"\rrollout impact: flag {done}/{total}")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.release import publisher
    from proxy.release.changeset import describe
    from proxy.storage.layout import check_env

    check_env(args.env)
    new = publisher.parse_file(args.file)
    samples = None
    if args.dry_run and args.sample:
        from proxy.release.preview import load_samples

        samples = load_samples(args.sample)
    client = c.client(args)
    state, plan = publisher.diff(client, args.env, new)
    out: dict = {"env": args.env, "base_version": state.version, "diff": plan.to_json()}
    if not args.json:
        print(f"environment {args.env} at version {state.version}"
              + ("" if state.exists else " (new environment)"))
        print("\n".join(describe(plan, args.env)))
    if args.expect_version is not None and state.version != args.expect_version:
        raise publisher.ConflictError(args.env, args.expect_version, state.version)
    if args.dry_run:
        if not plan.empty:
            from proxy.release.preview import rollout_impact, synthetic_contexts

            contexts = samples if samples is not None else synthetic_contexts()
            impacts = rollout_impact(state.document(), new, plan, contexts,
                                     progress=_progress if sys.stderr.isatty() else None,
                                     fractional_hash=state.fractional_hash)
            if sys.stderr.isatty():
                sys.stderr.write("\r\033[K")
            out["impact"] = [i.to_json() for i in impacts]
            if not args.json:
                kind = f"contexts from {args.sample}" if samples else "synthetic targeting keys"
                print(f"rollout impact over {len(contexts)} {kind}:")
                print("\n".join(i.line() for i in impacts) or "  no results change")
        out["dry_run"] = True
        if args.json:
            c.print_json(out)
        else:
            print("dry run: nothing written")
        return c.OK
    guard = c.release_guard(args, client)
    result = publisher.write(client, args.env, plan, expect_version=args.expect_version,
                             author=args.author or c.default_author(), message=args.message,
                             guard=guard)
    out.update(status=result.status, version=result.version, epoch=result.epoch)
    if args.json:
        c.print_json(out)
    elif result.status == "noop":
        print(f"nothing to push: {args.env} stays at version {result.version}")
    else:
        n = len(plan.added), len(plan.changed), len(plan.removed)
        print(f"pushed {args.env} version {result.version}: {n[0]} added, {n[1]} changed, "
              f"{n[2]} removed")
    if result.status == "ok":
        c.wait_replicas(args, client)
    return c.OK
