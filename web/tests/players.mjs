#!/usr/bin/env node
// Plays a live stream with third-party players in their low-latency modes, in
// headless Chromium, and checks that each keeps playing close to live:
//
//   node web/tests/players.mjs --base http://127.0.0.1:PORT --stream ID \
//        [--players shaka-hls,shaka-dash,dashjs] [--seconds 6] [--max-latency 3.5]
//
// - shaka-hls:  Shaka Player, lowLatencyMode, /live/ID/master.m3u8
// - shaka-dash: Shaka Player, lowLatencyMode, /live/ID/manifest.mpd
// - dashjs:     dash.js (low latency from the MPD's ServiceDescription and
//               availabilityTimeOffset), /live/ID/manifest.mpd
//
// The page is the server's own /healthz (same origin as the manifests), with the
// player's npm build injected. For each player: waits (≤ 30 s) until currentTime
// advances, then samples every 500 ms for --seconds: currentTime must advance,
// and after a 2 s warm-up the latency (wall clock minus the playhead's program
// date, from the player's own API) must stay below --max-latency. One sample
// without progress is tolerated and reported (stalled_samples); two fail.
// Passes: one JSON line on stdout, exit 0. Fails: the reason and page logs on
// stderr, exit 1 (2 for bad arguments).

import { fileURLToPath } from 'node:url';
import { parseCli, launch, collectLogs, defaultChromium, sleep, Failure, runTest } from './lib.mjs';

const modules = fileURLToPath(new URL('../node_modules/', import.meta.url));
const START_TIMEOUT_MS = 30_000;
const SAMPLE_MS = 500;
const WARMUP_S = 2;
const MAX_STALLED_SAMPLES = 1;

const LIBS = {
  shaka: `${modules}shaka-player/dist/shaka-player.compiled${process.env.SHAKA_DEBUG ? '.debug' : ''}.js`,
  dashjs: `${modules}dashjs/dist/modern/umd/dash.all.min.js`,
};

const args = parseCli(
  {
    base: undefined,
    stream: undefined,
    players: 'shaka-hls,shaka-dash,dashjs',
    seconds: '6',
    'max-latency': '3.5',
    chromium: defaultChromium(),
  },
  'node web/tests/players.mjs --base URL --stream ID [--players LIST] [--seconds 6] [--max-latency 3.5]',
  (a) => {
    a.seconds = Number(a.seconds);
    a.maxLatency = Number(a['max-latency']);
    a.players = a.players.split(',').filter(Boolean);
    for (const p of a.players) {
      if (!['shaka-hls', 'shaka-dash', 'dashjs'].includes(p)) throw new Error(`unknown player ${p}`);
    }
    if (!(a.seconds > 0)) throw new Error('--seconds must be a positive number');
    if (!(a.maxLatency > 0)) throw new Error('--max-latency must be a positive number');
  },
);

const base = args.base.replace(/\/+$/, '');
let browser;
let logs = { console: [], page: [], requests: [] };

/** Starts `player` on `url` inside the page; exposes window.probe() for sampling. */
async function start(page, player, url) {
  await page.addScriptTag({ path: player === 'dashjs' ? LIBS.dashjs : LIBS.shaka });
  await page.evaluate(
    async ({ player, url }) => {
      document.body.innerHTML = '<video muted autoplay playsinline style="width:640px"></video>';
      const video = document.querySelector('video');
      window.playerErrors = [];
      if (player === 'dashjs') {
        const p = window.dashjs.MediaPlayer().create();
        p.updateSettings({
          streaming: { liveCatchup: { enabled: true } },
        });
        p.on(window.dashjs.MediaPlayer.events.ERROR, (e) =>
          window.playerErrors.push(JSON.stringify(e.error || e)),
        );
        p.initialize(video, url, true);
        window.probe = () => ({
          t: video.currentTime,
          latency: p.getCurrentLiveLatency(),
          paused: video.paused,
        });
        return;
      }
      window.shaka.polyfill.installAll();
      const p = new window.shaka.Player();
      await p.attach(video);
      p.configure({ streaming: { lowLatencyMode: true } });
      p.addEventListener('error', (e) => window.playerErrors.push(`${e.detail.code} ${JSON.stringify(e.detail.data)}`));
      try {
        await p.load(url);
      } catch (e) {
        window.playerErrors.push(`load: ${e.code !== undefined ? `${e.code} ${JSON.stringify(e.data)}` : e.stack || e}`);
      }
      video.play().catch(() => {});
      window.probe = () => {
        const d = p.getPlayheadTimeAsDate();
        return {
          t: video.currentTime,
          latency: d ? (Date.now() - d.getTime()) / 1000 : null,
          paused: video.paused,
        };
      };
    },
    { player, url },
  );
}

async function watch(player) {
  const page = await browser.newPage();
  logs = collectLogs(page);
  await page.goto(`${base}/healthz`);
  const url = player === 'shaka-hls' ? `${base}/live/${args.stream}/master.m3u8` : `${base}/live/${args.stream}/manifest.mpd`;
  await start(page, player, url);
  const errors = () => page.evaluate(() => window.playerErrors);
  const probe = () => page.evaluate(() => window.probe());
  const t0 = Date.now();
  let first = await probe();
  for (;;) {
    await sleep(SAMPLE_MS);
    const s = await probe();
    const e = await errors();
    if (e.length) throw new Failure(`${player}: player error before playing: ${e.join('; ')}`);
    if (s.t > first.t + 0.2) break;
    if (Date.now() - t0 > START_TIMEOUT_MS) {
      throw new Failure(`${player}: did not start within ${START_TIMEOUT_MS / 1000} s: ${JSON.stringify(s)}`);
    }
  }
  const latencies = [];
  let stalls = 0;
  let prev = await probe();
  const started = Date.now();
  while (Date.now() - started < args.seconds * 1000) {
    await sleep(SAMPLE_MS);
    const s = await probe();
    if (!(s.t > prev.t)) {
      // One half-second hiccup is tolerated (the test shares two cores with the encoder, the
      // cache and the other players); two are a stall.
      stalls += 1;
      if (stalls > MAX_STALLED_SAMPLES) {
        throw new Failure(`${player}: playback stalled at ${s.t} s (${stalls} samples): ${JSON.stringify(s)}`);
      }
    }
    if ((Date.now() - started) / 1000 >= WARMUP_S) {
      if (typeof s.latency !== 'number' || !Number.isFinite(s.latency)) {
        throw new Failure(`${player}: no latency reported: ${JSON.stringify(s)}`);
      }
      latencies.push(s.latency);
      if (s.latency > args.maxLatency) {
        throw new Failure(`${player}: latency ${s.latency.toFixed(2)} s above ${args.maxLatency} s`);
      }
    }
    prev = s;
  }
  const e = await errors();
  if (e.length) throw new Failure(`${player}: player errors: ${e.join('; ')}`);
  await page.close();
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    player,
    start_s: (started - t0) / 1000,
    stalled_samples: stalls,
    latency_s: { min: sorted[0], median: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1] },
  };
}

await runTest(
  async () => {
    browser = await launch(args.chromium);
    const results = [];
    for (const p of args.players) results.push(await watch(p));
    console.log(JSON.stringify({ ok: true, players: results }));
  },
  { label: 'players', logs: () => logs, browser: () => browser },
);
