"""Helpers for the in-process OFREP tests: a real app (no sources) over a store filled with
compiled rules, a real key ring, and an httpx client on the ASGI transport."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from proxy.config import Settings
from proxy.evaluation.documents import compile_document
from proxy.keys import KeyRecord, KeyRing, generate_key, hash_key
from proxy.model import Change
from proxy.server.app import Runtime, build_runtime, create_app
from proxy.store import Store

ENV = "test"

DOC: dict[str, Any] = {
    "flags": {
        "bool-flag": {"state": "ENABLED", "variants": {"on": True, "off": False},
                      "defaultVariant": "on"},
        "string-flag": {"state": "ENABLED", "variants": {"basic": "Hello", "pro": "Welcome back"},
                        "defaultVariant": "basic",
                        "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "pro", None]}},
        "int-flag": {"state": "ENABLED", "variants": {"small": 1, "big": 100},
                     "defaultVariant": "small"},
        "float-flag": {"state": "ENABLED", "variants": {"half": 0.5, "one": 1},
                       "defaultVariant": "one"},
        "whole-float-flag": {"state": "ENABLED", "variants": {"a": 1.0, "b": 2.0},
                             "defaultVariant": "b"},
        "object-flag": {"state": "ENABLED", "variants": {"cfg": {"limit": 5}, "none": {}},
                        "defaultVariant": "cfg", "metadata": {"owner": "team-a"}},
        "disabled-flag": {"state": "DISABLED", "variants": {"on": True, "off": False},
                          "defaultVariant": "on"},
        "no-default-flag": {"state": "ENABLED", "variants": {"on": True, "off": False},
                            "defaultVariant": None},
        "split-flag": {"state": "ENABLED", "variants": {"a": "A", "b": "B"},
                       "defaultVariant": "a",
                       "targeting": {"fractional": [["a", 50], ["b", 50]]}},
        "bad-target-flag": {"state": "ENABLED", "variants": {"on": True, "off": False},
                            "defaultVariant": "off",
                            "targeting": {"if": [{"==": [{"var": "boom"}, True]}, "nope", None]}},
    },
    "metadata": {"flagSetId": "unit"},
}


def keyring_with(*kinds: str, env: str = ENV, rate_limit: float | None = None
                 ) -> tuple[KeyRing, dict[str, str]]:
    ring, raws, records = KeyRing(), {}, {}
    for kind in kinds:
        raw = generate_key(kind)
        h = hash_key(raw)
        records[h] = KeyRecord(id=h[:12], env=env, kind=kind, name=kind, created_at=time.time(),
                               rate_limit=rate_limit)
        raws[kind] = raw
    ring.replace_all(records)
    return ring, raws


def publish(store: Store, doc: dict[str, Any], version: int, env: str = ENV,
            epoch: str = "e1") -> None:
    fs = compile_document(doc, version=version, epoch=epoch, updated_at=time.time())
    store.publish(env, fs, Change(env=env, version=version, reset=True,
                                  upserted=frozenset(fs.flags), written_at=time.time()))


class App:
    def __init__(self, settings: Settings | None = None, doc: dict[str, Any] | None = DOC,
                 rate_limit: float | None = None,
                 sources: Callable[[Store], list[Any]] | None = None):
        self.settings = settings or Settings(env=ENV)
        self.store = Store()
        self.ring, self.keys = keyring_with("client", "server", "admin", rate_limit=rate_limit)
        self.runtime: Runtime = build_runtime(self.settings, self.store, self.ring)
        if sources is not None:
            self.runtime.sources = sources(self.store)
        if doc is not None:
            publish(self.store, doc, 1)
        self.app = create_app(self.settings, runtime=self.runtime,
                              start_sources=sources is not None)

    def client(self, kind: str | None = "client") -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.keys[kind]}"} if kind else {}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                 base_url="http://edge", headers=headers)
