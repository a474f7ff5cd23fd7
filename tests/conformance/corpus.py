"""Hand-written conformance cases: one per reference behaviour of DESIGN §2 (and the
reference quirks found by the generated test), each run through both engines.

``reference`` says what the JS evaluator must show:
- ``same``: exactly ``expect``;
- ``plain-js``: the reference throws on a mixed-type comparison, and its plain-JS
  re-evaluation gives ``expect`` (DESIGN §2: follow plain JavaScript there);
- ``diverges``: a divergence (DESIGN §2, or a reference bug listed in README.md): the
  reference gives ``js_expect``, flagedge gives ``expect``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = Any
NO_VALUE = object()

ONOFF = {"on": True, "off": False}
AB = {"a": "A", "b": "B", "c": "C"}
TRI = {"true": "yes", "false": "no", "fallback": "dflt"}  # null from a rule shows as DEFAULT


@dataclass(frozen=True)
class Expect:
    reason: str
    variant: str | None = None
    value: JSON = NO_VALUE
    error_code: str | None = None
    metadata: dict[str, JSON] | None = None  # None: not checked


def match(variant: str, value: JSON) -> Expect:
    return Expect("TARGETING_MATCH", variant, value)


def default(variant: str | None = None, value: JSON = NO_VALUE) -> Expect:
    return Expect("DEFAULT", variant, value)


def error(code: str) -> Expect:
    return Expect("ERROR", error_code=code)


@dataclass(frozen=True)
class Entry:
    name: str
    targeting: JSON = None  # None: no "targeting" member
    context: dict[str, JSON] = field(default_factory=dict)
    expect: Expect = field(default_factory=lambda: Expect("STATIC"))
    variants: dict[str, JSON] = field(default_factory=lambda: dict(ONOFF))
    default_variant: JSON = "off"
    state: str = "ENABLED"
    key: str = "f"
    evaluators: dict[str, JSON] | None = None
    set_metadata: dict[str, JSON] | None = None
    flag_metadata: dict[str, JSON] | None = None
    eval_key: str | None = None  # evaluate another key than the flag's
    reference: str = "same"
    js_expect: Expect | None = None

    def document(self) -> dict[str, JSON]:
        flag: dict[str, JSON] = {"state": self.state, "variants": self.variants}
        if self.default_variant is not ABSENT:
            flag["defaultVariant"] = self.default_variant
        if self.targeting is not None:
            flag["targeting"] = self.targeting
        if self.flag_metadata is not None:
            flag["metadata"] = self.flag_metadata
        doc: dict[str, JSON] = {"flags": {self.key: flag}}
        if self.evaluators:
            doc["$evaluators"] = self.evaluators
        if self.set_metadata:
            doc["metadata"] = self.set_metadata
        return doc


ABSENT = object()


def _if(cond: JSON, yes: JSON = "on", no: JSON = "off") -> JSON:
    return {"if": [cond, yes, no]}


def v(path: str, *default: JSON) -> JSON:
    return {"var": [path, *default]} if default else {"var": path}


FRAC = {"fractional": [["a", 50], ["b", 50]]}

ENTRIES: list[Entry] = [
    # --- outcomes and reasons ---------------------------------------------------------------
    Entry("disabled: no value, no variant", state="DISABLED", expect=Expect("DISABLED")),
    Entry("no targeting: default, STATIC", expect=Expect("STATIC", "off", False)),
    Entry("empty targeting {} is none: STATIC", targeting={}, expect=Expect("STATIC", "off", False)),
    Entry("no defaultVariant, no targeting: DEFAULT without value", default_variant=ABSENT,
          expect=default()),
    Entry("null defaultVariant, rule gives null: DEFAULT without value", default_variant=None,
          targeting=_if(v("x"), "on", None), expect=default()),
    Entry("rule names the default variant: still TARGETING_MATCH",
          targeting=_if(True, "off", "on"), expect=match("off", False)),
    Entry("rule gives null: DEFAULT", targeting=_if(v("x"), "on", None),
          expect=default("off", False)),
    Entry("rule names no variant: GENERAL", targeting=_if(v("x"), "on", "nope"),
          expect=error("GENERAL")),
    Entry("true maps to variant 'true'", variants={"true": 1, "false": 0}, default_variant="false",
          targeting={"==": [v("tier"), "gold"]}, context={"tier": "gold"},
          expect=match("true", 1)),
    Entry("false maps to variant 'false'", variants={"true": 1, "false": 0},
          default_variant="true", targeting={"==": [v("tier"), "gold"]},
          expect=match("false", 0)),
    Entry("runtime throw (substr of a number): GENERAL", variants=AB, default_variant="a",
          targeting={"substr": [v("n"), 0, 1]}, context={"n": 5}, expect=error("GENERAL")),
    Entry("unknown flag key: FLAG_NOT_FOUND", eval_key="missing-flag",
          expect=error("FLAG_NOT_FOUND")),
    Entry("falsy false served", targeting=_if(True, "off", "on"), expect=match("off", False)),
    Entry("falsy 0 served", variants={"zero": 0, "one": 1}, default_variant="one",
          targeting=_if(True, "zero", "one"), expect=match("zero", 0)),
    Entry("falsy empty string served", variants={"empty": "", "x": "x"}, default_variant="x",
          targeting=_if(True, "empty", "x"), expect=match("empty", "")),
    Entry("falsy {} served", variants={"empty": {}, "full": {"a": 1}}, default_variant="full",
          targeting=_if(True, "empty", "full"), expect=match("empty", {})),
    Entry("metadata: set metadata merged under flag metadata",
          set_metadata={"owner": "platform", "version": 1}, flag_metadata={"version": 2},
          expect=Expect("STATIC", "off", False, metadata={"owner": "platform", "version": 2})),
    # --- truthiness and equality ----------------------------------------------------------------
    Entry("{} is falsy", targeting=_if(v("o")), context={"o": {}}, expect=match("off", False)),
    Entry("[] is falsy", targeting=_if(v("o")), context={"o": []}, expect=match("off", False)),
    Entry("'0' is truthy", targeting=_if(v("o")), context={"o": "0"}, expect=match("on", True)),
    Entry("0 and '' are falsy", targeting=_if({"or": [v("z"), v("e")]}),
          context={"z": 0, "e": ""}, expect=match("off", False)),
    Entry("null == 0 (literal, folded at load)", targeting=_if({"==": [None, 0]}),
          expect=match("on", True)),
    Entry("missing var == 0", targeting=_if({"==": [v("x"), 0]}), expect=match("on", True)),
    Entry("missing var == false", targeting=_if({"==": [v("x"), False]}),
          expect=match("on", True)),
    Entry("false == missing var, var on the right: compiled plain JS, false",
          targeting=_if({"==": [False, v("x")]}), expect=match("off", False)),
    Entry("loose == coerces '1' == 1", targeting=_if({"==": [v("s"), 1]}), context={"s": "1"},
          expect=match("on", True)),
    Entry("strict === keeps '1' !== 1", targeting=_if({"===": [v("s"), 1]}), context={"s": "1"},
          expect=match("off", False)),
    Entry("=== keeps true !== 1", targeting=_if({"===": [v("b"), 1]}), context={"b": True},
          expect=match("off", False)),
    Entry("numeric string compares as number: '10' > 9", targeting=_if({">": [v("s"), 9]}),
          context={"s": "10"}, expect=match("on", True)),
    Entry("3-arg between (exclusive)", targeting=_if({"<": [18, v("age"), 65]}),
          context={"age": 18}, expect=match("off", False)),
    Entry("3-arg between (inclusive)", targeting=_if({"<=": [18, v("age"), 65]}),
          context={"age": 18}, expect=match("on", True)),
    Entry("mixed-type comparison true != 'true': plain JS (reference throws)",
          targeting=_if({"!=": [v("b"), "true"]}), context={"b": True},
          expect=match("on", True), reference="plain-js"),
    # --- arithmetic -------------------------------------------------------------------------
    Entry("constant division by zero: PARSE_ERROR at load",
          targeting=_if({">": [{"/": [1, 0]}, 0]}), expect=error("PARSE_ERROR")),
    Entry("division by a literal 0 of a context value: PARSE_ERROR at load",
          targeting=_if({">": [{"/": [v("n"), 0]}, 0]}), context={"n": 4},
          expect=error("PARSE_ERROR")),
    Entry("a literal 0 modulus is no load error (only / checks its divisors)",
          targeting=_if(v("x"), "on", {"if": [{">": [{"%": [v("n"), 0]}, 1]}, "on", "off"]}),
          context={"x": True}, expect=match("on", True)),
    Entry("a literal 0 modulus, when evaluated, is GENERAL",
          targeting=_if({">": [{"%": [v("n"), 0]}, 1]}), context={"n": 5},
          expect=error("GENERAL")),
    Entry("division by zero at run time: GENERAL", targeting=_if({">": [{"/": [10, v("n")]}, 1]}),
          context={"n": 0}, expect=error("GENERAL")),
    Entry("% keeps the dividend's sign", targeting=_if({"==": [{"%": [v("n"), 3]}, -1]}),
          context={"n": -7}, expect=match("on", True)),
    Entry("max of a numeric string throws: GENERAL", targeting=_if({">": [{"max": [v("n"), 1]}, 0]}),
          context={"n": "5"}, expect=error("GENERAL")),
    Entry("numeric rule result names variant '1'", variants={"1": 10, "0": 0},
          default_variant="0", targeting={"+": [v("n"), 1]}, context={"n": 0.0},
          expect=match("1", 10)),
    Entry("float rule result names variant '2.5'", variants={"2.5": "x", "0": "y"},
          default_variant="0", targeting={"*": [v("n"), 0.5]}, context={"n": 5},
          expect=match("2.5", "x")),
    Entry("an id past 2^53 is a double: 9007199254740993 % 3 is 2",
          targeting=_if({"==": [{"%": [v("id"), 3]}, 2]}), context={"id": 9007199254740993},
          expect=match("on", True)),
    Entry("reduce sums a context array", targeting=_if({">": [{"reduce": [
        v("xs"), {"+": [v("accumulator"), v("current")]}, 0]}, 100]}),
          context={"xs": [50, 40.5, 10]}, expect=match("on", True)),
    # --- var / missing ----------------------------------------------------------------------------
    Entry("dotted path into nested objects and arrays", targeting=_if(
        {"==": [v("user.orgs.1.name"), "globex"]}),
          context={"user": {"orgs": [{"name": "acme"}, {"name": "globex"}]}},
          expect=match("on", True)),
    Entry("var default used for a missing value", variants=AB, default_variant="c",
          targeting=v("arm", "b"), expect=match("b", "B")),
    Entry("var default used for a null value too", variants=AB, default_variant="c",
          targeting=v("arm", "b"), context={"arm": None}, expect=match("b", "B")),
    Entry("missing: a null value is present", targeting=_if({"missing": ["a"]}),
          context={"a": None}, expect=match("off", False)),
    Entry("missing_some: enough present", targeting=_if({"missing_some": [1, ["a", "b"]]}),
          context={"b": 1}, expect=match("off", False)),
    # --- control flow, strings, arrays ----------------------------------------------------------
    Entry("if with even args: no else is null", targeting={"if": [v("x"), "on"]},
          context={"x": False}, expect=default("off", False)),
    Entry("or returns the first truthy value", variants={"gold": 1, "bronze": 3},
          default_variant="gold", targeting={"or": [v("tier"), "bronze"]},
          expect=match("bronze", 3)),
    Entry("cat writes a missing value as 'null'", variants={"vnull": 1, "v": 2},
          default_variant="v", targeting={"cat": ["v", v("x")]}, expect=match("vnull", 1)),
    Entry("cat writes an integral float like JS", variants={"v2": 1, "v2.0": 2},
          default_variant="v2.0", targeting={"cat": ["v", v("n")]}, context={"n": 2.0},
          expect=match("v2", 1)),
    Entry("in: substring of a string", targeting=_if({"in": ["@corp", v("email")]}),
          context={"email": "ann@corp.example"}, expect=match("on", True)),
    Entry("in: array membership is strict (1 is not true)",
          targeting=_if({"in": [v("n"), [True, "1"]]}), context={"n": 1},
          expect=match("off", False)),
    Entry("substr with a negative start", variants=AB, default_variant="c",
          targeting={"substr": [v("s"), -1]}, context={"s": "arm-a"}, expect=match("a", "A")),
    Entry("substr with a negative length", variants=AB, default_variant="c",
          targeting={"substr": [v("s"), 0, -2]}, context={"s": "bxy"}, expect=match("b", "B")),
    Entry("all of an empty array is false", targeting=_if({"all": [v("xs"), {">": [v(""), 0]}]}),
          context={"xs": []}, expect=match("off", False)),
    Entry("some / none / map / filter / merge", targeting=_if({"and": [
        {"some": [v("items"), {">": [v("qty"), 2]}]},
        {"none": [v("tags"), {"==": [v(""), "blocked"]}]},
        {"in": ["B", {"map": [v("items"), v("sku")]}]},
        {"filter": [v("tags"), {"!=": [v(""), "x"]}]},
        {"in": ["z", {"merge": [["y"], v("tags")]}]}]}),
          context={"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 3}], "tags": ["z"]},
          expect=match("on", True)),
    # --- json-logic-engine's compiler and interpreter (found by the generated test) -------------
    Entry("compiled all over a missing array is true", targeting=_if(
        {"all": [v("items"), v("qty")]}), expect=match("on", True)),
    Entry("compiled == with a var on the right compares as plain JS (null == 0 is false)",
          targeting=_if({"==": [v("x"), v("y")]}), context={"x": None, "y": 0},
          expect=match("off", False)),
    Entry("compiled comparison sees the last var read inside its right operand",
          targeting=_if({"==": [v("score"), {"+": [v("score")]}]}), expect=match("on", True)),
    Entry("compiled in runs its haystack before its needle (the needle's var is seen last)",
          targeting=_if({"==": [v("t"), {"in": [v("u"), v("s")]}]}), context={"s": "x"},
          expect=match("on", True)),
    Entry("2-arg if runs interpreted: all over a missing array is false",
          targeting={"if": [{"all": [v("items"), v("qty")]}, "on"]}, expect=default("off", False)),
    Entry("2-arg if runs interpreted: var default is not used for null",
          targeting={"if": [{"<": [v("score", 1), v("age", 1)]}, "on"]}, context={"score": None},
          expect=match("on", True)),
    Entry("2-arg if runs interpreted: null == 0 between vars is true",
          targeting={"if": [{"==": [v("x"), v("y")]}, "on"]}, context={"x": None, "y": 0},
          expect=match("on", True)),
    Entry("2-arg if runs interpreted: cat of one null throws",
          targeting={"if": [{">": [v("locale"), {"cat": [v("x")]}]}, "on"]},
          context={"locale": "en"}, expect=error("GENERAL")),
    Entry("2-arg if runs interpreted: a literal 0 divisor is no load error",
          targeting={"if": [{"and": [v("x"), {"/": [v("n"), 0]}]}, "on"]}, context={"x": False},
          expect=default("off", False)),
    Entry("2-arg if runs interpreted: reduce without initial value over a missing array is 0",
          targeting={"if": [{">=": [v("n"), {"reduce": [
              v("xs"), {"+": [v("accumulator"), v("current")]}]}]}, "on"]},
          context={"n": 0}, expect=match("on", True)),
    Entry("2-arg if runs interpreted: a string '0' divisor gives -Infinity, no error",
          targeting={"if": [{"/": [v("n"), "0"]}, "on"]}, context={"n": -9.2},
          expect=match("on", True)),
    Entry("an evaluator with a literal 0 divisor, used only under a 2-arg if, loads",
          evaluators={"bad": {"<=": [{"/": [v("n"), "0"]}, 1]}},
          targeting={"if": [{"and": [v("x"), {"$ref": "bad"}]}, "on"]},
          expect=default("off", False)),
    Entry("fractional evaluates its weights before looking for targetingKey",
          targeting={"fractional": [["on", {"*": [v("w")]}]]}, context={"w": "zz"},
          expect=error("GENERAL")),
    Entry("missing_some with a computed count answers the count (shared prev register)",
          targeting=_if({"missing_some": [v("need"), ["a", "b"]]}),
          context={"need": 5, "a": 1, "b": 2}, expect=match("on", True)),
    Entry("flagd operator with the wrong arity: refused at load (reference: null at run time)",
          variants=TRI, default_variant="fallback",
          targeting={"starts_with": [v("email"), "a", "b"]}, context={"email": "ab"},
          expect=error("PARSE_ERROR"), reference="diverges", js_expect=default("fallback", "dflt")),
    Entry("var through a JS prototype property: flagedge stops at the function",
          targeting=_if(v("constructor.name")), expect=match("off", False),
          reference="diverges", js_expect=match("on", True)),
    Entry("cat of an or: flagedge concatenates (reference codegen bug returns the or)",
          variants={"xA": 1, "A": 2, "other": 3}, default_variant="other",
          targeting={"cat": ["x", {"or": [v("a"), "b"]}]}, context={"a": "A"},
          expect=match("xA", 1), reference="diverges", js_expect=match("A", 2)),
    # --- $ref and $flagd ------------------------------------------------------------------------
    Entry("$ref to an evaluator", evaluators={"internal": {"ends_with": [v("email"), "@corp.example"]}},
          targeting=_if({"$ref": "internal"}), context={"email": "a@corp.example"},
          expect=match("on", True)),
    Entry("$ref inside an evaluator (to a later one)",
          evaluators={"a": {"and": [{"$ref": "b"}, True]}, "b": {"==": [v("tier"), "gold"]}},
          targeting=_if({"$ref": "a"}), context={"tier": "gold"}, expect=match("on", True)),
    Entry("$ref inside an evaluator to an earlier one: resolved (reference leaves it unresolved)",
          evaluators={"b": {"==": [v("tier"), "gold"]}, "a": {"and": [{"$ref": "b"}, True]}},
          targeting=_if({"$ref": "a"}), context={"tier": "gold"}, expect=match("on", True),
          reference="diverges", js_expect=error("PARSE_ERROR")),
    Entry("$flagd.flagKey is the evaluated flag", key="my-flag",
          targeting=_if({"==": [v("$flagd.flagKey"), "my-flag"]}), expect=match("on", True)),
    Entry("a $flagd in the context is replaced", key="my-flag",
          targeting=_if({"==": [v("$flagd.flagKey"), "my-flag"]}),
          context={"$flagd": {"flagKey": "other"}}, expect=match("on", True)),
    # --- fractional (buckets from unsigned murmur3 of flagKey+targetingKey) ------------------------
    Entry("fractional: user-1 lands in bucket 1 of 100", key="rollout", variants=AB,
          default_variant="c", targeting=FRAC, context={"targetingKey": "user-1"},
          expect=match("a", "A")),
    Entry("fractional: user-3 lands in bucket 82 of 100", key="rollout", variants=AB,
          default_variant="c", targeting=FRAC, context={"targetingKey": "user-3"},
          expect=match("b", "B")),
    Entry("fractional: weight defaults to 1", key="rollout", variants=AB, default_variant="a",
          targeting={"fractional": [["a"], ["b"], ["c"]]}, context={"targetingKey": "user-3"},
          expect=match("c", "C")),
    Entry("fractional: negative weight counts as 0", key="rollout", variants=AB,
          default_variant="c", targeting={"fractional": [["a", -10], ["b", 50], ["c", 50]]},
          context={"targetingKey": "user-1"}, expect=match("b", "B")),
    Entry("fractional: computed integral weight (50.0)", key="rollout", variants=AB,
          default_variant="c", targeting={"fractional": [["a", v("w")], ["b", 50]]},
          context={"targetingKey": "user-3", "w": 50.0}, expect=match("b", "B")),
    Entry("fractional: computed non-integer weight is null", key="rollout", variants=AB,
          default_variant="c", targeting={"fractional": [["a", v("w")], ["b", 50]]},
          context={"targetingKey": "user-3", "w": 12.5}, expect=default("c", "C")),
    Entry("fractional: computed true weight is null", key="rollout", variants=AB,
          default_variant="c", targeting={"fractional": [["a", v("w")], ["b", 50]]},
          context={"targetingKey": "user-3", "w": True}, expect=default("c", "C")),
    Entry("fractional: all weights 0 is null", key="rollout", variants=AB,
          default_variant="c", targeting={"fractional": [["a", v("w")], ["b", 0]]},
          context={"targetingKey": "user-3", "w": 0}, expect=default("c", "C")),
    Entry("fractional: string bucketBy expression", key="rollout", variants=AB,
          default_variant="c", targeting={"fractional": [v("email"), ["a", 50], ["b", 50]]},
          context={"targetingKey": "user-1", "email": "alice@example.com"},
          expect=match("b", "B")),
    Entry("fractional: missing targetingKey is null", key="rollout", variants=AB,
          default_variant="c", targeting=FRAC, expect=default("c", "C")),
    Entry("fractional: empty targetingKey is null", key="rollout", variants=AB,
          default_variant="c", targeting=FRAC, context={"targetingKey": ""},
          expect=default("c", "C")),
    Entry("fractional: non-string bucketBy uses flagKey+targetingKey (spec)", key="rollout",
          variants=AB, default_variant="c",
          targeting={"fractional": [v("age"), ["a", 50], ["b", 50]]},
          context={"targetingKey": "user-1", "age": 30}, expect=match("a", "A"),
          reference="diverges", js_expect=default("c", "C")),
    # --- sem_ver, starts_with, ends_with ---------------------------------------------------------
    Entry("sem_ver: partial version 1.2 = 1.2.0", variants=TRI, default_variant="fallback",
          targeting={"sem_ver": [v("ver"), "=", "1.2.0"]}, context={"ver": "1.2"},
          expect=match("true", "yes")),
    Entry("sem_ver: partial version 2 >= 2.0.0 and v prefix", variants=TRI,
          default_variant="fallback", targeting={"sem_ver": [v("ver"), ">=", "v2"]},
          context={"ver": "V2"}, expect=match("true", "yes")),
    Entry("sem_ver: prerelease sorts before release", variants=TRI, default_variant="fallback",
          targeting={"sem_ver": [v("ver"), "<", "1.2.3"]}, context={"ver": "1.2.3-beta.1"},
          expect=match("true", "yes")),
    Entry("sem_ver: ^ compares major", variants=TRI, default_variant="fallback",
          targeting={"sem_ver": [v("ver"), "^", "1.2.3"]}, context={"ver": "1.9.0"},
          expect=match("true", "yes")),
    Entry("sem_ver: ~ compares major.minor", variants=TRI, default_variant="fallback",
          targeting={"sem_ver": [v("ver"), "~", "1.2.0"]}, context={"ver": "1.3.0"},
          expect=match("false", "no")),
    Entry("sem_ver: invalid version is null, not false", variants=TRI,
          default_variant="fallback", targeting={"sem_ver": [v("ver"), ">", "1.0.0"]},
          context={"ver": "not-a-version"}, expect=default("fallback", "dflt")),
    Entry("sem_ver: missing version is null", variants=TRI, default_variant="fallback",
          targeting={"sem_ver": [v("ver"), ">", "1.0.0"]}, expect=default("fallback", "dflt")),
    Entry("starts_with: non-string is null", variants=TRI, default_variant="fallback",
          targeting={"starts_with": [v("n"), "1"]}, context={"n": 123},
          expect=default("fallback", "dflt")),
    Entry("ends_with: true", variants=TRI, default_variant="fallback",
          targeting={"ends_with": [v("email"), "@example.com"]},
          context={"email": "bob@example.com"}, expect=match("true", "yes")),
]
