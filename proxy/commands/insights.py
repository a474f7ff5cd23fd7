"""flagedge insights flags|stale|experiment --env ENV: what flags did, from the counts every
proxy writes to Redis (DESIGN §11)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from proxy.commands import _common as c

HELP = "exposures per flag and variant, unique users, stale flags, experiment results (DESIGN §11)"
def duration(value: str) -> float:
    """``30s``, ``5m``, ``24h``, ``30d`` -> seconds (an argparse type)."""
    from proxy.release.times import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    flags = sub.add_parser("flags", help="exposures per flag and variant over a window")
    flags.add_argument("--since", type=duration, default=86_400, metavar="DURATION",
                       help="window ending now (default 24h; over 48h whole UTC days are read)")
    stale = sub.add_parser("stale", help="flags unused, or serving one variant to everyone")
    stale.add_argument("--unused", type=duration, default=30 * 86_400, metavar="DURATION",
                       help="window ending now (default 30d)")
    exp = sub.add_parser("experiment", help="an experiment's results for one tracked event")
    exp.add_argument("flag", metavar="KEY", help="the experiment flag")
    exp.add_argument("--event", required=True, metavar="NAME", help="the tracked event")
    for p in (flags, stale, exp):
        c.add_env_argument(p)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        c.add_redis_arguments(p)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.insights import usage
    from proxy.release import publisher

    client = c.client(args)
    state = publisher.read_state(client, args.env)
    if not state.exists:
        c.err(f"environment {args.env!r} not found")
        return c.NOT_FOUND
    flags = sorted(state.raw_flags)
    if args.what == "experiment":
        return _experiment(client, args, state)
    end = time.time()
    if args.what == "flags":
        out = usage.flags_report(client, args.env, flags, end - args.since, end)
        return _show_flags(out, args.json)
    out = usage.stale_report(client, args.env, flags, end - args.unused, end)
    return _show_stale(out, args.json)


def _experiment(client: Any, args: argparse.Namespace, state: Any) -> int:
    from proxy.insights import usage

    doc = state.document().to_json()
    doc.pop("$fractionalHash", None)  # the environment's setting decides, as served
    try:
        out = usage.experiment_result(client, args.env, args.flag, args.event, doc,
                                      state.meta.get("fractional_hash", "v2"))
    except usage.NotAnExperiment as exc:
        c.err(str(exc))
        return c.NOT_FOUND if "not found" in str(exc) else c.INVALID
    if args.json:
        c.print_json(out)
        return c.OK
    print(f"experiment {out['flag']} (revision {out['revision']}), event {out['event']!r}, "
          f"control {out['control']!r}")
    print(f"{'VARIANT':16}  {'ASSIGNED':>9}  {'CONVERTED':>9}  {'RATE (95% CI)':24}  "
          "DIFF vs CONTROL (95% CI)        p (Holm)")
    for v in out["variants"]:
        rate = "-" if v["rate"] is None else \
            f"{v['rate']:.2%} ({v['ci'][0]:.2%}-{v['ci'][1]:.2%})"
        diff = "" if v["diff"] is None else \
            f"{v['diff']:+.2%} ({v['diff_ci'][0]:+.2%} to {v['diff_ci'][1]:+.2%})"
        p = "" if v["p_value"] is None else f"{v['p_value']:.3g} ({v['test']})"
        print(f"{v['variant'][:16]:16}  {v['assigned']:>9}  {v['converted']:>9}  {rate:24}  "
              f"{diff:30}  {p}")
    if out["srm"]["warning"]:
        print(f"WARNING: {out['srm']['warning']}")
    for note in out["notes"]:
        print(f"note: {note}")
    return c.OK


def _show_flags(out: dict, as_json: bool) -> int:
    if as_json:
        c.print_json(out)
        return c.OK
    print(f"environment {out['env']}: ~{out['unique_users']} unique users; usage {out['usage']}")
    print(f"{'FLAG':32}  {'EXPOSURES':>10}  {'LAST EVALUATED (UTC)':20}  VARIANTS")
    for row in out["flags"]:
        total = sum(v["exposures"] for v in row["variants"])
        last = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["last_evaluated"]))
                if row["last_evaluated"] else "never")
        shares = ", ".join(f"{v['variant'] or '(none)'} {v['exposures']}"
                           for v in row["variants"][:4])
        print(f"{row['flag'][:32]:32}  {total:>10}  {last:20}  {shares}")
    return c.OK


def _show_stale(out: dict, as_json: bool) -> int:
    if as_json:
        c.print_json(out)
        return c.OK
    if out["usage"] != "complete":
        print("note: some keys evaluate in-process and report nothing: usage is partly unknown")
    if not out["flags"]:
        print(f"no stale flags in {out['env']}")
    for row in out["flags"]:
        print(f"{row['flag']}: {row['reason']}")
    return c.OK
