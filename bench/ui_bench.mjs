// The dashboard under a 10,000-rule chain, in headless Chromium against a real iptkitd on a namespace of its own:
// time to the first rows, time to scroll through all of them, and the daemon's CPU while 10 pages stay open at the
// default counter sampling interval (5 s). Needs what tests/ui needs (scripts/install-deps.sh). Run as root:
//   IPTKITD=build/release/tools/iptkitd/iptkitd node bench/ui_bench.mjs [--seconds 60] [--pages 10]
import fs from 'node:fs';
import os from 'node:os';

import { inNs, launchBrowser, makeNetns, startDaemon } from '../tests/ui/harness.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const SECONDS = opt('--seconds', 60);
const PAGES = opt('--pages', 10);
const RUNS = opt('--runs', 7);
const RULES = 10000;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const cpuTicks = (pid) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);  // utime + stime
};
const TICKS = 100;  // USER_HZ on Linux

const ns = makeNetns();
let daemon;
let browser;
try {
  let text = '*filter\n:BIG - [0:0]\n-A INPUT -j BIG\n';
  for (let i = 0; i < RULES; i++) text += `-A BIG -s 10.${(i >> 8) & 255}.${i & 255}.1/32 -p tcp --dport ${i % 65535 + 1} -j ACCEPT\n`;
  inNs(ns.name, 'iptables-restore', ['--noflush'], { input: text + 'COMMIT\n' });
  daemon = await startDaemon(ns.name, [], { counterInterval: '5s' });
  browser = await launchBrowser();
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  context.setDefaultTimeout(180000);  // a loaded machine
  await context.addInitScript((t) => sessionStorage.setItem('iptkit.token', t), daemon.token);

  const first = [];
  const scroll = [];
  for (let run = 0; run < RUNS; run++) {
    const page = await context.newPage();
    const t0 = performance.now();
    await page.goto(daemon.base + '/ui/#/rules/ipv4/filter/BIG');
    await page.waitForSelector('#rules .row[data-index="1"]');
    first.push(performance.now() - t0);
    const t1 = performance.now();
    await page.locator('#rules').evaluate(async (el) => {
      const frame = () => new Promise((r) => requestAnimationFrame(r));
      while (el.scrollTop + el.clientHeight < el.scrollHeight) {
        el.scrollTop += el.clientHeight;
        await frame();
      }
    });
    await page.waitForSelector(`#rules .row[data-index="${RULES}"]`);
    scroll.push(performance.now() - t1);
    await page.close();
  }
  console.log(`  time to first rows: ${first.map((x) => x.toFixed(0)).join(' ')} ms; full scroll: ${scroll.map((x) => x.toFixed(0)).join(' ')} ms`);

  const pages = [];
  for (let i = 0; i < PAGES; i++) {
    const page = await context.newPage();
    await page.goto(daemon.base + '/ui/#/rules/ipv4/filter/BIG');
    await page.waitForSelector('#rules .row[data-index="1"]');
    pages.push(page);
  }
  const idleStart = cpuTicks(daemon.pid);
  const wall0 = performance.now();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const cpu = (cpuTicks(daemon.pid) - idleStart) / TICKS / ((performance.now() - wall0) / 1000);

  console.log(`dashboard bench: ${RULES} rules in one chain, ${os.cpus().length} cores, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`  time to first rows      median ${median(first).toFixed(0)} ms over ${RUNS} loads (target < 1000 ms)`);
  console.log(`  full scroll of ${RULES} rules median ${median(scroll).toFixed(0)} ms`);
  console.log(`  daemon CPU, ${PAGES} pages open for ${SECONDS} s at the default 5 s sampling: ${(cpu * 100).toFixed(2)} % of one core (target < 5 %)`);
} finally {
  if (browser) await browser.close();
  if (daemon) await daemon.stop();
  ns.remove();
}
