#!/usr/bin/env node
// Reference side of flagedge's differential conformance test.
//
// Usage: node driver.js <dir holding node_modules with @openfeature/flagd-core>
// stdin:  one JSON object per line: {"id": any, "doc": <flagd document>,
//                                     "cases": [{"key": str, "context": {...}}, ...]}
// stdout: one JSON object per input line, in order:
//   {"id": ..., "load_error": str}                      the whole document was refused, or
//   {"id": ..., "results": [{value?, variant?, reason, errorCode?, metadata, threw?, alt?}]}
//
// Each flag is resolved the way flagd's in-process providers do it: FlagdCore.setConfigurations
// with the document's JSON text, then resolve<Type>Evaluation(key, default, context), where the
// type is that of the flag's variant values (so TYPE_MISMATCH never masks a result). flagd-core
// injects $flagd.flagKey / $flagd.timestamp itself.
//
// "threw": the targeting rule threw at run time (flagd-core reports GENERAL). For those cases
// "alt" is the same evaluation on the reference patched so that a comparison json-logic-engine
// would throw on is decided by the plain JavaScript operator instead (DESIGN §2: "follow plain
// JavaScript" there). Everything else in the alt engine is the reference itself.
'use strict'

const path = require('path')
const readline = require('readline')
const { createRequire } = require('module')

const prefix = process.argv[2]
if (!prefix) {
  process.stderr.write('usage: node driver.js <node_modules prefix>\n')
  process.exit(2)
}
const req = createRequire(path.join(path.resolve(prefix), 'package.json'))
const { FlagdCore } = req('@openfeature/flagd-core')
const { LogicEngine } = req('json-logic-engine')

const silent = { error () {}, warn () {}, info () {}, debug () {} }

// --- the alt engine: the reference itself, except that a comparison json-logic-engine would
// throw on (NaN coercion of a mixed-type operand) is decided by the plain JavaScript operator.
// json-logic-engine compares in two places, both patched only while loading the alt core:
// - compiled code calls the compareCheck it receives from the factory that compiler.js builds
//   with a global eval: we wrap the factory and hand it a compareCheck that returns the item
//   unchanged instead of throwing (so `prev OP item` runs as plain JS; the compiled code's
//   shared `prev` register is left exactly as it is);
// - interpreted code (e.g. an `if` with fewer than 3 arguments) uses the optimizer's comparison
//   idiom, which only applies to the original methods: we install copies without the
//   OriginalImpl marker whose method makes the idiom's decisions, with the same fallback.
const ORIGINAL_IMPL = Symbol.for('json_logic_original')
/* eslint-disable eqeqeq */
const OPS = {
  '<': (a, b) => a < b,
  '<=': (a, b) => a <= b,
  '>': (a, b) => a > b,
  '>=': (a, b) => a >= b,
  '==': (a, b) => a == b,
  '!=': (a, b) => a != b,
  '===': (a, b) => a === b,
  '!==': (a, b) => a !== b
}
/* eslint-enable eqeqeq */
function precoerce (x) {
  if (Number.isNaN(x)) throw NaN // eslint-disable-line no-throw-literal
  if (!x) return x
  if (typeof x === 'object') throw NaN // eslint-disable-line no-throw-literal
  return x
}
function lenient (fn) {
  return function () {
    try {
      return fn.apply(this, arguments)
    } catch (e) {
      if (typeof e === 'number' && Number.isNaN(e)) return PLAIN
      throw e
    }
  }
}
const PLAIN = Symbol('plain')
// The optimizer's comparison idiom (json-logic-engine 5.0.7 optimizer.js), lenient.
function idiomCompare (op, a, b) {
  const f = OPS[op]
  if (op.length === 3) return f(a, b)
  if ((typeof a === 'string' || a === null) && (typeof b === 'string' || b === null)) return f(a, b)
  const checked = lenient(() => {
    if (Number.isNaN(+precoerce(a))) throw NaN // eslint-disable-line no-throw-literal
    if (Number.isNaN(+precoerce(b)) && a !== null) throw NaN // eslint-disable-line no-throw-literal
    return true
  })()
  if (checked === PLAIN) return f(a, b)
  return f(+a, +b)
}
function interpretedComparator (op, original) {
  return (args, context, above, engine) => {
    if (!Array.isArray(args) || (args.length !== 2 && args.length !== 3)) return original(args, context, above, engine)
    const run = (x) => engine.run(x, context, { above })
    const a = run(args[0])
    const b = run(args[1])
    if (args.length === 2) return idiomCompare(op, a, b)
    return idiomCompare(op, a, b) && idiomCompare(op, b, run(args[2]))
  }
}
let plainMode = false
const originalBuild = LogicEngine.prototype.build
LogicEngine.prototype.build = function (logic, options) {
  if (!plainMode) return originalBuild.call(this, logic, options)
  for (const op of Object.keys(OPS)) {
    const copy = Object.assign({}, this.methods[op])
    delete copy[ORIGINAL_IMPL]
    copy.method = interpretedComparator(op, this.methods[op].method)
    this.methods[op] = copy
  }
  const realEval = globalThis.eval
  globalThis.eval = function (code) {
    const made = realEval(code)
    if (typeof made !== 'function' || !String(code).startsWith('(values, methods, notTraversed')) return made
    return function (...deps) {
      const compareCheck = deps[9]
      deps[9] = function (item, prev, strict) {
        const r = lenient(compareCheck)(item, prev, strict)
        return r === PLAIN ? item : r
      }
      return made(...deps)
    }
  }
  try {
    return originalBuild.call(this, logic, options)
  } finally {
    globalThis.eval = realEval
  }
}

