"""The HTTP surfaces (Starlette): OFREP evaluation (``ofrep.py``, and ``fastpath.py``, its
routes without Starlette's per-request machinery), SSE streams (``streams.py``), operator
endpoints (``admin.py``), release control over HTTP (``admin_release.py``,
``admin_flags.py``, ``admin_requests.py``, ``admin_rollouts.py``, ``admin_webhooks.py``, ``admin_keys.py``, sharing
``admin_calls.py``; documented by ``openapi_admin.py``), ``health.py``, ``metrics.py``,
``openapi.py``, the demo page (``demo.py``); and what they share: ``auth.py`` (keys -> HTTP 401/403/429, rate limits),
``tokens.py`` (signed stream tokens), ``context.py`` (request bodies and contexts),
``cache.py`` and ``bulk_body.py`` (bulk results), ``errors.py``, ``transport.py``.

The surfaces receive built objects (store, key ring, fan-out, metrics) from
``proxy.server.app``; they build none of them.

Imports (DESIGN §1): "``api`` -> ``streams``, ``store``, ``evaluation``, ``keys``,
``model``, ``config``, ``release``, ``insights``; admin modules may use ``storage``; the
request path (``ofrep.py``, ``fastpath.py``, ``streams.py``, ``body.py``, ``cache.py``,
``bulk_body.py``) never does." And: "Nothing imports ``api`` but ``server`` and ``ui``."
"""
