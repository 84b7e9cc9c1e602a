// DOM helpers. Everything the daemon sends is shown as text: nodes are built with createElement and textContent,
// never from HTML strings, so a rule comment like <img onerror=...> stays a string on the screen.

// h('div', {class: 'row', on: {click: f}, attrs: {'data-index': 3}}, 'text', childNode, ...)
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'on') for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (key === 'attrs') for (const [a, v] of Object.entries(value)) node.setAttribute(a, String(v));
    // CSSOM, not a style attribute: the page's CSP forbids inline style attributes.
    else if (key === 'style') Object.assign(node.style, value);
    else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'hidden' || key === 'type' ||
             key === 'placeholder' || key === 'title' || key === 'id' || key === 'name' || key === 'href' ||
             key === 'htmlFor' || key === 'min' || key === 'max' || key === 'rows' || key === 'autocomplete' ||
             key === 'selected' || key === 'spellcheck' || key === 'reversed') node[key] = value;
    else throw new Error('h(): unknown property ' + key);
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

const SVG = 'http://www.w3.org/2000/svg';

// A small line graph of `values` (numbers), scaled to its maximum.
export function sparkline(values, width = 90, height = 18) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.setAttribute('class', 'spark');
  if (values.length < 2) return svg;
  const max = Math.max(...values, 1e-9);
  const step = width / (values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (v / max) * (height - 2)).toFixed(1)}`);
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('points', points.join(' '));
  svg.appendChild(line);
  return svg;
}

export function formatCount(n) {
  if (n < 1000) return String(n);
  const units = ['K', 'M', 'G', 'T', 'P'];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return v.toFixed(v < 10 ? 1 : 0) + units[u];
}

export function formatRate(perSecond) {
  if (!perSecond) return '0/s';
  return (perSecond < 10 ? perSecond.toFixed(1) : formatCount(Math.round(perSecond))) + '/s';
}

export function formatSeconds(s) {
  s = Math.max(0, Math.ceil(s));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h' + String(Math.floor((s % 3600) / 60)).padStart(2, '0') + 'm';
  return Math.floor(s / 86400) + 'd' + Math.floor((s % 86400) / 3600) + 'h';
}
