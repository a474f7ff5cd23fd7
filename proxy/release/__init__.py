"""The write side: ``publisher.py`` (read, validate, diff, atomic push, history, rollback),
``changeset.py`` (what a push would change: the plan, pure data), ``preview.py`` (the
dry-run impact of a push on sample contexts); release control (DESIGN §10):
``authorization.py`` (who may do what: the one place), ``requests.py`` (the change request
record, its change and content hash, without I/O), ``review.py`` (propose, approve and apply,
reject, cancel, expire, against Redis), ``times.py`` (times and durations as the commands
take them). Used by the CLI commands and the admin API (``proxy/api/admin_*.py``); later
also by the UI.

Imports (DESIGN §1): "``release`` -> ``evaluation``, ``storage``, ``keys``, ``model``
(authorization of writes, for the CLI, the admin API and the UI alike, lives here)."
"""
