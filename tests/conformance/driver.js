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
// "alt" is the same evaluation on an engine whose comparison operators fall back to plain
// JavaScript where json-logic-engine would throw on a mixed-type comparison (DESIGN §2: "follow
// plain JavaScript" there). Everything else in the alt engine is the reference itself.
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

// --- the alt engine: comparisons as compiled by json-logic-engine, plain JS where it throws ---
function precoerce (x) {
  if (Number.isNaN(x)) throw NaN
  if (!x) return x
  if (typeof x === 'object') throw NaN
  return x
}
// Same decisions as the compiled comparison of json-logic-engine 5.0.7 (null/0 handling
// included); throws exactly where it throws.
function compareCheck (item, prev, strict) {
  if (strict || ((typeof item === 'string' || item === null) && (typeof prev === 'string' || prev === null))) return item
  if (Number.isNaN(+precoerce(item)) && prev !== null) throw NaN
  if (Number.isNaN(+precoerce(prev))) throw NaN
  if (prev === null && !item) return null
  if (item === null && !prev) return 0
  return item
}
function plainComparator (op, strict) {
  return (args) => {
    if (!Array.isArray(args) || args.length < 2) throw { type: 'Invalid Arguments' } // eslint-disable-line no-throw-literal
    let prev = args[0]
    for (let i = 1; i < args.length; i++) {
      let cur
      try {
        cur = compareCheck(args[i], prev, strict)
      } catch (e) {
        cur = args[i] // the reference would throw here: plain JavaScript instead
      }
      if (!op(prev, cur)) return false
      prev = cur
    }
    return true
  }
}
/* eslint-disable eqeqeq */
const PLAIN = {
  '<': plainComparator((a, b) => a < b, false),
  '<=': plainComparator((a, b) => a <= b, false),
  '>': plainComparator((a, b) => a > b, false),
  '>=': plainComparator((a, b) => a >= b, false),
  '==': plainComparator((a, b) => a == b, false),
  '!=': plainComparator((a, b) => a != b, false),
  '===': plainComparator((a, b) => a === b, true),
  '!==': plainComparator((a, b) => a !== b, true)
}
/* eslint-enable eqeqeq */
let plainMode = false
const originalBuild = LogicEngine.prototype.build
LogicEngine.prototype.build = function (logic, options) {
  if (plainMode) {
    for (const name of Object.keys(PLAIN)) this.addMethod(name, PLAIN[name], { deterministic: true })
  }
  return originalBuild.call(this, logic, options)
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
