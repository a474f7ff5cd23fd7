"""``make run``: ``devrun.py`` starts a redis-server of its own, seeds it and runs the proxy;
``devredis.py`` finds and starts a throwaway redis-server (also used by tests and benches:
``free_port``, ``start_redis``, ``redis_server_binary``).

Imports (DESIGN §1): "``dev`` starts ``flagedge serve`` as a subprocess (so stopping it, by
any signal, also stops its redis-server)": it imports nothing from ``proxy`` but
``proxy.dev``, and runs every ``flagedge`` step as ``python -m proxy ...``.
"""
