// The audit log: every change that reached the daemon's writer and the daemon's own work, newest first, with
// filters (the query parameters of GET /v1/audit) and paging.
import * as api from './api.js';
import { h, clear } from './dom.js';

export function auditView(ctx) {
  const fields = {
    principal: h('input', { type: 'text', id: 'audit-principal', placeholder: 'principal (token:NAME, iptkitd)' }),
    action: h('input', { type: 'text', id: 'audit-action', placeholder: 'action (append, ttl_expire, …)' }),
    result: h('input', { type: 'text', id: 'audit-result', placeholder: 'result (ok, error)' }),
  };
  const tableNode = h('table', { class: 'grid', id: 'audit' });
  const more = h('button', { type: 'button', hidden: true }, 'Older');
  const error = h('p', { class: 'error' });
  let before = null;

  async function page(reset) {
    if (reset) {
      before = null;
      clear(tableNode).append(h('tr', {}, ...['id', 'time', 'principal', 'action', 'result', 'message', 'diff'].map((c) => h('th', {}, c))));
    }
    const q = new URLSearchParams({ limit: '100' });
    for (const [k, input] of Object.entries(fields)) if (input.value.trim()) q.set(k, input.value.trim());
    if (before) q.set('before', before);
    try {
      const r = await api.get('/v1/audit?' + q.toString());
      error.textContent = '';
      for (const e of r.entries) {
        tableNode.append(h('tr', { class: e.result === 'ok' ? '' : 'failed' }, h('td', {}, String(e.id)), h('td', {}, e.time),
                           h('td', {}, e.principal), h('td', { class: 'action' }, e.action), h('td', {}, e.result),
                           h('td', {}, e.message), h('td', {}, h('pre', { class: 'diff' }, e.diff))));
      }
      before = r.next_before;
      more.hidden = !before;
    } catch (e) {
      error.textContent = e.message;
    }
  }
  more.addEventListener('click', () => page(false));
  ctx.main.append(h('section', { class: 'content full' }, h('h2', {}, 'Audit log'),
                    h('form', { class: 'toolbar', on: { submit: (ev) => {
                      ev.preventDefault();
                      page(true);
                    } } }, fields.principal, ' ', fields.action, ' ', fields.result, ' ',
                      h('button', { type: 'submit' }, 'Filter')),
                    error, tableNode, more));
  page(true);
  return { unmount() {} };
}
