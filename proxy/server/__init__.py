"""The running proxy: ``app.py`` is the ONE place that builds and wires store, sources,
key ring, auth, streams, metrics and every HTTP surface (and their lifespan);
``http_protocol.py`` is the uvicorn protocol that sends a response in one write;
``gcpolicy.py`` runs the garbage collector on a clock instead of inside requests.

Imports (DESIGN §1): "``server`` -> any of the above (it owns ``http_protocol.py`` and
``gcpolicy.py``)" and "nothing imports ``server`` but ``commands/serve.py``."
"""
