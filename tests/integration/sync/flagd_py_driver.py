"""Runs inside a venv holding one pinned ``openfeature-provider-flagd`` (never flagedge's
venv: its versions may conflict): the provider in in-process mode against a flagedge sync
port, driven by JSON lines on stdin, answering JSON lines on stdout.

Out: ``{"event": NAME, "flags_changed": [...]}`` for each provider event,
``{"event": "log", "message": ...}`` for the provider's own log records (its stream errors
and reconnects are logged at debug), ``{"id": N, "results": [...]}`` per command.
In: ``{"id": N, "evals": [{"type", "flag", "default", "context"}]}``.

Usage: python flagd_py_driver.py HOST PORT PROVIDER_ID [SELECTOR]
"""

import json
import logging
import sys
import threading
import time

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent

OUT = threading.Lock()


def emit(obj):
    line = json.dumps(obj, default=str)
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Forward(logging.Handler):
    def emit(self, record):
        emit({"event": "log", "message": record.getMessage()})


def on(event):
    def handle(details):
        emit({"event": event.value, "flags_changed": sorted(details.flags_changed or []),
              "at": time.time()})
    return handle


def evaluate(client, item):
    kind = item["type"]
    method = {"boolean": client.get_boolean_details, "string": client.get_string_details,
              "integer": client.get_integer_details, "float": client.get_float_details,
              "object": client.get_object_details}[kind]
    ctx = dict(item.get("context") or {})
    key = ctx.pop("targetingKey", None)
    details = method(item["flag"], item["default"], EvaluationContext(key, ctx))
    return {"value": details.value, "variant": details.variant,
            "reason": str(details.reason.value if hasattr(details.reason, "value")
                          else details.reason),
            "error_code": details.error_code.value if details.error_code else None}


def main():
    host, port, provider_id = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    selector = sys.argv[4] if len(sys.argv) > 4 else None
    logger = logging.getLogger("openfeature")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Forward())
    for event in ProviderEvent:
        api.add_handler(event, on(event))
    provider = FlagdProvider(
        resolver_type=ResolverType.IN_PROCESS, host=host, port=port,
        provider_id=provider_id or None, selector=selector, deadline_ms=2000,
        retry_backoff_ms=200, retry_backoff_max_ms=500, retry_grace_period=30)
    try:
        api.set_provider_and_wait(provider)  # READY, or why not (the provider retries on)
        emit({"event": "started"})
    except Exception as exc:
        emit({"event": "init_error", "message": f"{type(exc).__name__}: {exc}"})
    client = api.get_client()
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        emit({"id": command["id"], "results": [evaluate(client, i) for i in command["evals"]]})
    api.shutdown()


if __name__ == "__main__":
    main()
