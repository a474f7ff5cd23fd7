// flagedge tracking for the browser: OpenFeature's `track` over HTTP (POST /v1/track).
//
// @openfeature/ofrep-web-provider 0.4.3 has no `track`, and the web SDK's `client.track`
// then does nothing. This helper sends what `track` would: named events with the user's
// targetingKey and an optional numeric value, batched (at most 100 per request, the
// endpoint's limit) and flushed after `flushMs` or when the page is hidden, so a purchase
// counts even when the next page load follows at once (fetch with keepalive).
//
//   import { createTracker } from './track.js';
//   const tracker = createTracker({ baseUrl, key });
//   tracker.track('purchase', { targetingKey: 'user-1' }, { value: 42.5 });
//
// flagedge attributes each event to the user's stored assignment in every running
// experiment (`flagedge insights experiment KEY --event purchase`). A client key is public:
// anyone holding it can send events, so treat these numbers as client-side analytics.

const MAX_BATCH = 100;

export function createTracker({ baseUrl, key = '', flushMs = 1000, onSent = () => {} }) {
  const url = `${baseUrl.replace(/\/+$/, '')}/v1/track`;
  let queue = [];
  let timer;

  async function send(events) {
    const headers = { 'Content-Type': 'application/json' };
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(url, {
      method: 'POST', headers, body: JSON.stringify({ events }), keepalive: true,
    });
    if (response.status !== 202) throw new Error(`track: HTTP ${response.status}`);
    return (await response.json()).accepted;
  }

  async function flush() {
    clearTimeout(timer);
    timer = undefined;
    while (queue.length) {
      const batch = queue.slice(0, MAX_BATCH);
      queue = queue.slice(MAX_BATCH);
      try {
        onSent(await send(batch), batch);
      } catch (err) {
        console.warn('flagedge track: events not sent', err);
        onSent(0, batch, err);
      }
    }
  }

  function track(event, context, details = {}) {
    const targetingKey = context?.targetingKey;
    if (!event || !targetingKey) throw new Error('track needs an event name and a targetingKey');
    const item = { event, targetingKey };
    if (typeof details.value === 'number' && Number.isFinite(details.value)) item.value = details.value;
    queue.push(item);
    if (queue.length >= MAX_BATCH) flush();
    else if (!timer) timer = setTimeout(flush, flushMs);
  }

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') flush();
  });
  return { track, flush };
}
