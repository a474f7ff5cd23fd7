"""flagedge keys create|list|revoke|export. Redis keeps only sha256 of each key."""

from __future__ import annotations

import argparse
import os
import sys
import time

from proxy.commands import _common as c
from proxy.keys import KINDS, ROLES, KeyRecord

HELP = "manage API keys (create prints the key once; Redis stores only its hash)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("create", help="create a key and print it once")
    c.add_env_argument(p)
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--name", required=True, help="who or what uses the key")
    p.add_argument("--rate-limit", type=float, metavar="RPS",
                   help="requests per second allowed (per proxy worker)")
    p.add_argument("--roles", metavar="ROLE,...", default=None,
                   help=f"admin keys: comma-separated roles ({', '.join(ROLES)}); "
                        "default every role")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_wait_arguments(p)
    c.add_redis_arguments(p)
    p = sub.add_parser("list", help="list keys (ids and names, never secrets)")
    p.add_argument("--env", default=None, help="only this environment")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_redis_arguments(p)
    p = sub.add_parser("revoke", help="revoke a key by id (takes effect on every proxy)")
    p.add_argument("id", metavar="ID", help="key id (12 hex, from keys list) or full hash")
    c.add_wait_arguments(p)
    c.add_redis_arguments(p)
    p = sub.add_parser("export", help="key hashes for `serve --keys FILE`")
    p.add_argument("--env", default=None, help="only this environment")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE, not stdout")
    c.add_redis_arguments(p)


def run(args: argparse.Namespace) -> int:
    return c.guarded(args, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from proxy.storage import keys as stored_keys

    client = c.client(args)
    if args.action == "create":
        if args.rate_limit is not None and args.rate_limit <= 0:
            raise ValueError("--rate-limit must be a positive number")
        from proxy.keys import parse_roles

        roles = parse_roles(args.roles) if args.roles is not None else None
        api_key, rec = stored_keys.create(client, args.env, args.kind, args.name, args.rate_limit,
                                          roles=roles)
        if args.json:
            c.print_json({"key": api_key, "id": rec.id, **rec.to_json()})
        else:
            print(api_key)
            print(f"created {rec.kind} key {rec.id} for {rec.env} ({rec.name}); "
                  "store it now: it is not shown again", file=sys.stderr)
        c.wait_replicas(args, client)  # after printing: the key exists either way
        return c.OK
    if args.action == "list":
        records = stored_keys.list_keys(client, args.env)
        rows = sorted(records.values(), key=lambda r: (r.env, r.kind, r.name))
        if args.json:
            c.print_json([{"id": r.id, **r.to_json(), "roles": _roles(r)} for r in rows])
        elif not rows:
            print("no keys")
        else:
            print(f"{'ID':12}  {'ENV':16}  {'KIND':6}  {'CREATED (UTC)':19}  {'RPS':>6}  "
                  f"{'NAME':16}  ROLES")
            for r in rows:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created_at))
                rps = f"{r.rate_limit:g}" if r.rate_limit else "-"
                roles = ",".join(_roles(r)) or "-"
                print(f"{r.id:12}  {r.env:16}  {r.kind:6}  {when:19}  {rps:>6}  {r.name:16}  "
                      f"{roles}")
        return c.OK
    if args.action == "revoke":
        rec = stored_keys.revoke(client, args.id)
        print(f"revoked {rec.kind} key {rec.id} for {rec.env} ({rec.name})")
        c.wait_replicas(args, client)
        return c.OK
    data = stored_keys.export(client, args.env)
    if args.output:
        _write_private(args.output, data)
    else:
        sys.stdout.buffer.write(data)
    return c.OK


def _roles(record: KeyRecord) -> list[str]:
    """The roles a key holds, in ROLES order (an admin key created without --roles: all)."""
    return [role for role in ROLES if role in record.effective_roles]


def _write_private(path: str, data: bytes) -> None:
    """Key hashes are not keys, but they name every key and its kind, env and rate limit:
    the file is created 0600 (never world-readable for a moment, as a chmod after writing
    would leave it). An existing file is truncated; its mode is tightened too."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)
