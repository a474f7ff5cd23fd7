"""Evaluation: flagd flag-definition documents -> compiled flags; evaluate / evaluate_all /
explain.

- ``documents.py`` validates and compiles whole documents (``$evaluators``, set metadata,
  the hashing generation), and applies a change's ``after`` to a FlagSet;
- ``flags.py`` validates and compiles one flag (variants, metadata, targeting with ``$ref``
  inlined) and precomputes the results it can produce;
- ``plan.py`` evaluates a flag set in bulk (groups memoised on what they read);
- ``engine.py`` is the hot path: evaluate, evaluate_all, explain;
- ``jsonlogic/`` compiles JsonLogic rules to closures (see its own docstring).

Imports (DESIGN §1): "`evaluation` -> `model`" and nothing else from ``proxy``: sources,
the provider, streams, the API and the write side build on it, never the other way round.
"""
