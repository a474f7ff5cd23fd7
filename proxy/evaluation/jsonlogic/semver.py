"""flagd's ``sem_ver``: ``[version, op, target]`` with op in ``= != < <= > >= ^ ~``.

Versions are parsed the way flagd's JS evaluator does (node-semver): one leading v/V is
dropped, surrounding whitespace is ignored, and a partial version "1" or "1.2" is completed
to "1.0.0" / "1.2.0"; anything else invalid gives null. ``^`` matches the major version,
``~`` the major and minor. A literal target is parsed once at compile time; versions from
the context go through a small hand-written parser behind a bounded cache (the ``semver``
library is used for prerelease precedence, the rare slow path).

Only strings of at most MAX_CACHED_VERSION characters are cached. Context strings can be as
long as the request body (64 KB by default), so 4,096 cached adversarial ones held ~256 MB;
real versions ("1.2.3-beta.4+build.567") are far shorter, and for a long string a cache hit
saves little anyway (hashing and comparing it is linear, as the parse is). The cache then
holds at most 4,096 x (2 x 64 + SEMVER_ENTRY_BYTES), about 1.8 MB.
"""

from __future__ import annotations

import operator
import re
from typing import TYPE_CHECKING, Any

import semver as _semver

from proxy.evaluation.jsonlogic.base import Builder, coerce_array
from proxy.evaluation.jsonlogic.base import fn as as_fn
from proxy.evaluation.jsonlogic.jsvalue import MAX_SAFE_INTEGER, Const, to_string

if TYPE_CHECKING:
    from proxy.evaluation.jsonlogic.base import Compiled
    from proxy.evaluation.jsonlogic.compiler import LogicCompiler

Version = tuple[int, int, int, str | None]

_IDENT = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][a-zA-Z0-9-]*)"
_FULL = re.compile(
    rf"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-({_IDENT}(?:\.{_IDENT})*))?(?:\+[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*)?",
    re.ASCII,
)
# The usual form, "4.2.13": no prefix, whitespace, prerelease or build, at most 15 digits a
# part (so below MAX_SAFE_INTEGER). It parses exactly as the general path below would, in
# half the instructions of the regular expression it replaced (~3.7k against ~7.2k per
# distinct "X.Y.Z" under callgrind; bench/evaluator.py times parses with every version string
# distinct). int() of a str is the costly step (it copies the string first), so parts below
# SMALL_PARTS are looked up: the table holds only canonical spellings ("7", never "07").
SMALL_PARTS = 1024
_SMALL = {str(i): i for i in range(SMALL_PARTS)}
_MAX_PLAIN_DIGITS = 15
_PARTIAL = re.compile(r"(0|[1-9]\d{0,15})(?:\.(0|[1-9]\d{0,15}))?", re.ASCII)
_WS = " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"

OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "^", "~")
MAX_CACHED_VERSION = 64  # characters; longer strings are parsed every time (see above)
CACHED_VERSIONS = 4096
# Heap bytes of one cached parse beyond its characters (the key's, and the prerelease's:
# each at most MAX_CACHED_VERSION): the key's str header (49 B) and, measured with tracemalloc
# over 4,096 parses of "1000.2.3-aaaaa" (CPython 3.11, 64-bit), the dict slot, the result
# tuple, its ints and the prerelease str (~180 B); rounded up from an lru_cache's ~280, which
# also held a link per entry.
SEMVER_ENTRY_BYTES = 320


def _digits(text: str) -> int | None:
    """A part of the plain form beyond the table: ASCII digits, no leading zero, at most 15."""
    if (text.isdigit() and text.isascii() and text[0] != "0"
            and len(text) <= _MAX_PLAIN_DIGITS):
        return int(text)
    return None


def _parse(raw: str) -> Version | None:
    parts = raw.split(".", 3)  # bounded: a string of 60,000 dots makes four parts, not 60,001
    if len(parts) == 3:  # the plain form first, its usual parts looked up (calls cost here)
        a, b, c = parts
        small = _SMALL.get
        major, minor, patch = small(a), small(b), small(c)
        if major is None:
            major = _digits(a)
        if minor is None:
            minor = _digits(b)
        if patch is None:
            patch = _digits(c)
        if major is not None and minor is not None and patch is not None:
            return (major, minor, patch, None)
    s = raw[1:] if raw[:1] in ("v", "V") else raw
    t = s.strip(_WS)
    if len(t) <= 256:
        m = _FULL.fullmatch(t)
        if m:
            major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3))
            if max(major, minor, patch) > MAX_SAFE_INTEGER:
                return None
            return (major, minor, patch, m.group(4))
    m = _PARTIAL.fullmatch(s)
    if m:
        major, minor = int(m.group(1)), int(m.group(2) or 0)
        if max(major, minor) > MAX_SAFE_INTEGER:
            return None
        return (major, minor, 0, None)
    return None


# Context strings already parsed (short ones only), emptied when full. A dict rather than
# functools.lru_cache: with every version new (a rollout's first day, bench/evaluator.py) an
# lru miss cost ~370 ns of a ~1.7 us evaluation in links and evictions; a hit here is one
# dict lookup inlined in the compiled rule (~60 ns against ~450 for a plain parse). Real
# traffic holds a few dozen app versions, so it fills only under churn; emptied then, its
# hot versions cost one parse each to come back.
_versions: dict[str, Version | None] = {}
_UNKNOWN: Any = object()


def remember(raw: str) -> Version | None:
    """Parse a version not found among ``_versions`` and keep it there if it is short."""
    parsed = _parse(raw)
    if len(raw) <= MAX_CACHED_VERSION:
        if len(_versions) >= CACHED_VERSIONS:
            _versions.clear()
        _versions[raw] = parsed
    return parsed


