// flagedge demo page: the OpenFeature web SDK with the OFREP web provider.
//
// The provider fetches every flag in one bulk POST, then follows the `eventStreams` URL of the
// response (a signed SSE URL, no API key in it) and re-fetches when flagedge announces a
// change. The page re-renders on CONFIGURATION_CHANGED; it never reloads and never polls.
//
// Settings come from (later wins): the defaults below, the JSON the server injects into
// <script id="flagedge-config">, and the page's query string. Query parameters:
//   key      client API key (sent as `Authorization: Bearer`; omitted when empty: --no-auth)
//   user     targetingKey of the evaluation context (default: a random id kept per tab)
//   baseUrl  the proxy's URL (default: this page's origin)
//   ctx.NAME extra context attributes, e.g. ctx.country=DE
//   cache    the provider's cacheMode (local-cache-first | network-first | disabled)
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { createTracker } from './track.js';

// Which flags the page shows, by role: the keys of config/flags.json. The server (injected
// config) or the query string (payments=, experiment=, greeting=, shipping=) may point a role
// at another flag of the same type.
const DEFAULT_FLAGS = {
  // Kill switch: `false` pauses payments and shows the incident banner. Fallback: payments on.
  payments: { key: 'payments-kill-switch', type: 'boolean', fallback: true },
  // Three-arm experiment: the arm (variant) picks the pay button's colour.
  experiment: { key: 'search-ranking', type: 'string', fallback: 'bm25' },
  // Banner text; an empty string means no banner.
  greeting: { key: 'welcome-banner', type: 'string', fallback: '' },
  // A number flag.
  shipping: { key: 'free-shipping-threshold', type: 'number', fallback: 50 },
};

// Experiment arm -> button colour (CSS colour names, so tests can read them back).
const ARM_COLOURS = { control: 'slategray', semantic: 'royalblue', hybrid: 'mediumpurple' };
const NO_ARM_COLOUR = 'gray';

function readConfig() {
  let injected = {};
  const el = document.getElementById('flagedge-config');
  if (el && el.textContent.trim()) {
    try {
      injected = JSON.parse(el.textContent);
    } catch (err) {
      console.warn('flagedge demo: ignoring bad injected config', err);
    }
  }
  const q = new URLSearchParams(window.location.search);
  const flags = structuredClone(DEFAULT_FLAGS);
  for (const [role, spec] of Object.entries(injected.flags || {})) {
    if (flags[role]) flags[role] = { ...flags[role], ...spec }; // the page has rows for these only
  }
  for (const role of Object.keys(flags)) {
    if (q.get(role)) flags[role].key = q.get(role);
  }
  const context = { ...(injected.context || {}) };
  for (const [name, value] of q.entries()) {
    if (name.startsWith('ctx.')) context[name.slice(4)] = value;
  }
  return {
    baseUrl: (q.get('baseUrl') || injected.baseUrl || window.location.origin).replace(/\/+$/, ''),
    key: rememberKey(q.get('key')) ?? injected.key ?? '',
    user: q.get('user') || injected.user || tabUserId(),
    cacheMode: q.get('cache') || injected.cacheMode || 'local-cache-first',
    context,
    flags,
  };
}

// A stable anonymous id per browser tab, so a reload keeps the user's bucket.
function tabUserId() {
  const name = 'flagedge-demo-user';
  let id = sessionStorage.getItem(name);
  if (!id) {
    id = 'anon-' + Math.random().toString(36).slice(2, 10);
    sessionStorage.setItem(name, id);
  }
  return id;
}

// The key given in the query is kept for this tab only, so a reload still has it after
// hideKeyFromAddressBar() removed it from the URL.
function rememberKey(fromQuery) {
  const name = 'flagedge-demo-key';
  if (fromQuery !== null) sessionStorage.setItem(name, fromQuery);
  return sessionStorage.getItem(name);
}

// The key should not linger in the address bar (screenshots, shared links, history).
function hideKeyFromAddressBar() {
  const url = new URL(window.location.href);
  if (url.searchParams.has('key')) {
    url.searchParams.delete('key');
    window.history.replaceState(null, '', url);
  }
}

const GETTERS = {
  boolean: (client, key, fb) => client.getBooleanDetails(key, fb),
  string: (client, key, fb) => client.getStringDetails(key, fb),
  number: (client, key, fb) => client.getNumberDetails(key, fb),
  object: (client, key, fb) => client.getObjectDetails(key, fb),
};

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

const state = { renders: 0, changes: 0, cacheRefreshes: 0, status: 'NOT_READY', lastChanged: [], values: {}, tracked: 0 };
window.flagedgeDemo = state; // read by the end-to-end tests and handy in the console

function setStatus(status, message) {
  state.status = status;
  const el = $('provider-status');
  el.textContent = status;
  el.dataset.status = status;
  el.title = message || '';
}

