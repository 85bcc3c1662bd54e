#!/usr/bin/env node
// Checks the streamer's live dashboard in headless Chromium.
//
//   node web/tests/dashboard.mjs --base http://127.0.0.1:PORT --stream ID \
//        [--points N] [--viewers N] [--alert KIND] [--expect-state STATE] \
//        [--timeout 60] [--chromium /usr/bin/chromium]
//
// Opens /streams/ID/dashboard and waits (≤ --timeout s) until, all at once:
// - #dash-state's data-state is --expect-state (default `live`);
// - with --points: every chart in #dash-charts holds at least N points
//   (its data-points);
// - with --viewers: #dash-viewers shows exactly N (data-value and text);
// - with --alert: #dash-alerts has an li[data-kind=KIND].
// The test hook window.oxcastDashboard must agree with the DOM (state, alerts).
// Passes: one JSON line on stdout
//   {"ok":true,"points":{series:n,…},"viewers":n,"alerts":[…],"state":"live"}
// and exit 0. Fails: the reason, the last page state and page/console errors
// on stderr, exit 1 (2 for bad arguments).

import { parseCli, launch, collectLogs, defaultChromium, sleep, Failure, runTest } from './lib.mjs';

const STATES = ['idle', 'live', 'reconnecting', 'ended'];
const SERIES = ['ingest_kbps', 'fps', 'encoder_speed', 'dropped_frames', 'keyframe_interval_s', 'viewers'];
const SAMPLE_MS = 250;

