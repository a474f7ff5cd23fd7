"""JsonLogic compiled to Python closures, with flagd's reference semantics.

``LogicCompiler.compile(node, path)`` turns a JsonLogic tree into either a :class:`Const`
(the subtree reads no data and was folded at compile time) or a closure ``f(data)``. Each
node becomes one closure once; a request only calls closures. Problems (unknown operator,
wrong arity, a constant expression that fails such as a division by zero, unknown or cyclic
``$ref``, excessive depth or size) are collected with their JSON path instead of raised, so
validation reports every problem at once.

Reference semantics (DESIGN §2: flagd-core 4.0.1 on json-logic-engine 5.0.7), reproduced
here and checked against it in node:

- JS values: one number type (``1 + 1`` is int 2, ``1 / 2`` 0.5, integers past 2^53 compare
  as doubles), JS ``ToNumber``/``ToString``, truthiness with ``[]``/``{}`` falsy, ``"0"`` truthy.
- The reference *compiles* rules to JS, except below an ``if`` with fewer than three
  arguments, which it *interprets*; the two differ and both are reproduced: compiled ``var``
  uses ``a?.b ?? default`` (null and missing give the default), interpreted ``var`` returns a
  null value as null; compiled comparisons check the right operand against a shared ``prev``
  register that a ``var`` operand overwrites (``null == 0`` only holds against a literal 0),
  interpreted ones compare numerically; interpreted ``!``, ``!!``, ``cat``, ``+``, ``-`` look
  inside a single operand's array value, and ``some``/``all``/``none`` iterate strings.
- Subtrees the reference deems deterministic (no request read, none of flagd's operators)
  are evaluated once when compiling, by its interpreter, on empty data; a failure there is a
  load-time problem (PARSE_ERROR in the reference). A literal zero ``/`` divisor is one too.

Divergences, on purpose:
- where the reference throws on a mixed-type comparison (``true != "true"``), we answer as
  plain JavaScript (DESIGN §2);
- wrong arity of an operator is a validation problem (the reference may return null or
  false at run time), as are invalid literal ``sem_ver`` operators/targets and literal
  fractional buckets; for flagd's own operators (``sem_ver``, ``starts_with``,
  ``ends_with``, ``fractional``'s literal buckets and first argument) it is a *warning*:
  refused by push/validate, but compiled to what the reference answers (null), which is how
  sources serve a flag they hold anyway;
- the reference's code generator drops parentheses around ternary-compiled ``or``/``and``/
  ``missing``/``missing_some``/``all`` inside ``cat`` and iterator selections
  (``{"cat": ["x", {"or": [...]}]}`` loses the ``"x"``); we evaluate them as written;
- ``$ref`` resolves recursively in any order (the reference substitutes textually, in
  definition order); fractional divergences are listed in ``fractional.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from proxy.evaluation.jsonlogic.base import Compiled, Fn, Register
from proxy.evaluation.jsonlogic.base import fn as as_fn
from proxy.evaluation.jsonlogic.jsvalue import Const, JSThrow, to_string
from proxy.evaluation.jsonlogic.table import ITERATORS, NEVER_FOLDED, OPERATORS
from proxy.model import DEFAULT_FRACTIONAL_HASH, FractionalHash, Problem

MAX_DEPTH = 64
MAX_NODES = 100_000


CLOCK_VAR = "$flagd.timestamp"
CLOCK_PATH = ["$flagd", "timestamp"]
# ``T OP clock`` is ``clock MIRRORED[OP] T``.
MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def flips(op: str, threshold: float) -> set[int]:
    """The integer seconds at which ``clock OP threshold`` may change its answer ($flagd.timestamp
    is whole seconds): ``<`` and ``>=`` first differ at the first second not below the
    threshold (``ceil``), ``<=`` and ``>`` at the first second above it (``floor + 1``);
    (in)equality at both. A boundary is the first second of a new answer, never later."""
    at = math.ceil(threshold)
    after = math.floor(threshold) + 1
    if op in ("<", ">="):
        return {at}
    if op in ("<=", ">"):
        return {after}
    return {at, after}


def join(path: str, segment: str) -> str:
    return f"{path}.{segment}" if path else segment


def is_plain(values: list[Any]) -> bool:
    """No object or array among ``values``: a list of literals (an allow list), which reads
    nothing and compiles to itself. The types are collected in C, not by a generator per
    element (a 100-email flag compiled in 47.5 us instead of 49)."""
    types = set(map(type, values))
    return dict not in types and list not in types


def describe(exc: BaseException) -> str:
    if isinstance(exc, JSThrow):
        return str(exc) or "invalid arguments"
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    return f"{type(exc).__name__}: {exc}"


class LogicCompiler:
    """Compiles JsonLogic for one flag (or one evaluator), collecting problems.

    After compiling, ``refs`` holds the ``$evaluators`` names used, ``uses_timestamp`` says
    whether a rule may read ``$flagd.timestamp``, ``boundaries`` the times its result may
    change at (when every read of the clock is compared with a literal number), ``needs_flagd``
    whether it reads ``$flagd`` or the whole data at all (otherwise the engine can pass the
    request context unchanged).
    ``flag_key`` lets operators use the flag's key without reading ``$flagd`` at run time.
    ``interpreted`` is set while compiling a subtree the reference interprets rather than
    compiles (below an ``if`` with fewer than three arguments).
    With ``trace`` set to a list, traced operators append what they decided (explain).
    ``fractional_hash`` is the environment's hashing generation, which ``fractional`` is
    compiled for; ``uses_fractional`` records that the rule has one; ``mark_assigned``
    (experiment flags) marks the variants it picks.
    """

    def __init__(
        self,
        evaluators: Mapping[str, Any] | None = None,
        *,
        trace: list[str] | None = None,
        flag_key: str | None = None,
        expand_refs: bool = True,
        fractional_hash: FractionalHash = DEFAULT_FRACTIONAL_HASH,
        mark_assigned: bool = False,
    ):
        self.evaluators: Mapping[str, Any] = evaluators or {}
        self.flag_key = flag_key  # known when compiling a flag: $flagd.flagKey is a constant
        self.expand_refs = expand_refs  # False: check $ref names only (validating $evaluators)
        self.fractional_hash = fractional_hash
        # An experiment flag: what ``fractional`` picks is marked (model.Assigned), so the
        # flag's result tells a split assignment from a variant a condition named.
        self.mark_assigned = mark_assigned
        # Whether the node being compiled is the rule's outcome (the root, an if's branch, a
        # $ref there) rather than an operand: only a split picked as the outcome is an
        # assignment; a pick an operator consumes ({"==": [fractional, "in"]}) is a value.
        # ``in_result``: for the next node compiled; ``result_here``: for the operator
        # being built now (builders read it before compiling their own arguments).
        self.in_result = True
        self.result_here = True
        self.uses_fractional = False
        self.problems: list[Problem] = []
        self.refs: set[str] = set()
        self.uses_timestamp = False
        # Reads of $flagd.timestamp, and how many of them a comparison with a literal number
        # accounted for (adding its ``thresholds``); ``clock_opaque``: the clock may be read
        # another way (the whole data or $flagd, a computed name). See ``boundaries``.
        self.clock_reads = 0
        self.clock_compared = 0
        self.clock_opaque = False
        self.thresholds: set[int] = set()
        self.needs_flagd = False
        # Top-level context attributes the rule reads (``reads_unknown``: the whole data, or a
        # name known only at run time): results depend on nothing else (proxy.api.ofrep keys
        # its result cache on them).
        self.reads: set[str] = set()
        self.reads_unknown = False
        self.trace = trace
        self.scope = 0  # > 0 inside map/filter/reduce/... where var reads the element
        # The reference compiles rules to JS, except below an `if` with fewer than three
        # arguments, which it runs through its interpreter; a few operators (var, comparisons,
        # unary ones) behave differently there, so builders look at this flag.
        # Checking an evaluator on its own (refs unexpanded) we cannot know whether a flag
        # uses it where the reference compiles or where it interprets: check it the lenient,
        # interpreted way (structure, operators, arity); flags report the rest in context.
        self.interpreted = not expand_refs
        # Constant subtrees that failed while folded in interpreted mode: the reference's
        # interpreter folds eagerly, so the whole interpreted argument around them fails.
        self.failures: list[BaseException] = []
        self._purity: dict[tuple[int, bool], tuple[Any, bool]] = {}
        self._ref_stack: list[str] = []
        self._depth = 0
        self.nodes = 0  # compiled so far, every element of a constant list included (MAX_NODES)
        self._too_big = False
        # How many places the reference's generated JS assigns its shared `prev` variable:
        # json-logic-engine's compiled comparators read `prev` after evaluating an operand, so
        # an operand whose code assigns it (a var, say) changes how the comparison coerces.
        self.prev_writes = 0
        # The register itself, for the current generated function (each iterator mapper is its
        # own): closures that assign `prev` there store into it while `recording` (only inside
        # the right-hand operand of a compiled comparison, where someone reads it); one per
        # thread, as the reference has one per call (compiled rules are shared by threads).
        self.cell = Register()
        self.recording = 0

    # -- reporting ------------------------------------------------------------------------
    def problem(self, path: str, message: str) -> Const:
        self.problems.append(Problem(path, message))
        return Const(None)

    def warn(self, path: str, message: str) -> None:
        """A problem flagedge refuses at write time but flagd only turns into null when it
        evaluates: the caller compiles what the reference does (sources serve it so)."""
        self.problems.append(Problem(path, message, warning=True))

    def fold(self, path: str, thunk: Callable[[], Any]) -> Const:
        """Evaluate a data-free subtree now; if it fails it fails on every request, so it is a
        load-time problem (the reference reports PARSE_ERROR for it), except where the
        reference interprets the rule: it fails at run time there, so do we."""
        try:
            return Const(thunk())
        except RecursionError:
            return self.problem(path, "constant expression too deeply nested")
        except Exception as exc:
            if self.interpreted:  # the reference's interpreter fails when it runs: GENERAL
                error = exc
                self.failures.append(exc)

                def fails(d: Any) -> Any:
                    raise error

                return fails  # type: ignore[return-value]
            return self.problem(path, f"constant expression fails: {describe(exc)}")

    def reads_data(self, parts: list[str] | None) -> None:
        """Record a read of the request data at ``parts`` (None: the whole data, or a path
        only known at run time). Reads inside iterators see the element, not the request."""
        if parts is None:
            self.needs_flagd = True
            if self.scope == 0:
                self.uses_timestamp = self.clock_opaque = True
                self.reads_unknown = True
        elif parts and parts[0] == "$flagd":
            self.needs_flagd = True
            if self.scope == 0 and (len(parts) == 1 or parts[1] == "timestamp"):
                self.uses_timestamp = True
                self.reads_unknown = True
                if parts == CLOCK_PATH:
                    self.clock_reads += 1
                else:
                    self.clock_opaque = True
        elif self.scope == 0:  # inside an iterator a var reads the element, not the request
            if parts:
                self.reads.add(parts[0])
            else:
                self.reads_unknown = True

    @property
    def boundaries(self) -> tuple[int, ...] | None:
        """The Unix seconds at which the rule's result may change with no write: () when it
        never reads the clock, None when some read is not a comparison with a literal
        number (then any second may change it)."""
        if not self.uses_timestamp:
            return ()
        if self.clock_opaque or self.clock_compared != self.clock_reads:
            return None
        return tuple(sorted(self.thresholds))

    def is_clock(self, node: Any) -> bool:
        """``node`` is ``{"var": "$flagd.timestamp"}`` (or ``["$flagd.timestamp"]``), maybe
        behind ``$ref``s: an operand whose comparison with a literal gives a boundary."""
        seen: set[str] = set()
        while node.__class__ is dict and len(node) == 1 and "$ref" in node:
            name = node["$ref"]
            if name.__class__ is not str or name in seen or name not in self.evaluators:
                return False
            seen.add(name)
            node = self.evaluators[name]
        if node.__class__ is not dict or len(node) != 1 or "var" not in node:
            return False
        key = node["var"]
        if key.__class__ is list and len(key) == 1:
            key = key[0]
        return key == CLOCK_VAR

    def compared_clock(self, op: str, args: list[Any], parts: list[Compiled]) -> None:
        """A comparison ``op`` of ``args`` (compiled as ``parts``) was built: when it compares
        the clock only with literal numbers, record its thresholds and count its reads of the
        clock as accounted for (any other use leaves them unaccounted: ``boundaries`` None)."""
        clocks = [self.is_clock(a) for a in args]
        if self.scope or not any(clocks):
            return
        found: set[int] = set()
        for i in range(len(args) - 1):
            left, right = clocks[i], clocks[i + 1]
            if left and right:
                continue  # the clock with itself: no threshold
            if not left and not right:
                continue  # two other operands (a literal with a literal in a chain)
            other = parts[i + 1] if left else parts[i]
            value = other.value if other.__class__ is Const else None  # type: ignore[union-attr]
            if value.__class__ not in (int, float) or not math.isfinite(value):
                return  # compared with something not a literal number: unknown
            found |= flips(op if left else MIRRORED.get(op, op), value)
        self.clock_compared += sum(clocks)
        self.thresholds |= found

    def records(self) -> bool:
        return self.recording > 0 and not self.interpreted

    def recorded(self, fn: Fn) -> Fn:
        """``fn`` storing its result in the `prev` register, when someone may read it."""
        if not self.records():
            return fn
        cell = self.cell

        def record(d: Any) -> Any:
            v = fn(d)
            cell.value = v
            return v

        return record

    def lazy(self, node: Any, path: str) -> Compiled:
        """Compile an argument the interpreter only prepares when it evaluates it (args of
        and/or/short if, iterator selections and mappers): a constant inside that failed
        to fold fails that argument when it runs, not the whole rule."""
        failures = len(self.failures)
        out = self.compile(node, path)
        if self.interpreted and len(self.failures) > failures:
            error = self.failures[failures]
            del self.failures[failures:]

            def failing(d: Any) -> Any:
                raise error

            return failing
        return out

    # -- traversal ------------------------------------------------------------------------
    def compile(self, node: Any, path: str) -> Compiled:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            if not self._too_big:
                self._too_big = True
                self.problem(path, f"rule is too large (more than {MAX_NODES} nodes)")
            return Const(None)
        c = node.__class__
        if c is not dict and c is not list:
            return Const(node)
        here, self.in_result = self.in_result, False  # its arguments are operands
        self.result_here = here
        try:
            if c is list:
                return self._array(node, path)
            before = self.prev_writes
            out = self._operation(node, path)
            if out.__class__ is Const:  # folded: no code, no `prev` in the reference either
                self.prev_writes = before
            return out
        finally:
            self.in_result = here

    def _enter(self, path: str) -> bool:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            self._depth -= 1
            self.problem(path, f"rule is nested deeper than {MAX_DEPTH} levels")
            return False
        return True

    def _array(self, node: list[Any], path: str) -> Compiled:
        if not self._enter(path):
            return Const(None)
        # A list of plain values (an allow list of 1,000 emails) is its own constant: the
        # same result as compiling each element, without ~1 us per element on every change.
        if self.nodes + len(node) <= MAX_NODES and is_plain(node):
            self.nodes += len(node)
            self._depth -= 1
            return Const(list(node))
        try:
            parts = [self.compile(x, f"{path}[{i}]") for i, x in enumerate(node)]
        finally:
            self._depth -= 1
        if all(p.__class__ is Const for p in parts):
            return Const([p.value for p in parts])  # type: ignore[union-attr]
        fns = [as_fn(p) for p in parts]
        return lambda d: [f(d) for f in fns]

    def _operation(self, node: dict[str, Any], path: str) -> Compiled:
        if not node:
            return Const({})
        if len(node) > 1:
            keys = ", ".join(repr(k) for k in list(node)[:4])
            return self.problem(path, f"an operation has exactly one key (the operator), got {keys}")
        ((op, args),) = node.items()
        if op == "$ref":
            return self._ref(args, path)
        builder = OPERATORS.get(op)
        if builder is None:
            return self.problem(path, f"unknown operator {op!r}")
        if not self._enter(path):
            return Const(None)
        opath = join(path, op)
        try:
            if self.interpreted or not self.is_deterministic(node, False):
                return builder(self, args, opath)
            # Nothing here reads the request: the reference evaluates this subtree once, while
            # compiling, with its interpreter (on empty data). Do the same; an error is a
            # load-time problem.
            self.interpreted = True
            failures = len(self.failures)
            try:
                alt = builder(self, args, opath)
            finally:
                self.interpreted = False
            if len(self.failures) > failures:
                error = self.failures[failures]
                del self.failures[failures:]
                return self.problem(opath, f"constant expression fails: {describe(error)}")
            if alt.__class__ is Const:
                return alt
            return self.fold(opath, lambda: alt({}))  # type: ignore[operator]
        finally:
            self._depth -= 1

    def is_deterministic(self, node: Any, in_iterator: bool, refs: tuple[str, ...] = ()) -> bool:
        """json-logic-engine's isDeterministic: no read of the request (var outside an
        iterator's mapper, missing, missing_some) and none of flagd's operators."""
        key = (id(node), in_iterator)
        known = self._purity.get(key)
        if known is not None:
            return known[1]
        out = True
        if node.__class__ is list:
            out = is_plain(node) or all(self.is_deterministic(x, in_iterator, refs)
                                        for x in node)
        elif node.__class__ is dict and len(node) == 1:
            ((op, args),) = node.items()
            if op == "var":
                # the reference: `insideIterator && !String(data).includes('../../')`, whatever
                # a default or computed key reads (they read the element too)
                out = in_iterator and "../../" not in to_string(args)
            elif op == "missing":
                out = args == []
            elif op in NEVER_FOLDED:
                out = False
            elif op == "$ref":
                body = self.evaluators.get(args) if args.__class__ is str else None
                out = (body is not None and args not in refs
                       and self.is_deterministic(body, in_iterator, (*refs, args)))
            elif op in ITERATORS and args.__class__ is list and len(args) >= 2:
                out = (self.is_deterministic(args[0], in_iterator, refs)
                       and self.is_deterministic(args[1], True, refs))
            else:
                out = self.is_deterministic(args, in_iterator, refs)
        self._purity[key] = (node, out)  # holding the node keeps its id from being reused
        return out

    def _ref(self, name: Any, path: str) -> Compiled:
        if name.__class__ is not str:
            return self.problem(path, "$ref must name an evaluator (a string)")
        if name not in self.evaluators:
            return self.problem(path, f"unknown $ref {name!r} (no such entry in $evaluators)")
        if not self.expand_refs:
            self.refs.add(name)
            return _opaque
        if name in self._ref_stack:
            cycle = " -> ".join([*self._ref_stack[self._ref_stack.index(name):], name])
            return self.problem(path, f"cyclic $ref: {cycle}")
        self.refs.add(name)
        self._ref_stack.append(name)
        self.in_result = self.result_here  # the evaluator stands where the $ref does
        try:
            inner = self.compile(self.evaluators[name], f"$evaluators.{name}")
        finally:
            self._ref_stack.pop()
        trace = self.trace
        if trace is None or inner.__class__ is Const:
            if trace is not None:
                trace_const = f"$ref {name} (constant)"
                fn = as_fn(inner)

                def traced_const(d: Any) -> Any:
                    trace.append(trace_const)
                    return fn(d)

                return traced_const
            return inner
        fn = as_fn(inner)
        line = f"$ref {name}"

        def traced(d: Any) -> Any:
            trace.append(line)
            return fn(d)

        return traced

    # -- helpers for builders -------------------------------------------------------------
    def args(self, args: Any, path: str, op: str, lo: int = 0, hi: int | None = None) -> list[Compiled] | None:
        """Compile a literal argument list, checking its length; None (problem reported) when
        the length is wrong. Callers handle non-list arguments before calling this."""
        if args.__class__ is not list:
            self.problem(path, f"{op} takes an array of arguments")
            return None
        n = len(args)
        if n < lo or (hi is not None and n > hi):
            if hi is None:
                want = f"at least {lo}"
            elif lo == hi:
                want = str(lo)
            else:
                want = f"{lo} to {hi}"
            self.problem(path, f"{op} takes {want} argument{'s' if want != '1' else ''}, got {n}")
            return None
        return [self.compile(a, f"{path}[{i}]") for i, a in enumerate(args)]


def _opaque(d: Any) -> Any:
    """Stands for an unexpanded $ref: not a constant, so nothing around it is folded."""
    return None


def compile_logic(
    logic: Any, path: str = "", evaluators: Mapping[str, Any] | None = None
) -> tuple[Compiled, LogicCompiler]:
    """Compile one JsonLogic tree; the compiler carries problems, refs and read flags."""
    cc = LogicCompiler(evaluators)
    return cc.compile(logic, path), cc


def apply(logic: Any, data: Any = None) -> Any:
    """Compile and run once (tests, tools). Raises ValueError listing problems."""
    compiled, cc = compile_logic(logic)
    if cc.problems:
        raise ValueError("; ".join(str(p) for p in cc.problems))
    return as_fn(compiled)(data)
