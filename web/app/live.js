// Live updates: `GET /api/v1/events` read with fetch (so the bearer token stays in a header,
// which EventSource cannot send), parsed as server-sent events, handed on as (name, data).
// The stream is reopened after a drop (server restart, network), with a growing pause.

import { authHeaders } from './api.js';

const RETRY_MS = [1000, 2000, 5000, 10000, 30000];

/**
 * Follows the server's state changes until `stop()` is called. `onEvent(name, data)` gets each
 * event: `state` (on every connect), `data_changed`, `catalog_changed`, `lagged`.
 */
export function follow(onEvent) {
  let controller = null;
  let stopped = false;
  let failures = 0;

  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch('/api/v1/events', {
          headers: { Accept: 'text/event-stream', ...authHeaders() },
          signal: controller.signal,
        });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        failures = 0;
        await read(response.body, onEvent);
      } catch (e) {
        if (stopped) return;
        failures += 1;
      }
      if (stopped) return;
      await new Promise((r) => setTimeout(r, RETRY_MS[Math.min(failures, RETRY_MS.length - 1)]));
    }
  }

  run();
  return {
    stop() {
      stopped = true;
      controller?.abort();
    },
  };
}

/** Reads an event stream: blank-line separated blocks of `event:` and `data:` lines. */
async function read(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length === 0) continue; // a keep-alive comment
      let parsed = data.join('\n');
      try {
        parsed = JSON.parse(parsed);
      } catch {
        // not JSON (`lagged` carries a count): handed on as text
      }
      onEvent(name, parsed);
    }
  }
}
