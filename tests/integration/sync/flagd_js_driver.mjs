// flagd's JS provider (@openfeature/flagd-provider, pinned in package.json) in in-process
// mode against a flagedge sync port, driven by JSON lines: the twin of flagd_py_driver.py.
// Out: {"event": NAME, "flags_changed": [...]}, {"event": "log", "message"}, {"id", "results"}.
// In: {"id": N, "evals": [{"type", "flag", "default", "context"}]}.
// Usage: node flagd_js_driver.mjs NODE_MODULES_PARENT HOST PORT SELECTOR
import { createRequire } from 'node:module';
import path from 'node:path';
import readline from 'node:readline';

const [prefix, host, port, selector] = process.argv.slice(2);
const require = createRequire(path.join(prefix, 'package.json'));
const { FlagdProvider } = require('@openfeature/flagd-provider');
const { OpenFeature, ProviderEvents } = require('@openfeature/server-sdk');

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const text = (args) => args.map((a) => (a instanceof Error ? a.message : typeof a === 'string'
  ? a : JSON.stringify(a))).join(' ');
const logger = {
  error: (...a) => emit({ event: 'log', message: text(a) }),
  warn: (...a) => emit({ event: 'log', message: text(a) }),
  info: (...a) => emit({ event: 'log', message: text(a) }),
  debug: (...a) => emit({ event: 'log', message: text(a) }),
};
for (const [name, event] of [['PROVIDER_READY', ProviderEvents.Ready],
  ['PROVIDER_CONFIGURATION_CHANGED', ProviderEvents.ConfigurationChanged],
  ['PROVIDER_STALE', ProviderEvents.Stale], ['PROVIDER_ERROR', ProviderEvents.Error]]) {
  OpenFeature.addHandler(event, (details) => emit({
    event: name, flags_changed: [...(details?.flagsChanged ?? [])].sort() }));
}
// Errors (the stream's status included) are also logged through the SDK's own logger.
OpenFeature.setLogger(logger);
const provider = new FlagdProvider({
  resolverType: 'in-process', host, port: Number(port), selector, deadlineMs: 2000,
  retryBackoffMs: 200, retryBackoffMaxMs: 500,
}, logger);
try {
  await OpenFeature.setProviderAndWait(provider);
  emit({ event: 'started' });
} catch (err) {
  emit({ event: 'init_error', message: String(err?.message ?? err) });
}
const client = OpenFeature.getClient();
const methods = {
  boolean: (f, d, c) => client.getBooleanDetails(f, d, c),
  string: (f, d, c) => client.getStringDetails(f, d, c),
  integer: (f, d, c) => client.getNumberDetails(f, d, c),
  float: (f, d, c) => client.getNumberDetails(f, d, c),
  object: (f, d, c) => client.getObjectDetails(f, d, c),
};
const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  const results = [];
  for (const item of command.evals) {
    const d = await methods[item.type](item.flag, item.default, item.context ?? {});
    results.push({ value: d.value, variant: d.variant ?? null, reason: d.reason ?? null,
      error_code: d.errorCode ?? null, metadata: d.flagMetadata ?? {} });
  }
  emit({ id: command.id, results });
}
await OpenFeature.close();
process.exit(0);
