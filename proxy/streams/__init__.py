"""SSE fan-out: the three change streams (OFREP events, evaluated results, raw rules) on the
fan-out side, one file per concern.

- ``fanout.py``: takes every store change, encodes it once per stream kind (once per context
  for the evaluated stream) and queues it on every open connection, in time slices.
- ``connection.py``: one open stream, a bounded queue that coalesces into an owed snapshot.
- ``frames.py``: the SSE wire frames and the plain counters.
- ``snapshots.py``: the newest state in one event (a ``put``), for new and fallen-behind
  streams.
- ``resume.py``: a new stream's first events (``Last-Event-ID``: exactly what it missed).
- ``history.py``: the memory ring of recent changes and the Redis change log behind it.

The HTTP side (``proxy.api.streams``) opens and drains connections; ``proxy.server.app``
builds the fan-out (and its Redis history reader) and hands it over.

Imports (DESIGN §1): "``streams`` -> ``store``, ``evaluation``, ``model``, ``config``; only
``streams/history.py`` touches ``storage``."
"""
