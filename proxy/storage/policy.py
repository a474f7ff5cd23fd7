"""An environment's release policy (DESIGN §10): ``flagedge:{ENV}:policy`` HASH
``approvals`` (N, 0 = none) and ``approvers`` (a JSON list of names; absent = anyone holding
the ``approve`` role). The apply script (``storage/requests.py``) reads the same two fields
at apply time, so a policy changed while a request waits applies to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from proxy.storage import layout
from proxy.storage.replies import text


def policy_key(env: str) -> str:
    return f"{layout.PREFIX}:{{{env}}}:policy"


@dataclass(frozen=True, slots=True)
class Policy:
    approvals: int = 0  # approvals a change needs; 0: the environment is not protected
    approvers: tuple[str, ...] = ()  # when set, only these names may approve

    @property
    def protected(self) -> bool:
        return self.approvals > 0

    def to_json(self) -> dict[str, Any]:
        return {"protected": self.protected, "approvals": self.approvals,
                "approvers": list(self.approvers)}


def parse(fields: dict[Any, Any]) -> Policy:
    """The HASH as stored -> Policy. A value another tool broke reads as the strictest
    reading we can give it: an unreadable count protects with 1 approval (never silently
    unprotects), unreadable approvers allow nobody but the names we can read (none)."""
    f = {text(k): text(v) for k, v in fields.items()}
    raw_n = f.get("approvals", "0")
    approvals = int(raw_n) if raw_n.isdigit() else 1
    try:
        names = orjson.loads(f["approvers"]) if "approvers" in f else []
    except orjson.JSONDecodeError:
        names = []
    approvers = tuple(n for n in names if isinstance(n, str)) if isinstance(names, list) else ()
    return Policy(approvals, approvers)


def read(client: Any, env: str) -> Policy:
    layout.check_env(env)
    return parse(client.hgetall(policy_key(env)))


def write(client: Any, env: str, policy: Policy) -> None:
    """Replace the policy (one MULTI: the count and the list change together)."""
    layout.check_env(env)
    key = policy_key(env)
    pipe = client.pipeline(transaction=True)
    pipe.delete(key)
    if policy.protected:
        pipe.hset(key, "approvals", str(policy.approvals))
        if policy.approvers:
            pipe.hset(key, "approvers", orjson.dumps(list(policy.approvers)))
    pipe.execute()