const count = (name, v) => {
  if (v === null) return null;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a whole number ≥ 0`);
  return n;
};

const args = parseCli(
  {
    base: undefined,
    stream: undefined,
    points: null,
    viewers: null,
    alert: null,
    'expect-state': 'live',
    timeout: '60',
    chromium: defaultChromium(),
  },
  'node web/tests/dashboard.mjs --base URL --stream ID [--points N] [--viewers N] [--alert KIND] [--expect-state idle|live|reconnecting|ended] [--timeout S] [--chromium PATH]',
  (a) => {
    a.points = count('points', a.points);
    a.viewers = count('viewers', a.viewers);
    a.timeout = Number(a.timeout);
    if (!(a.timeout > 0)) throw new Error('--timeout must be a positive number of seconds');
    if (!STATES.includes(a['expect-state'])) throw new Error(`--expect-state must be one of ${STATES.join(', ')}`);
    if (a.alert !== null && !/^[a-z_]+$/.test(a.alert)) throw new Error('--alert must be an alert kind (e.g. no_keyframe)');
  },
);

const base = args.base.replace(/\/+$/, '');
const url = `${base}/streams/${encodeURIComponent(args.stream)}/dashboard`;
const wantState = args['expect-state'];

let browser;
let logs = { console: [], page: [], requests: [] };
let last = null; // last observed page state

/** What the dashboard shows (DOM and test hook). */
function observe(page) {
  return page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    const value = (id) => {
      const node = $(id);
      if (!node) return { text: null, value: null };
      const v = node.dataset.value;
      return { text: node.textContent.trim(), value: v === undefined || v === '' ? null : Number(v) };
    };
    const hook = window.oxcastDashboard || null;
    const charts = [...document.querySelectorAll('#dash-charts [data-series]')].map((c) => ({
      series: c.dataset.series,
      points: c.dataset.points === undefined ? null : Number(c.dataset.points),
      canvas: Boolean(c.querySelector('canvas')),
    }));
    return {
      state: $('dash-state')?.dataset.state ?? null,
      publisher: $('dash-publisher')?.textContent.trim() ?? null,
      current: {
        bitrate: value('dash-bitrate'),
        fps: value('dash-fps'),
        speed: value('dash-speed'),
        dropped: value('dash-dropped'),
        keyframe: value('dash-keyframe'),
        viewers: value('dash-viewers'),
      },
      alerts: [...document.querySelectorAll('#dash-alerts li[data-kind]')].map((li) => li.dataset.kind),
      charts,
      error: $('dash-error') && !$('dash-error').hidden ? $('dash-error').textContent : null,
      hook: hook
        ? { samples: hook.samples(), state: hook.state(), alerts: hook.alerts(), viewers: hook.viewers() }
        : null,
    };
  });
}

/** Why `s` does not satisfy the arguments yet ('' when it does). */
function pending(s) {
  if (!s.hook) return 'window.oxcastDashboard not set';
  if (s.state !== wantState) return `state ${s.state}, waiting for ${wantState}`;
  if (s.charts.length !== SERIES.length) return `${s.charts.length} charts, expected ${SERIES.length}`;
  if (args.points !== null) {
    const short = s.charts.filter((c) => !(c.points >= args.points));
    if (short.length) return `charts below ${args.points} points: ${short.map((c) => `${c.series}=${c.points}`).join(', ')}`;
  }
  if (args.viewers !== null) {
    const v = s.current.viewers;
    if (v.value !== args.viewers || Number(v.text) !== args.viewers) {
      return `viewers ${JSON.stringify(v)}, waiting for ${args.viewers}`;
    }
  }
  if (args.alert !== null && !s.alerts.includes(args.alert)) return `alerts [${s.alerts.join(', ')}], waiting for ${args.alert}`;
  return '';
}

/** The hook and the DOM tell the same story (checked once the page settled). */
function checkConsistent(s) {
  if (s.hook.state !== s.state) throw new Failure(`oxcastDashboard.state() ${s.hook.state} but #dash-state ${s.state}`);
  if (JSON.stringify(s.hook.alerts) !== JSON.stringify(s.alerts)) {
    throw new Failure(`oxcastDashboard.alerts() ${JSON.stringify(s.hook.alerts)} but the list shows ${JSON.stringify(s.alerts)}`);
  }
  if (s.hook.viewers !== s.current.viewers.value) {
    throw new Failure(`oxcastDashboard.viewers() ${s.hook.viewers} but #dash-viewers ${JSON.stringify(s.current.viewers)}`);
  }
  const series = s.charts.map((c) => c.series).sort();
  if (JSON.stringify(series) !== JSON.stringify([...SERIES].sort())) throw new Failure(`chart series ${series.join(', ')}`);
  for (const c of s.charts) {
    if (c.points !== null && !c.canvas) throw new Failure(`chart ${c.series} has data-points but no canvas`);
    if (c.points !== null && c.points > 1800) throw new Failure(`chart ${c.series} holds ${c.points} points (> 1800)`);
  }
  if (args.points !== null && args.points > 0 && s.hook.samples < args.points) {
    throw new Failure(`oxcastDashboard.samples() ${s.hook.samples} below --points ${args.points}`);
  }
}

async function run() {
  browser = await launch(args.chromium);
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  logs = collectLogs(page);

  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 30_000 });
  const started = Date.now();
  let why = '';
  for (;;) {
    last = await observe(page);
    why = pending(last);
    if (!why) break;
    if (logs.page.length) throw new Failure(`page error: ${logs.page[0]}`);
    if (Date.now() - started > args.timeout * 1000) throw new Failure(`not within ${args.timeout} s: ${why}`);
    await sleep(SAMPLE_MS);
  }
  checkConsistent(last);
  if (logs.page.length) throw new Failure(`page error: ${logs.page[0]}`);
  const points = Object.fromEntries(last.charts.map((c) => [c.series, c.points ?? 0]));
  console.log(
    JSON.stringify({ ok: true, points, viewers: last.current.viewers.value, alerts: last.alerts, state: last.state }),
  );
}

await runTest(run, {
  label: `dashboard ${url}`,
  onFail: () => last && console.error(`page state: ${JSON.stringify(last)}`),
  logs: () => logs,
  browser: () => browser,
});
