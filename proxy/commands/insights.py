"""flagedge insights flags|stale --env ENV: what flags did, from the counts every proxy
writes to Redis (DESIGN §11)."""

from __future__ import annotations

import argparse
import re
import time

from proxy.commands import _common as c

HELP = "exposures per flag and variant, unique users, stale flags (DESIGN §11)"
DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def duration(value: str) -> float:
    """``30s``, ``5m``, ``24h``, ``30d`` -> seconds (an argparse type)."""
    m = DURATION.match(value.strip())
    if m is None or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration like 30s, 5m, 24h or 30d")
    return int(m.group(1)) * UNITS[m.group(2)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    flags = sub.add_parser("flags", help="exposures per flag and variant over a window")
    flags.add_argument("--since", type=duration, default=86_400, metavar="DURATION",
                       help="window ending now (default 24h; over 48h whole UTC days are read)")
    stale = sub.add_parser("stale", help="flags unused, or serving one variant to everyone")
    stale.add_argument("--unused", type=duration, default=30 * 86_400, metavar="DURATION",
                       help="window ending now (default 30d)")
    for p in (flags, stale):
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
    end = time.time()
    if args.what == "flags":
        out = usage.flags_report(client, args.env, flags, end - args.since, end)
        return _show_flags(out, args.json)
    out = usage.stale_report(client, args.env, flags, end - args.unused, end)
    return _show_stale(out, args.json)


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
