// IP sets (GET /v1/sets): each set's type, options, size and references; its entries with timeouts, counters and
// comments (filterable), and adding or deleting an entry.
import * as api from './api.js';
import { h, clear, formatSeconds } from './dom.js';

export function setsView(ctx) {
  const [selected] = ctx.params;
  const list = h('aside', { class: 'sidebar' });
  const pane = h('section', { class: 'content' });
  ctx.main.append(h('div', { class: 'layout' }, list, pane));

  async function loadList() {
    clear(list).append(h('h4', {}, 'Sets'));
    try {
      const r = await api.get('/v1/sets');
      const ul = h('ul', { id: 'sets' });
      for (const s of r.sets) {
        ul.append(h('li', {}, h('a', { href: '#/sets/' + api.enc(s.name), class: s.name === selected ? 'active' : '' },
                                s.name, ' ', h('span', { class: 'muted' }, `${s.entry_count}`))));
      }
      list.append(ul);
      if (!r.sets.length) list.append(h('p', { class: 'muted' }, 'No sets in this namespace.'));
    } catch (e) {
      list.append(h('p', { class: 'error' }, e.message));
    }
  }

  async function loadSet(name) {
    clear(pane).append(h('h2', {}, 'Set ', name));
    let set;
    try {
      set = await api.get('/v1/sets/' + api.enc(name));
    } catch (e) {
      pane.append(h('p', { class: 'error' }, e.message));
      return;
    }
    const loadedAt = performance.now();
    const o = set.options || {};
    pane.append(h('p', { id: 'set-header' }, `${set.type} · ${set.entry_count} of ${set.capacity} entries · ` +
                  `${set.memory_bytes} bytes in memory · referenced by ${set.references} rule(s)`,
                  o.timeout === undefined ? '' : o.timeout === 0 ? ' · timeouts per entry' : ` · default timeout ${o.timeout}s`));
    const filter = h('input', { type: 'search', id: 'entry-filter', placeholder: 'filter entries' });
    const table = h('table', { class: 'grid', id: 'entries' });
    const render = () => {
      const q = filter.value.trim().toLowerCase();
      clear(table).append(h('tr', {}, ...['entry', 'timeout', 'packets', 'bytes', 'comment', ''].map((c) => h('th', {}, c))));
      const shown = set.entries.filter((e) => !q || (e.entry + ' ' + (e.comment || '')).toLowerCase().includes(q));
      for (const e of shown.slice(0, 1000)) {
        const left = e.timeout === undefined ? '' : e.timeout === 0 ? 'permanent'
                                                  : formatSeconds(e.timeout - (performance.now() - loadedAt) / 1000);
        table.append(h('tr', { attrs: { 'data-entry': e.entry } }, h('td', { class: 'spec' }, e.entry), h('td', {}, left),
                       h('td', {}, e.packets === undefined ? '' : String(e.packets)),
                       h('td', {}, e.bytes === undefined ? '' : String(e.bytes)), h('td', {}, e.comment || ''),
                       h('td', {}, h('button', { type: 'button', class: 'danger', attrs: { 'data-action': 'delete-entry' },
                                                 on: { click: () => del(e.entry) } }, 'delete'))));
      }
      if (shown.length > 1000) table.append(h('tr', {}, h('td', {}, `… ${shown.length - 1000} more (filter to see them)`)));
    };
    filter.addEventListener('input', render);
    const status = h('p', { id: 'entry-status' });
    const entry = h('input', { type: 'text', id: 'entry-add', placeholder: '192.0.2.7' });
    const timeout = h('input', { type: 'number', id: 'entry-timeout', min: 0, placeholder: 'timeout s' });
    const comment = h('input', { type: 'text', id: 'entry-comment', placeholder: 'comment' });
    const path = '/v1/sets/' + api.enc(name) + '/entries';
    async function del(value) {
      try {
        await api.call('DELETE', path, { entry: value });
        status.className = 'ok';
        status.textContent = `Deleted ${value}.`;
      } catch (e) {
        status.className = 'error';
        status.textContent = e.message;
      }
      loadList();
      loadSet(name);
    }
    const form = h('form', { class: 'toolbar', on: { submit: async (ev) => {
      ev.preventDefault();
      const body = { entry: entry.value.trim() };
      if (timeout.value !== '') body.timeout = Number(timeout.value);
      if (comment.value.trim()) body.comment = comment.value.trim();
      try {
        await api.call('POST', path, body);
        loadList();
        await loadSet(name);
      } catch (e) {
        status.className = 'error';
        status.textContent = e.message;
      }
    } } }, entry, ' ', timeout, ' ', comment, ' ', h('button', { type: 'submit', class: 'primary', id: 'entry-submit' }, 'Add entry'));
    pane.append(form, status, h('div', { class: 'toolbar' }, filter), table);
    render();
  }

  loadList();
  if (selected) loadSet(selected);
  else pane.append(h('p', { class: 'muted' }, 'Choose a set.'));
  return { unmount() {} };
}
