"""The ONE operator registry: every operator name -> the builder that compiles it.

As in flagd (``NewResolver`` in ``core/pkg/evaluator/json.go``), each operator module exports
its own names and builders (``BUILDERS``) and knows nothing of the others or of the
compiler; this module is the one place that imports them all. The compiler looks an
operator up here once per node, while compiling: a request only calls the closures built.
"""

from __future__ import annotations

from proxy.evaluation.jsonlogic import (
    access,
    arithmetic,
    arrays,
    fractional,
    logic,
    semver,
    strings,
)
from proxy.evaluation.jsonlogic.base import Builder


def _registry(*tables: dict[str, Builder]) -> dict[str, Builder]:
    out: dict[str, Builder] = {}
    for table in tables:
        clash = out.keys() & table.keys()
        if clash:  # two modules claiming one name: a bug, caught at import
            raise RuntimeError(f"operators registered twice: {sorted(clash)}")
        out.update(table)
    return out


OPERATORS: dict[str, Builder] = _registry(
    logic.BUILDERS,  # if ?: and or ! !! == === != !== < <= > >=
    access.BUILDERS,  # var missing missing_some
    arithmetic.BUILDERS,  # + - * / % min max
    arrays.BUILDERS,  # in merge map filter reduce all some none
    strings.BUILDERS,  # cat substr starts_with ends_with
    fractional.BUILDERS,  # fractional
    semver.BUILDERS,  # sem_ver
)

# What json-logic-engine's isDeterministic needs to know of the operators, for folding
# constant subtrees at load (``LogicCompiler.is_deterministic``):
# operators it never folds (they read the request, or are flagd's own) ...
NEVER_FOLDED = frozenset({"missing_some", "fractional", "sem_ver", "starts_with", "ends_with"})
# ... and the iterators, whose second argument reads the element rather than the request.
ITERATORS = frozenset({"map", "filter", "reduce", "all", "some", "none"})
