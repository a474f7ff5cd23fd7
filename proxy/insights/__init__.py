"""Insights (DESIGN §11): what releases did — exposures across replicas, experiment
assignments, tracked outcomes and the statistics that read them (``stats.py``).

Imports (DESIGN §1): ``insights`` -> ``store``, ``evaluation``, ``storage``, ``model``.
"""
