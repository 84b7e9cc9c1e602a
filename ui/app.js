// The dashboard's shell: sign-in, navigation (#/rules/FAMILY/TABLE/CHAIN, #/owners[/OWNER], #/sets[/SET], #/audit,
// #/events), the banner of changes waiting for confirmation, and one live event stream that the views listen to.
import * as api from './api.js';
import { h, clear, formatSeconds } from './dom.js';
import { rulesView } from './rules.js';
import { ownersView } from './owners.js';
import { setsView } from './sets.js';
import { auditView } from './audit.js';
import { eventsView, eventLog } from './events.js';

const main = document.getElementById('main');
let current = null;  // the mounted view: {unmount()}

// ---- Live events: one stream per browser, shared by its tabs; views subscribe. ----
// A browser keeps at most 6 connections per origin over HTTP/1.1, and an event stream holds one for good: with a
// stream per tab, the seventh tab would wait forever for its first request. So the tabs elect one of them (a Web
// Lock, released when that tab closes) to hold the stream, and it passes every event on to the others through a
// BroadcastChannel.
const listeners = new Set();
export function onEvents(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
function deliver(e) {
  if (!api.token()) return;
  eventLog.push(e);
  for (const fn of listeners) fn(e);
}
const channel = 'BroadcastChannel' in window ? new BroadcastChannel('iptkit-events') : null;
if (channel) channel.onmessage = (m) => deliver(m.data);

let streamAbort = null;
async function holdEventStream() {
  let after = 0;
  while (!streamAbort.signal.aborted) {
    try {
      after = await api.streamEvents(after, (e) => {
        deliver(e);
        if (channel) channel.postMessage(e);
      }, streamAbort.signal);
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (e.status === 401) return signOut('Your token is no longer accepted.');
    }
    await new Promise((r) => setTimeout(r, 2000));  // reconnect, resuming after the last id seen
  }
}
function runEventStream() {
  streamAbort = new AbortController();
  if (navigator.locks) {
    navigator.locks.request('iptkit-event-stream', { signal: streamAbort.signal }, holdEventStream).catch(() => {});
  } else {
    holdEventStream();
  }
}

// ---- Commit-confirm: changes applied with confirm_within wait here until confirmed or rolled back. ----
// The ids are kept in sessionStorage so that a reload shows them again; the countdown is the daemon's remaining
// time (remaining_ms), never the page's clock. The page never confirms on its own: rollback is the daemon's timer.
const PENDING_KEY = 'iptkit.pending';
const pending = new Map();  // id -> {deadline (performance.now() ms), node}

function savePending() {
  sessionStorage.setItem(PENDING_KEY, JSON.stringify([...pending.keys()]));
}

export async function trackConfirm(id) {
  let record;
  try {
    record = await api.get('/v1/transactions/' + api.enc(id));
  } catch (e) {
    pending.delete(id);
    savePending();
    return;
  }
  const box = document.getElementById('pending');
  const old = pending.get(id);
  if (old) old.node.remove();
  if (record.state !== 'pending') {
    pending.delete(id);
    savePending();
    const note = h('div', { class: 'banner ' + (record.state === 'confirmed' ? 'ok' : 'warn'), attrs: { 'data-transaction': id } },
                   `Transaction ${id}: ${record.state.replace('_', ' ')}. ${record.message}`,
                   h('button', { type: 'button', on: { click: () => note.remove() } }, 'Dismiss'));
    box.appendChild(note);
    return;
  }
  const countdown = h('strong', { class: 'countdown' });
  const status = h('span', { class: 'muted' });
  const confirm = h('button', { type: 'button', class: 'primary', on: { click: async () => {
    confirm.disabled = true;
    try {
      await api.call('POST', `/v1/transactions/${api.enc(id)}/confirm`);
    } catch (e) {
      status.textContent = e.message;
    }
    trackConfirm(id);
  } } }, 'Confirm');
  const node = h('div', { class: 'banner warn', attrs: { 'data-transaction': id } },
                 `Transaction ${id} is rolled back by the daemon unless confirmed: `, countdown, ' left. ', confirm, ' ',
                 status);
  box.appendChild(node);
  pending.set(id, { deadline: performance.now() + record.remaining_ms, node, countdown });
  savePending();
}

setInterval(() => {
  for (const [id, p] of pending) {
    const left = (p.deadline - performance.now()) / 1000;
    p.countdown.textContent = formatSeconds(left);
    if (left < -1 && !p.checking) {  // the daemon's timer has fired: show what it did
      p.checking = true;
      setTimeout(() => trackConfirm(id), 500);
    }
  }
}, 250);

// ---- Sign-in ----
function signInView(message) {
  const input = h('input', { type: 'password', id: 'token', placeholder: 'iptk_…', autocomplete: 'off' });
  const error = h('p', { class: 'error', id: 'signin-error' }, message || '');
  const form = h('form', { id: 'signin', on: { submit: async (ev) => {
    ev.preventDefault();
    api.setToken(input.value.trim());
    try {
      await api.get('/v1/version');
    } catch (e) {
      api.clearToken();
      error.textContent = e.status === 401 ? 'This token is not accepted: ' + e.message : e.message;
      return;
    }
    start();
  } } },
  h('h1', {}, 'Sign in'),
  h('p', {}, 'Paste an API token (iptkitd token create). It is kept in this tab only and sent in the ',
    h('code', {}, 'Authorization'), ' header of every request.'),
  input, ' ', h('button', { type: 'submit', class: 'primary' }, 'Sign in'), error);
  return form;
}

function signOut(message) {
  api.clearToken();
  if (streamAbort) streamAbort.abort();
  if (current) current.unmount();
  current = null;
  document.getElementById('nav').hidden = true;
  document.getElementById('signout').hidden = true;
  document.getElementById('whoami').textContent = '';
  clear(main).appendChild(signInView(message));
}

// ---- Routing ----
function route() {
  if (!api.token()) return;
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const view = parts[0] || 'rules';
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === view);
  if (current) current.unmount();
  clear(main);
  const ctx = { main, params: parts.slice(1), onEvents, trackConfirm };
  if (view === 'owners') current = ownersView(ctx);
  else if (view === 'sets') current = setsView(ctx);
  else if (view === 'audit') current = auditView(ctx);
  else if (view === 'events') current = eventsView(ctx);
  else current = rulesView(ctx);
}

async function start() {
  document.getElementById('nav').hidden = false;
  const out = document.getElementById('signout');
  out.hidden = false;
  out.onclick = () => signOut('Signed out.');
  try {
    const v = await api.get('/v1/version');
    document.getElementById('whoami').textContent =
        `iptkitd ${v.version} · ${v.backend} backend · netns ${v.netns || '(its own)'}`;
  } catch (e) {
    if (e.status === 401) return signOut('Your token is no longer accepted.');
  }
  runEventStream();
  for (const id of JSON.parse(sessionStorage.getItem(PENDING_KEY) || '[]')) trackConfirm(id);
  route();
}

window.addEventListener('hashchange', route);
if (api.token()) start();
else signOut('');
