"""Evaluation: flagd flag-definition documents -> compiled flags; evaluate / evaluate_all /
explain.

- ``documents.py`` validates and compiles documents and flags (``$ref``, ``$evaluators``,
  metadata), and applies a change's ``after`` to a FlagSet;
- ``engine.py`` is the hot path: evaluate, evaluate_all, explain;
- ``jsonlogic/`` compiles JsonLogic rules to closures (see its own docstring).

Imports (DESIGN §1): "`evaluation` -> `model`" and nothing else from ``proxy``: sources,
the provider, streams, the API and the write side build on it, never the other way round.
"""
