"""flagedge: an edge flag-evaluation proxy. Rules live in Redis; flagedge keeps them in
memory, evaluates them for clients over OFREP and pushes changes over SSE (DESIGN.md).

One concept per folder, data flowing one way (DESIGN §1, "Import rules, bottom up"):

- ``model``, ``config``, ``keys``: typed records, settings, API keys; they import nothing
  from ``proxy`` but ``model``.
- ``evaluation`` (documents -> compiled flags -> results) and ``store`` (versioned
  per-environment snapshots) import only ``model``; ``storage`` (the Redis layout) imports
  ``model`` and ``keys``.
- ``sources`` keep the store current (Redis, file); ``release`` is the write side;
  ``streams`` is the SSE fan-out; ``api`` the HTTP surfaces; ``provider`` the in-process
  OpenFeature provider (``from proxy.provider import FlagedgeProvider``).
- ``server`` builds and wires all of it; ``commands`` (one module per CLI command, behind
  ``cli.py`` and ``__main__.py``) run it; ``dev`` is ``make run``.

A unit test (``tests/unit/test_layers.py``) fails on an import that breaks these rules.
"""
