// The dashboard end to end: headless Chromium against a real iptkitd managing a network namespace of its own.
// Run by ctest (tests/ui/CMakeLists.txt) as root; needs Debian's chromium and `npm ci` in tests/ui
// (scripts/install-deps.sh does both). Screenshots of every view go to $SCREENSHOT_DIR.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { inNs, launchBrowser, makeNetns, run, signIn, startDaemon, waitFor } from './harness.mjs';

const SHOTS = process.env.SCREENSHOT_DIR || path.resolve('ui-screenshots');
fs.mkdirSync(SHOTS, { recursive: true });

let ns;
let daemon;
let browser;

const save = () => inNs(ns.name, 'iptables-save', []);

async function api(method, route, body) {
  const r = await fetch(daemon.base + route, {
    method,
    headers: { Authorization: 'Bearer ' + daemon.token, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, json: await r.json().catch(() => null), headers: r.headers };
}

// A raw GET with a Host header of our choosing (fetch does not let us set it).
function rawGet(route, host) {
  const url = new URL(daemon.base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, path: route, headers: { Host: host } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end();
  });
}

before(async () => {
  ns = makeNetns();
  // A foreign rule whose comment is markup: the page must show it as text and never run it.
  inNs(ns.name, 'iptables', ['-A', 'INPUT', '-s', '10.199.0.99', '-m', 'comment', '--comment',
                             '<img src=x onerror=window.pwned=1>', '-j', 'ACCEPT']);
  daemon = await startDaemon(ns.name);
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (daemon) await daemon.stop();
  if (ns) ns.remove();
});

test('the page is served with a strict policy, only for allowed hosts, and the API refuses it no token', async () => {
  const r = await fetch(daemon.base + '/ui/');
  assert.equal(r.status, 200);
  const csp = r.headers.get('content-security-policy');
  for (const d of ["default-src 'self'", "script-src 'self'", "object-src 'none'", "frame-ancestors 'none'"]) {
    assert.ok(csp.includes(d), `CSP lacks ${d}: ${csp}`);
  }
  assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
  const html = await r.text();
  assert.ok(!/<script(?![^>]*\bsrc=)/.test(html), 'no inline script');
  assert.equal((await fetch(daemon.base + '/ui/app.js')).headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.equal(await rawGet('/ui/', 'rebind.example:80'), 421, 'a DNS-rebinding name is refused');
  assert.equal(await rawGet('/ui/', 'localhost'), 200);
  assert.equal((await fetch(daemon.base + '/ui/missing.js')).status, 404);
  assert.equal((await fetch(daemon.base + '/v1/ipv4')).status, 401, 'the data needs a token');
});

test('sign in, see rules, add one, watch its counters move with real packets, delete it', async () => {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  await page.goto(daemon.base + '/ui/');
  await page.fill('#token', 'iptk_wrong');
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#signin-error:has-text("not accepted")');
  await page.fill('#token', daemon.token);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#rules .row');

  // The foreign rule's comment is on the screen as text; nothing ran.
  const xss = page.locator('#rules .row .spec', { hasText: '<img src=x onerror=window.pwned=1>' });
  await xss.waitFor();
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.equal(await page.locator('img').count(), 0);

  // A bad spec: the daemon's error is shown beside the spec field, naming the token.
  await page.fill('#add-spec', '-p tcp --dportx 22 -j ACCEPT');
  await page.click('#add-submit');
  await page.waitForSelector('#err-spec:has-text("--dportx")');
  assert.ok(!save().includes('dportx'));

  await page.fill('#add-spec', '-s 10.199.0.2 -p udp --dport 9999 -j ACCEPT');
  await page.click('#add-submit');
  const row = page.locator('#rules .row', { hasText: '-s 10.199.0.2/32 -p udp -m udp --dport 9999 -j ACCEPT' });
  await row.waitFor();
  assert.ok(save().includes('-A INPUT -s 10.199.0.2/32 -p udp -m udp --dport 9999 -j ACCEPT'), save());

  // Six datagrams from the peer namespace over the veth (bash's /dev/udp: no extra tool needed).
  inNs(ns.peer, 'bash', ['-c', 'for i in 1 2 3 4 5 6; do echo x > /dev/udp/10.199.0.1/9999; done']);
  await waitFor('the counters on the page to show the datagrams', async () => {
    const packets = Number(await row.locator('.num').first().getAttribute('data-packets'));
    return packets >= 6;
  }, 20000);
  await page.screenshot({ path: path.join(SHOTS, 'rules.png') });

  // The structured view of a rule.
  await row.locator('.spec').click();
  await page.locator('#details').filter({ hasText: '"protocol"' }).waitFor();

  // Delete asks once more, then deletes.
  await row.locator('button[data-action=delete]').click();
  await row.locator('button[data-action=delete]:has-text("delete?")').click();
  await waitFor('the rule to leave the kernel', () => !save().includes('--dport 9999'));
  await page.locator('#rules .row', { hasText: '--dport 9999' }).waitFor({ state: 'detached' });
  await context.close();
});

test('move a rule up: one transaction (delete + insert), and the page shows the new order', async () => {
  inNs(ns.name, 'iptables', ['-N', 'MOVE']);
  for (const port of [1, 2, 3]) inNs(ns.name, 'iptables', ['-A', 'MOVE', '-p', 'tcp', '--dport', String(port), '-j', 'ACCEPT']);
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, daemon, '#/rules/ipv4/filter/MOVE');
  const third = page.locator('#rules .row', { hasText: '--dport 3' });
  await third.locator('button[data-action=up]').click();
  await waitFor('rule 3 to move up', () => /--dport 3 .*\n.*--dport 2 /.test(inNs(ns.name, 'iptables', ['-S', 'MOVE'])));
  await page.locator('#rules .row[data-index="2"]', { hasText: '--dport 3' }).waitFor();
  await context.close();
});

test('ten thousand rules: only the rows on screen exist, and the last one can be scrolled to', async () => {
  let text = '*filter\n:BIG - [0:0]\n';
  for (let i = 0; i < 10000; i++) text += `-A BIG -s 10.${(i >> 8) & 255}.${i & 255}.1/32 -j ACCEPT\n`;
  inNs(ns.name, 'iptables-restore', ['--noflush'], { input: text + 'COMMIT\n' });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  await signIn(page, daemon, '#/rules/ipv4/filter/BIG');
  await page.waitForSelector('#shown:has-text("10000 of 10000")');
  assert.ok(await page.locator('#rules .row').count() < 200, 'the list is virtual');
  await page.locator('#rules').evaluate((el) => { el.scrollTop = el.scrollHeight; });
  await page.locator('#rules .row[data-index="10000"]').waitFor();
  await page.fill('#filter', '10.39.14.1/32');  // rule 9999: i = 9998 = 39 * 256 + 14
  await page.waitForSelector('#shown:has-text("1 of 10000")');
  await page.locator('#rules .row[data-index="9999"]').waitFor();
  await context.close();
  inNs(ns.name, 'iptables', ['-F', 'BIG']);
  inNs(ns.name, 'iptables', ['-X', 'BIG']);
});

const DOC = JSON.stringify({
  family: 'ipv4',
  chains: [{ table: 'filter', name: 'WEB-IN', rules: [{ spec: '-p tcp --dport 80 -j ACCEPT' }] }],
  hooks: [{ table: 'filter', chain: 'INPUT', position: 'first', spec: '-j WEB-IN' }],
});

async function applyWithConfirm(page, seconds) {
  await page.fill('#document', DOC);
  await page.click('#plan-button');
  await page.waitForSelector('#plan:has-text("-N WEB-IN")');
  assert.ok(!save().includes('WEB-IN'), 'a plan changes nothing');
  await page.fill('#confirm-within', String(seconds));
  await page.click('#apply-button');
  const banner = page.locator('#pending .banner.warn');
  await banner.waitFor();
  const id = await banner.getAttribute('data-transaction');
  assert.ok(save().includes(':WEB-IN'), save());
  return id;
}

test('commit-confirm: closing the page rolls the change back; Confirm keeps it, also after a reload', async () => {
  let context = await browser.newContext();
  let page = await context.newPage();
  await signIn(page, daemon, '#/owners/web');
  const first = await applyWithConfirm(page, 4);
  await page.screenshot({ path: path.join(SHOTS, 'owners.png') });
  await context.close();  // nobody confirms
  await waitFor('the daemon to roll back', async () => (await api('GET', '/v1/transactions/' + first)).json.state === 'rolled_back', 20000);
  assert.ok(!save().includes('WEB-IN'), save());

  context = await browser.newContext();
  page = await context.newPage();
  await signIn(page, daemon, '#/owners/web');
  const second = await applyWithConfirm(page, 60);
  await page.reload();
  const banner = page.locator(`#pending .banner[data-transaction="${second}"]`);
  await banner.locator('.countdown').waitFor();
  const left = await banner.locator('.countdown').textContent();
  assert.match(left, /^(\d+s|1m00s)$/, 'a countdown from the daemon\'s remaining time');
  await banner.locator('button:has-text("Confirm")').click();
  await page.waitForSelector(`#pending .banner.ok[data-transaction="${second}"]`);
  assert.equal((await api('GET', '/v1/transactions/' + second)).json.state, 'confirmed');
  assert.ok(save().includes(':WEB-IN'));
  await page.goto(daemon.base + '/ui/#/owners/web');
  await page.waitForSelector('#sync');
  await context.close();
});

test('sets: entries with timeouts and comments are listed, added and deleted', async () => {
  inNs(ns.name, 'ipset', ['create', 'blocklist', 'hash:ip', 'timeout', '0', 'comment']);
  inNs(ns.name, 'ipset', ['add', 'blocklist', '198.51.100.1', 'comment', '<b>bold</b>']);
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  await signIn(page, daemon, '#/sets/blocklist');
  await page.locator('#entries tr[data-entry="198.51.100.1"]', { hasText: '<b>bold</b>' }).waitFor();
  assert.equal(await page.locator('#entries b').count(), 0, 'a comment is text');
  await page.fill('#entry-add', '192.0.2.7');
  await page.fill('#entry-timeout', '600');
  await page.fill('#entry-comment', 'from the dashboard');
  await page.click('#entry-submit');
  await page.locator('#entries tr[data-entry="192.0.2.7"]', { hasText: 'from the dashboard' }).waitFor();
  assert.match(inNs(ns.name, 'ipset', ['list', 'blocklist']), /192\.0\.2\.7 timeout \d+ comment "from the dashboard"/);
  await page.fill('#entry-add', 'not-an-address');
  await page.click('#entry-submit');
  await page.waitForSelector('#entry-status.error');
  await page.screenshot({ path: path.join(SHOTS, 'sets.png') });
  await page.locator('#entries tr[data-entry="192.0.2.7"] button[data-action=delete-entry]').click();
  await page.locator('#entries tr[data-entry="192.0.2.7"]').waitFor({ state: 'detached' });
  assert.ok(!inNs(ns.name, 'ipset', ['list', 'blocklist']).includes('192.0.2.7'));
  await context.close();
  inNs(ns.name, 'ipset', ['destroy', 'blocklist']);
});

test('audit and live events show what was done; tokens never reach the access log', async () => {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  // The page's stream starts "from now" (no ?after=): post only once the daemon has answered it, which it does after
  // subscribing, or the commit can come before the subscription and never be shown.
  const streamOpen = page.waitForResponse((r) => new URL(r.url()).pathname === '/v1/events');
  await signIn(page, daemon, '#/events');
  await streamOpen;
  await api('POST', '/v1/ipv4/tables/filter/chains/INPUT/rules', { spec: '-s 192.0.2.44 -j DROP' });
  await page.waitForSelector('#events li:has-text("commit")');
  await page.screenshot({ path: path.join(SHOTS, 'events.png') });
  await page.goto(daemon.base + '/ui/#/audit');
  for (const action of ['append', 'put_owner', 'confirm_rollback', 'confirm', 'transaction', 'delete']) {
    await page.locator('#audit td.action', { hasText: new RegExp(`^${action}$`) }).first().waitFor();
  }
  await page.screenshot({ path: path.join(SHOTS, 'audit.png') });
  await context.close();
  const log = daemon.log();
  assert.ok(log.includes('/ui/'), 'the access log lists the page requests');
  assert.ok(!log.includes(daemon.token), 'a token in the access log');
  assert.ok(!log.includes(daemon.token.slice(5, 20)), 'part of a token in the access log');
});