function render(client, cfg) {
  const values = {};
  const rows = [];
  for (const [role, spec] of Object.entries(cfg.flags)) {
    const d = GETTERS[spec.type](client, spec.key, spec.fallback);
    values[role] = d;
    const shown = typeof d.value === 'object' ? JSON.stringify(d.value) : String(d.value);
    const row = $(`flag-${role}`);
    row.dataset.flagKey = spec.key;
    row.dataset.value = shown;
    row.dataset.variant = d.variant ?? '';
    row.dataset.reason = d.reason ?? '';
    row.querySelector('.key').textContent = spec.key;
    row.querySelector('.value').textContent = shown;
    row.querySelector('.variant').textContent = d.variant ?? '—';
    row.querySelector('.reason').textContent = d.errorCode ? `${d.reason} (${d.errorCode})` : d.reason;
    rows.push(`${spec.key}=${shown}`);
  }

  // The kill switch: payments paused -> incident banner on, pay button off.
  const paymentsOn = values.payments.value !== false;
  $('incident-banner').hidden = paymentsOn;
  const pay = $('pay-button');
  pay.disabled = !paymentsOn;
  pay.dataset.enabled = String(paymentsOn);

  // The experiment arm paints the pay button.
  const arm = values.experiment.variant;
  const colour = ARM_COLOURS[arm] ?? NO_ARM_COLOUR;
  pay.style.backgroundColor = colour;
  pay.dataset.color = colour;
  $('experiment-arm').textContent = arm ?? '(none)';
  $('experiment-arm').dataset.arm = arm ?? '';

  const greeting = $('greeting-banner');
  greeting.textContent = String(values.greeting.value);
  greeting.hidden = !values.greeting.value;

  $('shipping-threshold').textContent = String(values.shipping.value);

  state.renders += 1;
  state.values = Object.fromEntries(Object.entries(values).map(([r, d]) => [r, d.value]));
  state.variants = Object.fromEntries(Object.entries(values).map(([r, d]) => [r, d.variant ?? null]));
  $('render-count').textContent = String(state.renders);
  $('summary').textContent = rows.join(' ');
}

// Workaround for @openfeature/ofrep-web-provider 0.4.3: when the SSE connection is refused
// on reconnect (401/429/503), the provider re-fetches and reconnects by itself after a
// backoff, but emits neither CONFIGURATION_CHANGED nor READY for what that re-fetch brought,
// so an event-driven page would keep showing old values. While the SDK says STALE, re-read
// the provider's in-memory cache (no network) once a second and re-render when it differs.
let staleWatch;
function watchCacheWhileStale(client, cfg) {
  if (staleWatch) return;
  staleWatch = setInterval(() => {
    if (client.providerStatus !== 'STALE') {
      clearInterval(staleWatch);
      staleWatch = undefined;
      return;
    }
    const now = Object.values(cfg.flags)
      .map((spec) => JSON.stringify(GETTERS[spec.type](client, spec.key, spec.fallback).value));
    const shownNow = Object.keys(cfg.flags).map((role) => JSON.stringify(state.values[role]));
    if (now.join() !== shownNow.join()) {
      state.cacheRefreshes += 1;
      render(client, cfg);
    }
  }, 1000);
}

async function main() {
  const cfg = readConfig();
  hideKeyFromAddressBar();
  $('user').textContent = cfg.user;
  $('base-url').textContent = cfg.baseUrl;

  const provider = new OFREPWebProvider({
    baseUrl: cfg.baseUrl,
    headers: cfg.key ? [['Authorization', `Bearer ${cfg.key}`]] : [],
    changeDetection: 'sse',
    cacheMode: cfg.cacheMode,
  }, console);
  const client = OpenFeature.getClient();
  Object.defineProperty(state, 'client', { value: client }); // console/test access, not JSON

  // The status shown is the SDK's own (client.providerStatus). Note: the OFREP web provider
  // (0.4.3) emits STALE when its SSE connection drops but no READY when it comes back, so
  // the SDK reports STALE after a reconnect even though changes flow again.
  client.addHandler(ProviderEvents.Ready, () => {
    setStatus(client.providerStatus);
    render(client, cfg);
  });
  client.addHandler(ProviderEvents.ConfigurationChanged, (details) => {
    state.changes += 1;
    state.lastChanged = details?.flagsChanged ?? [];
    $('change-count').textContent = String(state.changes);
    setStatus(client.providerStatus);
    render(client, cfg);
  });
  client.addHandler(ProviderEvents.Stale, (d) => {
    setStatus(client.providerStatus, d?.message);
    watchCacheWhileStale(client, cfg);
  });
  client.addHandler(ProviderEvents.Error, (d) => setStatus(client.providerStatus, d?.message));

  // A purchase is the experiment's conversion: tracked to flagedge (POST /v1/track).
  const tracker = createTracker({
    baseUrl: cfg.baseUrl, key: cfg.key, flushMs: 250,
    onSent: (accepted) => {
      state.tracked += accepted;
      $('tracked-count').textContent = String(state.tracked);
    },
  });
  $('pay-button').addEventListener('click', () => {
    tracker.track('purchase', { targetingKey: cfg.user }, { value: 42.5 });
  });

  await OpenFeature.setContext({ targetingKey: cfg.user, ...cfg.context });
  try {
    await OpenFeature.setProviderAndWait(provider);
  } catch (err) {
    setStatus(client.providerStatus, String(err));
  }
  render(client, cfg);
}

main().catch((err) => {
  console.error('flagedge demo failed', err);
  setStatus('ERROR', String(err));
});
