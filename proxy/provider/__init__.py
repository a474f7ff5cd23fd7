"""The in-process OpenFeature provider for Python backend services: it follows the rules
stream and evaluates with the proxy's own engine (``inprocess.py``; ``rules.py`` keeps the
rules current, ``results.py`` turns results into resolution details). Import it from here:
``from proxy.provider import FlagedgeProvider`` (the ``provider`` extra).

Imports (DESIGN §1): "``provider`` -> ``evaluation``, ``model`` only."
"""

from proxy.provider.inprocess import FlagedgeProvider

__all__ = ["FlagedgeProvider"]
