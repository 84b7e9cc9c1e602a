// What the dashboard tests and bench share: a network namespace with a veth peer, a real iptkitd serving it (its
// listener on the host's loopback), a token, and headless Chromium (Debian's /usr/bin/chromium through
// playwright-core). Everything is removed again by stop().
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const IPTKITD = process.env.IPTKITD || 'iptkitd';
export const UI_DIR = process.env.UI_DIR || path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../ui');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], ...opts });
}

export function inNs(ns, cmd, args, opts) {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

export async function waitFor(what, fn, timeoutMs = 15000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

// A namespace "NAME" with address 10.199.0.1/24 on a veth whose peer, 10.199.0.2/24, sits in "NAME-p".
export function makeNetns() {
  const name = `iptkit-ui-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
  const peer = name + '-p';
  run('ip', ['netns', 'add', name]);
  run('ip', ['netns', 'add', peer]);
  run('ip', ['-n', name, 'link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb', 'netns', peer]);
  run('ip', ['-n', name, 'addr', 'add', '10.199.0.1/24', 'dev', 'va']);
  run('ip', ['-n', peer, 'addr', 'add', '10.199.0.2/24', 'dev', 'vb']);
  for (const [n, dev] of [[name, 'va'], [peer, 'vb'], [name, 'lo'], [peer, 'lo']]) {
    run('ip', ['-n', n, 'link', 'set', dev, 'up']);
  }
  return {
    name,
    peer,
    remove() {
      for (const n of [name, peer]) {
        try {
          run('ip', ['netns', 'del', n]);
        } catch {
          // already gone
        }
      }
    },
  };
}

// Starts iptkitd on `ns` with its own state directory; resolves when it serves (its --ready-file).
// `counterInterval` is the daemon's counter_interval (1s for the tests' quick graphs; the bench uses the default).
export async function startDaemon(ns, extraArgs = [], { counterInterval = '1s' } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iptkit-ui-'));
  const ready = path.join(dir, 'ready.json');
  const logPath = path.join(dir, 'iptkitd.log');
  const log = fs.openSync(logPath, 'w');
  const args = ['--netns', ns, '--state-dir', path.join(dir, 'state'), '--listen', '127.0.0.1:0', '--ready-file', ready,
                '--ui-dir', UI_DIR, '--counter-interval', counterInterval, '--drift-interval', '1s', ...extraArgs];
  const child = spawn(IPTKITD, args, { stdio: ['ignore', log, log] });
  const exited = new Promise((r) => child.on('exit', r));
  await waitFor('iptkitd to serve', () => fs.existsSync(ready) || child.exitCode !== null, 30000);
  if (child.exitCode !== null) throw new Error('iptkitd exited: ' + fs.readFileSync(logPath, 'utf8'));
  const endpoint = JSON.parse(fs.readFileSync(ready, 'utf8')).endpoints.find((e) => e.startsWith('http'));
  const token = run(IPTKITD, ['token', 'create', '--state-dir', path.join(dir, 'state'), '--name', 'ui', '--scope', 'read',
                              '--scope', 'write']).trim();
  return {
    base: endpoint.replace(/\/$/, ''),
    token,
    pid: child.pid,
    log: () => fs.readFileSync(logPath, 'utf8'),
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
      fs.closeSync(log);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
}

export async function signIn(page, daemon, route = '') {
  await page.goto(daemon.base + '/ui/' + route);
  await page.fill('#token', daemon.token);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#nav:not([hidden])');
}
