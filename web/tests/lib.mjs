// Shared bits of the browser tests: argument parsing, Chromium launch, page logs,
// failure reporting and the run/exit wrapper.

import { chromium } from 'playwright-core';

export function parseArgs(argv, spec) {
  const out = {};
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new Error(`unexpected argument: ${arg}`);
    const eq = arg.indexOf('=');
    const key = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    if (!(key in spec)) throw new Error(`unknown option --${key}`);
    if (spec[key] === false) {
      // Boolean flag (spec default `false`): `--flag` or `--flag=true|false`.
      out[key] = eq > 0 ? !['false', '0', 'no'].includes(arg.slice(eq + 1)) : true;
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new Error(`--${key} needs a value`);
    out[key] = value;
  }
  for (const [key, def] of Object.entries(spec)) {
    if (out[key] === undefined) {
      if (def === undefined) throw new Error(`missing --${key}`);
      out[key] = def;
    }
  }
  return out;
}

/**
 * Parses `process.argv` with `spec` (see parseArgs), then `check(args)` (may
 * normalise values, throws on bad ones). On error prints the usage and exits 2.
 */
export function parseCli(spec, usage, check = () => {}) {
  try {
    const args = parseArgs(process.argv.slice(2), spec);
    check(args);
    return args;
  } catch (err) {
    console.error(`usage error: ${err.message}`);
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
}

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

export function defaultChromium() {
  return process.env.OXCAST_CHROMIUM || process.env.CHROMIUM || '/usr/bin/chromium';
}

export async function launch(executablePath) {
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
}

/** Collects console errors, page errors and failed requests of a page. */
export function collectLogs(page) {
  const logs = { console: [], page: [], requests: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error') logs.console.push(msg.text());
  });
  page.on('pageerror', (err) => logs.page.push(String(err && err.stack ? err.stack : err)));
  page.on('requestfailed', (req) => {
    const f = req.failure();
    logs.requests.push(`${req.method()} ${req.url()}: ${f ? f.errorText : 'failed'}`);
  });
  page.on('response', (res) => {
    if (res.status() >= 400) logs.requests.push(`${res.request().method()} ${res.url()}: HTTP ${res.status()}`);
  });
  return logs;
}

export function printLogs(logs) {
  const sections = [
    ['console errors', logs.console],
    ['page errors', logs.page],
    ['failed requests', logs.requests],
  ];
  for (const [name, lines] of sections) {
    if (lines.length === 0) continue;
    console.error(`${name}:`);
    for (const l of lines) console.error(`  ${l}`);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A test failure: reported by its message alone (other errors with their stack). */
export class Failure extends Error {}

/** Fatal lines of a player hook's `errors` (entries start with 'fatal' / 'non-fatal'). */
export const fatalErrors = (s) => (s ? s.errors.filter((e) => e.startsWith('fatal')) : []);

/** The last observed player state (without its errors), then the player's error lines. */
export function printPlayerState(last) {
  console.error(`player state: ${JSON.stringify({ ...last, errors: undefined })}`);
  if (last.errors.length) {
    console.error('player errors:');
    for (const e of last.errors) console.error(`  ${e}`);
  }
}

/**
 * Runs `run()` and exits: 0 when it resolves; 1 when it throws, after printing
 * `FAIL (label): reason`, `onFail()` (extra state) and the page logs on stderr.
 * `logs()` / `browser()` read the test's current logs and browser (set by run).
 */
export async function runTest(run, { label, onFail = () => {}, logs, browser }) {
  let code = 0;
  try {
    await run();
  } catch (err) {
    code = 1;
    console.error(`FAIL (${label}): ${err instanceof Failure ? err.message : err.stack || err}`);
    onFail();
    printLogs(logs());
  } finally {
    const b = browser();
    if (b) await b.close().catch(() => {});
  }
  process.exit(code);
}
