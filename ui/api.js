// The REST API of iptkitd, as the page uses it. The token lives in this tab's sessionStorage only and is sent in
// the Authorization header of every call, the event stream included (fetch with a streamed body: EventSource
// cannot send headers). It never goes into a URL.

const TOKEN_KEY = 'iptkit.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}
export function setToken(t) {
  sessionStorage.setItem(TOKEN_KEY, t);
}
export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// An error answer of the daemon: {"error": {"code", "message", "details"}}.
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

function headers(withBody) {
  const h = { Authorization: 'Bearer ' + (token() || '') };
  if (withBody) h['Content-Type'] = 'application/json';
  return h;
}

export async function call(method, path, body, { signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      signal,
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'unreachable', 'the daemon cannot be reached: ' + e.message, {});
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(response.status, e.code || 'http_' + response.status, e.message || text || response.statusText,
                       e.details);
  }
  return data;
}

export const get = (path, opts) => call('GET', path, undefined, opts);

export function enc(s) {
  return encodeURIComponent(s);
}

export function chainPath(family, table, chain) {
  return `/v1/${enc(family)}/tables/${enc(table)}/chains/${enc(chain)}`;
}

// Reads GET /v1/events as Server-Sent Events and calls onEvent({id, event, data}) for each message, until
// `signal` aborts or the stream ends (then it returns the last id seen, to resume with ?after=).
export async function streamEvents(after, onEvent, signal) {
  const path = after > 0 ? '/v1/events?after=' + after : '/v1/events';
  const response = await fetch(path, { headers: headers(false), cache: 'no-store', signal });
  if (!response.ok) throw new ApiError(response.status, 'http_' + response.status, 'event stream refused', {});
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let last = after;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return last;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const message = { id: null, event: 'message', data: '' };
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;  // a comment: keep-alive, dropped events
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'id') message.id = Number(val);
        else if (field === 'event') message.event = val;
        else if (field === 'data') message.data += (message.data ? '\n' : '') + val;
      }
      if (!message.data && message.id === null) continue;
      if (message.id !== null) last = message.id;
      let data = null;
      try {
        data = JSON.parse(message.data);
      } catch {
        data = message.data;
      }
      onEvent({ id: message.id, event: message.event, data });
    }
  }
}
