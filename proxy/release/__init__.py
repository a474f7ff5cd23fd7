"""The write side: ``publisher.py`` (read, validate, diff, atomic push, history, rollback),
``changeset.py`` (what a push would change: the plan, pure data), ``preview.py`` (the
dry-run impact of a push on sample contexts). Used by the CLI commands; later also by the
admin API and the UI (requests, approvals, schedules, rollouts: DESIGN §10).

Imports (DESIGN §1): "``release`` -> ``evaluation``, ``storage``, ``keys``, ``model``
(authorization of writes, for the CLI, the admin API and the UI alike, lives here)."
"""
