// Owners: each owner's desired state (its document) beside what the kernel holds (the drift a repair would
// change), and applying a new document with a plan preview first and commit-confirm: the change is rolled back by
// the daemon unless confirmed in time (the banner at the top counts down the daemon's remaining time).
import * as api from './api.js';
import { h, clear, formatSeconds } from './dom.js';

export function ownersView(ctx) {
  const [selected] = ctx.params;
  const list = h('aside', { class: 'sidebar' });
  const pane = h('section', { class: 'content' });
  ctx.main.append(h('div', { class: 'layout' }, list, pane));

  async function loadList() {
    clear(list).append(h('h4', {}, 'Owners'));
    let owners = [];
    try {
      owners = (await api.get('/v1/owners')).owners;
    } catch (e) {
      list.append(h('p', { class: 'error' }, e.message));
      return;
    }
    const ul = h('ul', { id: 'owners' });
    for (const o of owners) {
      ul.append(h('li', {}, h('a', { href: '#/owners/' + api.enc(o.owner), class: o.owner === selected ? 'active' : '' },
                              o.owner, ' ', h('span', { class: 'muted' }, `${o.managed.length} managed`))));
    }
    list.append(ul);
    const name = h('input', { type: 'text', id: 'new-owner', placeholder: 'new owner name' });
    list.append(h('form', { on: { submit: (ev) => {
      ev.preventDefault();
      if (name.value.trim()) location.hash = '#/owners/' + api.enc(name.value.trim());
    } } }, name, ' ', h('button', { type: 'submit' }, 'Open')));
  }

  async function loadOwner(owner) {
    clear(pane).append(h('h2', {}, 'Owner ', owner));
    let view = null;
    try {
      view = await api.get('/v1/owners/' + api.enc(owner));
    } catch (e) {
      if (e.status !== 404) {
        pane.append(h('p', { class: 'error' }, e.message));
        return;
      }
    }
    if (view) {
      pane.append(h('p', { id: 'sync', class: view.in_sync ? 'ok' : 'warn' },
                    view.in_sync ? 'In sync: the kernel holds what this owner declares.'
                                 : 'Drift: the kernel differs from what this owner declares (repaired at the next drift check).'));
      if (view.drift && view.drift.length) {
        pane.append(h('h3', {}, 'Live difference'), h('pre', { class: 'diff', id: 'drift' },
                                                       view.drift.map((d) => typeof d === 'string' ? d : JSON.stringify(d)).join('\n')));
      }
      if (view.managed.length) {
        const table = h('table', { class: 'grid' }, h('tr', {}, h('th', {}, 'chain'), h('th', {}, 'spec'),
                                                      h('th', {}, 'position'), h('th', {}, 'ttl')));
        for (const m of view.managed) {
          table.append(h('tr', {}, h('td', {}, `${m.family} ${m.table} ${m.chain}`), h('td', { class: 'spec' }, m.spec),
                         h('td', {}, m.position), h('td', {}, m.ttl_remaining == null ? 'permanent' : formatSeconds(m.ttl_remaining))));
        }
        pane.append(h('h3', {}, 'Managed rules'), table);
      }
    } else {
      pane.append(h('p', { class: 'muted' }, 'This owner has no state yet: write its first document below.'));
    }
    const doc = view && view.document ? stripDerived(view.document)
                                      : { family: 'ipv4', chains: [], hooks: [] };
    const editor = h('textarea', { id: 'document', rows: 16, spellcheck: false,
                                   value: JSON.stringify(doc, null, 2) });
    const confirmWithin = h('input', { type: 'number', id: 'confirm-within', min: 5, value: 60 });
    const result = h('div', { id: 'plan' });
    const body = () => {
      try {
        return JSON.parse(editor.value);
      } catch (e) {
        result.replaceChildren(h('p', { class: 'error' }, 'The document is not JSON: ' + e.message));
        return null;
      }
    };
    const path = '/v1/owners/' + api.enc(owner);
    const plan = async () => {
      const b = body();
      if (!b) return;
      try {
        const r = await api.call('PUT', path + '?dry_run=1', b);
        result.replaceChildren(planView(r, 'Plan (nothing applied yet)'));
      } catch (e) {
        result.replaceChildren(errorView(e));
      }
    };
    const apply = async () => {
      const b = body();
      if (!b) return;
      try {
        const r = await api.call('PUT', `${path}?confirm_within=${Number(confirmWithin.value) || 60}`, b);
        result.replaceChildren(planView(r, 'Applied'));
        if (r.transaction && r.confirm_deadline) ctx.trackConfirm(r.transaction);
      } catch (e) {
        result.replaceChildren(errorView(e));
      }
      loadList();
    };
    pane.append(h('h3', {}, 'Desired state (JSON document)'), editor,
                h('div', { class: 'toolbar' },
                  h('button', { type: 'button', id: 'plan-button', on: { click: plan } }, 'Plan'), ' ',
                  h('button', { type: 'button', class: 'primary', id: 'apply-button', on: { click: apply } }, 'Apply'),
                  ' with confirmation within ', confirmWithin, ' s ',
                  h('span', { class: 'muted' }, '(rolled back by the daemon unless confirmed in time)')),
                result);
  }

  loadList();
  if (selected) loadOwner(selected);
  else pane.append(h('p', { class: 'muted' }, 'Choose an owner.'));
  return { unmount() {} };
}

// The document as the daemon shows it carries structured fields beside each spec; the spec alone says it all.
function stripDerived(doc) {
  const slim = (r) => (r.spec ? { spec: r.spec } : r);
  return {
    family: doc.family,
    chains: (doc.chains || []).map((c) => ({ table: c.table, name: c.name, rules: (c.rules || []).map(slim) })),
    hooks: (doc.hooks || []).map((k) => ({ table: k.table, chain: k.chain, position: k.position, spec: k.spec })),
  };
}

function planView(r, title) {
  const node = h('div', { class: 'plan' }, h('h3', {}, title, r.changed ? '' : ' — nothing to change'));
  if (r.steps && r.steps.length) node.append(h('ul', {}, ...r.steps.map((s) => h('li', {}, s.description))));
  for (const t of r.tables || []) node.append(h('pre', { class: 'diff' }, `# ${t.family}\n${t.restore_text}`));
  for (const w of r.warnings || []) node.append(h('p', { class: 'warn' }, w));
  return node;
}

function errorView(e) {
  const node = h('div', { class: 'error' }, h('p', {}, e.message));
  if (e.details && e.details.field) node.append(h('p', {}, 'in ', h('code', {}, e.details.field)));
  return node;
}