function load (text, plain) {
  const core = new FlagdCore(undefined, silent)
  plainMode = plain
  try {
    core.setConfigurations(text)
  } finally {
    plainMode = false
  }
  return core
}

function flagType (core, key) {
  const flag = core.getFlag(key)
  if (!flag) return 'boolean'
  for (const v of flag.variants.values()) return typeof v
  return 'boolean'
}

function resolve (core, key, context) {
  const type = flagType(core, key)
  const res = core.resolve(type, key, undefined, context, silent)
  const out = { reason: res.reason, metadata: res.flagMetadata || {} }
  const flag = core.getFlag(key)
  // whether its targeting failed to compile, whatever the state (DISABLED hides it)
  if (flag && flag._targetingParseErrorMessage) out.targetingInvalid = true
  if (res.value !== undefined) out.value = res.value
  if (res.variant !== undefined) out.variant = res.variant
  if (res.errorCode !== undefined) {
    out.errorCode = res.errorCode
    out.errorMessage = res.errorMessage
  }
  return out
}

function handle (msg) {
  const text = JSON.stringify(msg.doc)
  let core
  try {
    core = load(text, false)
  } catch (e) {
    return { id: msg.id, load_error: String((e && e.message) || e) }
  }
  let alt = null
  const results = []
  for (const c of msg.cases) {
    const r = resolve(core, c.key, c.context || {})
    if (r.errorCode === 'GENERAL' && String(r.errorMessage).startsWith('Error evaluating targeting rule')) {
      r.threw = true
      if (alt === null) alt = load(text, true)
      r.alt = resolve(alt, c.key, c.context || {})
      if (r.alt.errorCode === 'GENERAL' && String(r.alt.errorMessage).startsWith('Error evaluating targeting rule')) r.alt.threw = true
    }
    results.push(r)
  }
  return { id: msg.id, results }
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
const out = []
rl.on('line', (line) => {
  if (!line.trim()) return
  let reply
  try {
    reply = handle(JSON.parse(line))
  } catch (e) {
    reply = { id: null, driver_error: String((e && e.stack) || e) }
  }
  out.push(JSON.stringify(reply))
  if (out.length >= 256) {
    process.stdout.write(out.join('\n') + '\n')
    out.length = 0
  }
})
rl.on('close', () => {
  if (out.length) process.stdout.write(out.join('\n') + '\n')
})
