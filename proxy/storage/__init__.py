"""Everything that knows the Redis layout (DESIGN §3):

- ``url.py``: redis-py clients (asyncio or sync) from URLs: TLS, unix sockets, Sentinel,
  Cluster;
- ``layout.py``: key names and the Lua scripts that read and write them;
- ``changes.py``: the one change-entry format (parse an entry, undo it with ``before``);
- ``keys.py``: API key CRUD (create, list, revoke, export) and the stream-token secret;
- ``replies.py``: Redis replies as Python values (the one bytes-to-str helper);
- ``policy.py``: an environment's release policy (``flagedge:{ENV}:policy``, DESIGN §10);
- ``requests.py``: change requests' keys and the scripts that create, close and apply them
  (the apply script runs ``layout.WRITE_BODY``: one writer), and the policy-guarded write.

Imports (DESIGN §1): "``storage`` -> ``model``, ``keys``". Who may use it: sources, release,
insights, commands, server, admin API modules, and of ``streams`` only ``history.py``.
"""
