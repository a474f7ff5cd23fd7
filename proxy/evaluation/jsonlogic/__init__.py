"""JsonLogic compiled to Python closures, with flagd's reference semantics.

- ``compiler.py``: LogicCompiler walks a rule, folds constant subtrees and collects every
  problem with its JSON path;
- ``table.py``: the ONE operator registry (operator name -> builder);
- ``base.py``: the compiled-node types (Fn, Compiled, Builder) and the helpers builders share;
- ``jsvalue.py``: JavaScript value semantics (ToNumber, ToString, ``==``, truthiness);
- one module per operator family: ``logic`` (if, and/or, !/!!, comparisons), ``access``
  (var, missing, missing_some), ``arithmetic`` (+ - * / % min max), ``arrays`` (in, merge,
  map/filter/reduce/all/some/none), ``strings`` (cat, substr, starts_with, ends_with),
  ``fractional``, ``semver`` (sem_ver).

Imports (DESIGN §1, after flagd's evaluator: "one file per operator family; each exports its
name and function and knows nothing of the resolver; ONE place registers them"): operator
modules import only ``base`` and ``jsvalue`` (the compiler type only under
``TYPE_CHECKING``); ``table.py`` imports every operator module; ``compiler.py`` imports the
table, ``base``, ``jsvalue`` and ``proxy.model``. Nothing here imports ``documents`` or
``engine``.
"""
