// Live events (GET /v1/events, read by the page's one stream in app.js), newest first.
import { h, clear } from './dom.js';

const KEEP = 500;
// Every event since the page was loaded (the newest KEEP).
export const eventLog = {
  items: [],
  push(e) {
    this.items.push(e);
    if (this.items.length > KEEP) this.items.shift();
  },
};

export function eventsView(ctx) {
  const list = h('ol', { id: 'events', class: 'events', reversed: true });
  const render = () => {
    clear(list);
    for (let i = eventLog.items.length - 1; i >= 0; i--) {
      const e = eventLog.items[i];
      list.append(h('li', {}, h('strong', {}, e.event), ' ', h('span', { class: 'muted' }, e.id === null ? '' : '#' + e.id),
                    h('pre', { class: 'diff' }, typeof e.data === 'string' ? e.data : JSON.stringify(e.data, null, 1))));
    }
  };
  const off = ctx.onEvents(() => render());
  ctx.main.append(h('section', { class: 'content full' }, h('h2', {}, 'Live events'),
                    h('p', { class: 'muted' }, 'What the daemon changes, as it happens (since this page was loaded).'),
                    list));
  render();
  return { unmount: off };
}
