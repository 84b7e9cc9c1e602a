// Tables → chains → rules. The chain's rules are a virtual list (only the rows on screen exist in the DOM), with
// counters and a rate graph per rule from the daemon's counter samples (GET .../rates, polled for the chain on
// screen only), owner and TTL countdown, a filter, and add / delete / move.
import * as api from './api.js';
import { h, clear, sparkline, formatCount, formatRate, formatSeconds } from './dom.js';

const ROW_HEIGHT = 28;
const RELOAD_EVENTS = new Set(['commit', 'ttl_expired', 'drift_repaired', 'reconciled', 'confirm_rolled_back',
                               'foreign_change']);

// The spec without the owner tag iptkitd adds (-m comment --comment "iptkit:OWNER:ID"), for a delete by owner.
function untagged(spec) {
  return spec.replace(/ -m comment --comment "?iptkit:[a-z0-9-]+:[A-Za-z0-9._-]+"?/, '');
}

export function rulesView(ctx) {
  const [family = 'ipv4', tableParam, chainParam] = ctx.params;
  const state = {
    family: family === 'ipv6' ? 'ipv6' : 'ipv4',
    table: tableParam || 'filter',
    chain: chainParam || 'INPUT',
    ruleset: null,
    chain_obj: null,
    filtered: [],      // rules shown (after the filter), in chain order
    filter: '',
    rates: new Map(),  // index -> {spec, pps, samples}
    fetchedAt: 0,      // performance.now() of the last read (for TTL countdowns)
    selected: null,    // index of the rule shown in the details pane
    armed: null,       // {index, spec, until}: a delete clicked once
    interval: 5000,
  };
  const stop = [];

  const sidebar = h('aside', { class: 'sidebar' });
  const header = h('div', { class: 'chain-header' });
  const filterInput = h('input', { type: 'search', id: 'filter', placeholder: 'filter: address, port, comment, owner' });
  const countNote = h('span', { class: 'muted', id: 'shown' });
  const list = h('div', { class: 'rules', id: 'rules' });
  const spacer = h('div', { class: 'spacer' });
  const rows = h('div', { class: 'rows' });
  list.append(spacer, rows);
  const details = h('pre', { class: 'details', id: 'details' }, 'Select a rule to see its structured form.');
  const form = addRuleForm();
  const content = h('section', { class: 'content' }, header, h('div', { class: 'toolbar' }, filterInput, ' ', countNote),
                    list, form.node, h('h3', {}, 'Rule'), details);
  ctx.main.append(h('div', { class: 'layout' }, sidebar, content));

  filterInput.addEventListener('input', () => {
    state.filter = filterInput.value.trim().toLowerCase();
    applyFilter();
  });
  list.addEventListener('scroll', () => requestAnimationFrame(renderRows));

  async function load() {
    try {
      const rs = await api.get(`/v1/${state.family}?allow_lossy=true`);
      state.ruleset = rs;
      state.fetchedAt = performance.now();
    } catch (e) {
      clear(header).append(h('p', { class: 'error' }, e.message));
      return;
    }
    renderSidebar();
    selectChain();
  }

  function renderSidebar() {
    clear(sidebar);
    const select = h('select', { id: 'family', on: { change: () => {
      location.hash = `#/rules/${select.value}/filter/INPUT`;
    } } }, h('option', { value: 'ipv4', selected: state.family === 'ipv4' }, 'IPv4'),
    h('option', { value: 'ipv6', selected: state.family === 'ipv6' }, 'IPv6'));
    sidebar.append(select);
    for (const table of state.ruleset.tables) {
      sidebar.append(h('h4', {}, table.name, table.unrepresentable ? ' (unrepresentable)' : ''));
      const ul = h('ul', {});
      for (const chain of table.chains) {
        const here = table.name === state.table && chain.name === state.chain;
        ul.append(h('li', {}, h('a', {
          href: `#/rules/${state.family}/${api.enc(table.name)}/${api.enc(chain.name)}`,
          class: here ? 'active' : '',
        }, chain.name, ' ', h('span', { class: 'muted' }, String(chain.rules.length)))));
      }
      sidebar.append(ul);
    }
  }

  function selectChain() {
    const table = state.ruleset.tables.find((t) => t.name === state.table);
    state.chain_obj = table && table.chains.find((c) => c.name === state.chain);
    clear(header);
    if (!state.chain_obj) {
      header.append(h('p', { class: 'muted' }, `No chain ${state.chain} in ${state.family} ${state.table}.`));
      state.filtered = [];
      renderRows();
      return;
    }
    const c = state.chain_obj;
    header.append(h('h2', {}, `${state.table} / ${c.name}`),
                  c.policy ? h('span', { class: 'policy' }, 'policy ', c.policy, ' · ',
                               formatCount(c.counters.packets), ' packets, ', formatCount(c.counters.bytes), ' bytes')
                           : h('span', { class: 'muted' }, 'user chain'));
    applyFilter();
  }

  function applyFilter() {
    const rules = state.chain_obj ? state.chain_obj.rules : [];
    const words = state.filter.split(/\s+/).filter(Boolean);
    state.filtered = words.length === 0 ? rules : rules.filter((r) => {
      const text = (r.spec + ' ' + (r.owner || '')).toLowerCase();
      return words.every((w) => text.includes(w));
    });
    countNote.textContent = `${state.filtered.length} of ${rules.length} rules`;
    spacer.style.height = state.filtered.length * ROW_HEIGHT + 'px';
    renderRows();
  }

  function renderRows() {
    const first = Math.max(0, Math.floor(list.scrollTop / ROW_HEIGHT) - 5);
    const last = Math.min(state.filtered.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW_HEIGHT) + 5);
    clear(rows);
    const elapsed = (performance.now() - state.fetchedAt) / 1000;
    for (let i = first; i < last; i++) rows.append(ruleRow(state.filtered[i], i, elapsed));
  }

  function ruleRow(rule, position, elapsed) {
    const rate = state.rates.get(rule.index);
    const live = rate && rate.spec === untagged(rule.spec) ? rate : rate && rate.spec === rule.spec ? rate : null;
    const packets = live && live.last ? live.last[1] : rule.counters.packets;
    const bytes = live && live.last ? live.last[2] : rule.counters.bytes;
    let ttl = '';
    if (rule.ttl_remaining !== undefined && rule.ttl_remaining !== null) {
      ttl = 'ttl ' + formatSeconds(rule.ttl_remaining - elapsed);
    }
    const owned = !!rule.owner;
    const row = h('div', {
      class: 'row' + (state.selected === rule.index ? ' selected' : '') + (owned ? ' owned' : ''),
      style: { top: position * ROW_HEIGHT + 'px' },
      attrs: { 'data-index': rule.index },
      on: { click: () => showDetails(rule) },
    },
    h('span', { class: 'idx' }, String(rule.index)),
    h('span', { class: 'num', title: `${packets} packets` , attrs: { 'data-packets': packets } }, formatCount(packets)),
    h('span', { class: 'num', title: `${bytes} bytes` }, formatCount(bytes)),
    h('span', { class: 'rate', title: 'packets per second' }, live ? sparkline(live.pps_series) : '',
      ' ', live ? formatRate(live.pps) : ''),
    h('span', { class: 'spec', title: rule.spec }, rule.spec),
    h('span', { class: 'owner' }, owned ? rule.owner : ''),
    h('span', { class: 'ttl' }, ttl),
    h('span', { class: 'actions' }, ...actionButtons(rule)));
    return row;
  }

  function actionButtons(rule) {
    const stopClick = (fn) => (ev) => {
      ev.stopPropagation();
      fn(ev);
    };
    if (rule.owner && !rule.managed) {
      return [h('a', { href: '#/owners/' + api.enc(rule.owner), title: 'change it through its owner' }, 'owner doc')];
    }
    // Delete asks once more: the first click arms it for 3 s (kept in the state, as rows are rebuilt).
    const armed = state.armed && state.armed.index === rule.index && state.armed.spec === rule.spec &&
                  performance.now() < state.armed.until;
    const del = h('button', { type: 'button', class: 'danger', title: 'delete this rule', attrs: { 'data-action': 'delete' },
                              on: { click: stopClick(() => {
                                if (!armed) {
                                  state.armed = { index: rule.index, spec: rule.spec, until: performance.now() + 3000 };
                                  renderRows();
                                  setTimeout(renderRows, 3100);
                                  return;
                                }
                                state.armed = null;
                                deleteRule(rule);
                              }) } }, armed ? 'delete?' : '✕');
    if (rule.owner) return [del];
    const note = 'move (delete and insert in one transaction: its counters start again at 0)';
    return [
      h('button', { type: 'button', title: 'up: ' + note, attrs: { 'data-action': 'up' }, disabled: rule.index === 1 || !!rule.lossy,
                    on: { click: stopClick(() => moveRule(rule, rule.index - 1)) } }, '▲'),
      h('button', { type: 'button', title: 'down: ' + note, attrs: { 'data-action': 'down' },
                    disabled: rule.index === state.chain_obj.rules.length || !!rule.lossy,
                    on: { click: stopClick(() => moveRule(rule, rule.index + 1)) } }, '▼'),
      del];
  }

  function showDetails(rule) {
    state.selected = rule.index;
    const view = { ...rule };
    details.textContent = JSON.stringify(view, null, 2);
    renderRows();
  }

  function status(text, isError) {
    form.status.textContent = text;
    form.status.className = isError ? 'error' : 'ok';
  }

  async function deleteRule(rule) {
    const path = api.chainPath(state.family, state.table, state.chain);
    try {
      if (rule.managed) {
        await api.call('DELETE', path + '/rules', { spec: untagged(rule.spec), owner: rule.owner });
      } else {
        await api.call('DELETE', `${path}/rules/${rule.index}`, { expect: { spec: rule.spec } });
      }
      status(`Deleted rule ${rule.index}.`);
    } catch (e) {
      status(`Rule ${rule.index} was not deleted: ${e.message}`, true);
    }
    load();
  }

  async function moveRule(rule, to) {
    const where = { family: state.family, table: state.table, chain: state.chain };
    try {
      await api.call('POST', '/v1/transactions', { ops: [
        { delete: { ...where, index: rule.index, expect: { spec: rule.spec } } },
        { insert: { ...where, index: to, rule: { spec: rule.spec } } },
      ] });
      status(`Moved rule ${rule.index} to ${to} (its counters start again at 0).`);
    } catch (e) {
      status(`Rule ${rule.index} was not moved: ${e.message}`, true);
    }
    load();
  }

  function addRuleForm() {
    const spec = h('input', { type: 'text', id: 'add-spec', name: 'spec', placeholder: '-s 192.0.2.7 -p tcp --dport 22 -j DROP',
                              spellcheck: false });
    const where = h('select', { id: 'add-where' }, h('option', { value: 'append' }, 'append'),
                    h('option', { value: 'insert' }, 'insert at'));
    const index = h('input', { type: 'number', id: 'add-index', min: 1, value: 1 });
    const owner = h('input', { type: 'text', id: 'add-owner', name: 'owner', placeholder: 'owner (optional)' });
    const ttl = h('input', { type: 'text', id: 'add-ttl', name: 'ttl', placeholder: 'ttl: 90s, 10m (optional)' });
    const errors = {
      '/spec': h('div', { class: 'field-error', id: 'err-spec' }),
      '/owner': h('div', { class: 'field-error', id: 'err-owner' }),
      '/ttl': h('div', { class: 'field-error', id: 'err-ttl' }),
    };
    const statusLine = h('p', { id: 'add-status' });
    const node = h('form', { id: 'add-rule', class: 'add', on: { submit: async (ev) => {
      ev.preventDefault();
      for (const e of Object.values(errors)) e.textContent = '';
      statusLine.textContent = '';
      const body = { spec: spec.value.trim() };
      if (owner.value.trim()) body.owner = owner.value.trim();
      if (ttl.value.trim()) body.ttl = ttl.value.trim();
      const managed = body.owner || body.ttl;
      let query = '';
      if (where.value === 'insert') query = managed ? '?position=first' : '?position=' + Number(index.value || 1);
      try {
        const result = await api.call('POST', api.chainPath(state.family, state.table, state.chain) + '/rules' + query, body);
        statusLine.className = 'ok';
        statusLine.textContent = result.changed ? 'Added.' : 'Nothing changed (the same rule was there).';
        spec.value = '';
      } catch (e) {
        const field = errors[e.details.field] ? e.details.field : null;
        let text = e.message;
        if (e.details.token) text += ` — at “${e.details.token}”` + (e.details.column ? ` (column ${e.details.column})` : '');
        if (field) errors[field].textContent = text;
        else {
          statusLine.className = 'error';
          statusLine.textContent = text;
        }
      }
      load();
    } } },
    h('h3', {}, 'Add a rule'),
    h('div', { class: 'fields' },
      h('label', { class: 'wide' }, 'Spec', spec, errors['/spec']),
      h('label', {}, 'Where', where, index),
      h('label', {}, 'Owner', owner, errors['/owner']),
      h('label', {}, 'TTL', ttl, errors['/ttl']),
      h('button', { type: 'submit', class: 'primary', id: 'add-submit' }, 'Add')),
    h('p', { class: 'muted' }, 'With an owner or a TTL the rule is kept by iptkitd (re-applied if removed; gone when ' +
      'its TTL passes); "insert at" then means first among the owner\'s rules.'),
    statusLine);
    return { node, status: statusLine };
  }

  // ---- Counter rates for the chain on screen ----
  async function pollRates() {
    if (!state.chain_obj) return;
    try {
      // Only the rules on screen (give or take a screenful).
      const first = Math.max(0, Math.floor(list.scrollTop / ROW_HEIGHT) - 20);
      const last = Math.min(state.filtered.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW_HEIGHT) + 20);
      if (last <= first) return;
      const from = state.filtered[first].index;
      const to = state.filtered[last - 1].index;
      const r = await api.get(api.chainPath(state.family, state.table, state.chain) +
                              `/rates?first=${from}&count=${Math.min(to - from + 1, 2000)}`);
      state.interval = Math.max(1000, r.interval_ms);
      const rates = new Map();
      for (const rule of r.rules) {
        const s = rule.samples;
        const series = [];
        for (let i = 1; i < s.length; i++) series.push(Math.max(0, (s[i][1] - s[i - 1][1]) / ((s[i][0] - s[i - 1][0]) / 1000)));
        rates.set(rule.index, { spec: rule.spec, pps: rule.packets_per_second, pps_series: series, last: s[s.length - 1] });
      }
      state.rates = rates;
      renderRows();
    } catch {
      // sampling off or not yet done: no graphs
    }
  }
  let ratesTimer = null;
  const scheduleRates = async () => {
    await pollRates();
    ratesTimer = setTimeout(scheduleRates, state.interval);
  };

  let reloadTimer = null;
  stop.push(ctx.onEvents((e) => {
    if (!RELOAD_EVENTS.has(e.event)) return;
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(load, 300);
  }));
  // TTL countdowns: once a second, when the chain has TTL rules.
  const tick = setInterval(() => {
    if (state.chain_obj && state.chain_obj.rules.some((r) => r.ttl_remaining != null)) renderRows();
  }, 1000);

  load().then(scheduleRates);
  return {
    unmount() {
      for (const f of stop) f();
      clearTimeout(ratesTimer);
      clearTimeout(reloadTimer);
      clearInterval(tick);
    },
  };
}