def parse_version(raw: str) -> Version | None:
    parsed = _versions.get(raw, _UNKNOWN)
    return remember(raw) if parsed is _UNKNOWN else parsed


def is_cached(raw: str) -> bool:
    return raw in _versions


def cached_count() -> int:
    return len(_versions)


def clear_cache() -> None:
    _versions.clear()


def cached_bytes() -> int:
    """An upper bound of the bytes the parse cache holds (every string at the length cap)."""
    return len(_versions) * (2 * MAX_CACHED_VERSION + SEMVER_ENTRY_BYTES)


def to_version(v: Any) -> Version | None:
    return parse_version(v if v.__class__ is str else to_string(v))


def compare(a: Version, b: Version) -> int:
    for i in (0, 1, 2):
        if a[i] != b[i]:
            return -1 if a[i] < b[i] else 1
    pa, pb = a[3], b[3]
    if pa == pb:
        return 0
    if pa is None:
        return 1
    if pb is None:
        return -1
    return _semver.Version(0, 0, 0, prerelease=pa).compare(_semver.Version(0, 0, 0, prerelease=pb))


_TESTS = {
    "=": lambda a, b: compare(a, b) == 0,
    "!=": lambda a, b: compare(a, b) != 0,
    "<": lambda a, b: compare(a, b) < 0,
    "<=": lambda a, b: compare(a, b) <= 0,
    ">": lambda a, b: compare(a, b) > 0,
    ">=": lambda a, b: compare(a, b) >= 0,
    "^": lambda a, b: a[0] == b[0],
    "~": lambda a, b: a[0] == b[0] and a[1] == b[1],
}
# Between two versions without a prerelease, tuple order is semver order (the trailing Nones
# compare equal): the hot path's comparison then skips compare()'s loop.
_PLAIN_TESTS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
                ">": operator.gt, ">=": operator.ge}


def sem_ver(vals: list[Any]) -> bool | None:
    """The operator on evaluated arguments; null on anything invalid."""
    if len(vals) != 3:
        return None
    a, b = to_version(vals[0]), to_version(vals[2])
    test = _TESTS.get(to_string(vals[1]))
    if a is None or b is None or test is None:
        return None
    return test(a, b)


def _warned(cc: LogicCompiler, parts: list[Compiled], path: str) -> bool:
    """Warn about an invalid literal operator or target; True when there was one."""
    op, target = parts[1], parts[2]
    warned = False
    if op.__class__ is Const and to_string(op.value) not in _TESTS:  # type: ignore[union-attr]
        cc.warn(f"{path}[1]", f"unknown sem_ver operator {op.value!r} (use one of {' '.join(OPERATORS)})")  # type: ignore[union-attr]
        warned = True
    if target.__class__ is Const and to_version(target.value) is None:  # type: ignore[union-attr]
        cc.warn(f"{path}[2]", f"invalid semantic version {target.value!r}")  # type: ignore[union-attr]
        warned = True
    return warned


def build(cc: LogicCompiler, args: Any, path: str) -> Compiled:
    if args.__class__ is dict and args:
        f = as_fn(cc.compile(args, path))
        return lambda d: sem_ver(coerce_array(f(d)))
    # Warnings (refused by push/validate; flagd answers null when it evaluates): wrong
    # arity, an unknown literal operator, an invalid literal target. Such a rule is compiled
    # in the generic form below, which evaluates the arguments as the reference does.
    args = args if args.__class__ is list else [args]
    parts = [cc.compile(a, f"{path}[{i}]") for i, a in enumerate(args)]
    if len(parts) != 3 or _warned(cc, parts, path):
        if len(parts) != 3:
            n = len(parts)
            cc.warn(path, f"sem_ver takes [version, operator, target], got {n} argument{'s' if n != 1 else ''}")
        fns = [as_fn(p) for p in parts]
        return lambda d: sem_ver([f(d) for f in fns])
    op, target = parts[1], parts[2]
    if all(p.__class__ is Const for p in parts):  # not folded: the reference never does
        out = sem_ver([p.value for p in parts])  # type: ignore[union-attr]
        return lambda d: out
    if op.__class__ is Const and target.__class__ is Const:
        test = _TESTS[to_string(op.value)]  # type: ignore[union-attr]
        tv = to_version(target.value)  # type: ignore[union-attr]
        fv = as_fn(parts[0])
        trace = cc.trace
        if trace is not None:

            def traced(d: Any) -> bool | None:
                raw = fv(d)
                v = to_version(raw)
                out = None if v is None else test(v, tv)
                trace.append(f"sem_ver {to_string(raw)!r} {op.value} {target.value!r} -> {'null' if out is None else str(out).lower()}")  # type: ignore[union-attr]
                return out

            return traced

        plain = _PLAIN_TESTS.get(to_string(op.value)) if tv is not None and tv[3] is None else None  # type: ignore[union-attr]

        known = _versions.get

        def sem_ver_fast(d: Any) -> bool | None:
            v = fv(d)
            if v.__class__ is str:  # parse_version inlined: this is the hot path
                pv = known(v, _UNKNOWN)
                if pv is _UNKNOWN:
                    pv = remember(v)
            else:
                pv = to_version(v)
            if pv is None:
                return None
            if plain is not None and pv[3] is None:
                return plain(pv, tv)
            return test(pv, tv)

        return sem_ver_fast
    fns = [as_fn(p) for p in parts]
    return lambda d: sem_ver([f(d) for f in fns])


BUILDERS: dict[str, Builder] = {"sem_ver": build}
