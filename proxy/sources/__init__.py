"""Rule sources: what keeps each environment's FlagSet in the store current.

- ``base.py``: the ``Source`` protocol (``run``, ``resync``, ``close``, ``ready``,
  ``secret``), the type the runtime holds sources by; and a shared reconnect ``Backoff``;
- ``redis.py``: full load per environment, then push-based change following (and the key
  ring kept current from ``flagedge:keys``/``flagedge:events``);
- ``file.py``: offline mode, one watched flag file (also the ``--bootstrap`` file);
- ``assemble.py``: builds FlagSets from stored JSON one flag at a time, so one bad flag is
  rejected alone.

The store knows nothing of sources; ``proxy.server.app`` builds them and runs them.

Imports (DESIGN §1): "``sources`` -> ``store``, ``evaluation``, ``storage``, ``keys``,
``model``."
"""
