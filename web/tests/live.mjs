#!/usr/bin/env node
// Watches a live stream on the live viewer page in headless Chromium and checks
// that it plays continuously at low latency (and, with --dvr, that the whole
// session is seekable and the LIVE jump works).
//
//   node web/tests/live.mjs --base http://127.0.0.1:PORT --stream ID \
//        [--seconds 12] [--max-latency 4] [--max-stall 0] [--dvr] [--chromium /usr/bin/chromium]
//
// 1. Opens /streams/ID?autoplay=1 and waits (≤ 40 s) until currentTime advances.
// 2. For --seconds, samples every 500 ms: currentTime must advance on every
//    sample, oxcastLive.latency() must be a number, and after a 3 s warm-up
//    every latency must be below --max-latency. No fatal player error. With
//    --max-stall S, currentTime may stand still for up to S seconds (an encoder
//    failover, say); the longest stall is reported as max_stall_s.
// 3. --dvr: seeks to 0.5 s (start of the session), needs playback to advance
//    from there (0.5 < currentTime ≤ ~6 after 3 s), then goLive() and needs the
//    latency back under --max-latency within 10 s.
// Passes: one JSON line on stdout, exit 0. Fails: the reason, the player state
// and page/console errors on stderr, exit 1 (2 for bad arguments).

import {
  parseCli,
  launch,
  collectLogs,
  defaultChromium,
  sleep,
  Failure,
  fatalErrors,
  printPlayerState,
  runTest,
} from './lib.mjs';

const START_TIMEOUT_MS = 40_000;
const SAMPLE_MS = 500;
const WARMUP_S = 3;
const DVR_TARGET_S = 0.5;
const DVR_PLAY_S = 3;
const DVR_MAX_TIME_S = 6.5; // 0.5 + 3 s of play + slack for a slow seek/start
const DVR_SEEK_TIMEOUT_MS = 15_000;
const GO_LIVE_TIMEOUT_MS = 10_000;

const args = parseCli(
  { base: undefined, stream: undefined, seconds: '12', 'max-latency': '4', 'max-stall': '0', dvr: false, chromium: defaultChromium() },
  'node web/tests/live.mjs --base URL --stream ID [--seconds 12] [--max-latency 4] [--max-stall 0] [--dvr] [--chromium PATH]',
  (a) => {
    a.seconds = Number(a.seconds);
    a.maxLatency = Number(a['max-latency']);
    a.maxStall = Number(a['max-stall']);
    if (!(a.maxStall >= 0)) throw new Error('--max-stall must be a number of seconds, 0 or more');
    if (!(a.seconds > 0)) throw new Error('--seconds must be a positive number');
    if (!(a.maxLatency > 0)) throw new Error('--max-latency must be a positive number');
  },
);

const base = args.base.replace(/\/+$/, '');
const url = `${base}/streams/${encodeURIComponent(args.stream)}?autoplay=1`;

let browser;
let logs = { console: [], page: [], requests: [] };
let last = null; // last observed player state

async function state(page) {
  return page.evaluate(() => {
    const p = window.oxcastLive;
    if (!p) return null;
    const v = p.video;
    const ranges = (r) => Array.from({ length: r.length }, (_, i) => [+r.start(i).toFixed(2), +r.end(i).toFixed(2)]);
    let latency = null;
    let atEdge = null;
    let levels = [];
    try {
      latency = p.latency();
      atEdge = p.atLiveEdge();
      levels = p.levels();
    } catch (e) {
      /* player not ready */
    }
    const hls = p.hls;
    return {
      engine: p.engine ?? null,
      phase: p.phase ?? null,
      time: v.currentTime,
      paused: v.paused,
      seeking: v.seeking,
      ended: v.ended,
      readyState: v.readyState,
      playbackRate: v.playbackRate,
      duration: v.duration === Infinity ? 'Infinity' : v.duration,
      videoHeight: v.videoHeight,
      buffered: ranges(v.buffered),
      seekable: ranges(v.seekable),
      latency: typeof latency === 'number' && Number.isFinite(latency) ? latency : latency === null ? null : String(latency),
      atLiveEdge: atEdge,
      liveSyncPosition: hls ? hls.liveSyncPosition : null,
      targetLatency: hls ? hls.targetLatency : null,
      levels: levels.map((l) => ({ index: l.index, height: l.height, bitrate: l.bitrate })),
      mediaError: v.error ? `${v.error.code}: ${v.error.message}` : null,
      errors: [...p.errors],
    };
  });
}

const round = (x, d = 3) => (typeof x === 'number' ? Number(x.toFixed(d)) : x);

function checkHealthy(s, phase) {
  const fatal = fatalErrors(s);
  if (fatal.length) throw new Failure(`fatal player error ${phase}: ${fatal.join(' | ')}`);
  if (s && s.mediaError) throw new Failure(`media element error ${phase}: ${s.mediaError}`);
  if (s && s.ended) throw new Failure(`playback ended ${phase} (currentTime ${s.time.toFixed(2)} s; did the stream stop?)`);
}

function stats(values) {
  if (values.length === 0) return { max: null, median: null, last: null, min: null };
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return {
    max: round(sorted[sorted.length - 1]),
    median: round(median),
    last: round(values[values.length - 1]),
    min: round(sorted[0]),
  };
}

async function waitForPlayback(page, started) {
  let first = null; // first sample with a positive, unpaused currentTime
  for (;;) {
    last = await state(page);
    checkHealthy(last, 'before playback started');
    if (last && !last.paused && last.readyState >= 2) {
      if (first === null) first = last.time;
      else if (last.time > first + 0.2) return;
    }
    if (Date.now() - started > START_TIMEOUT_MS) {
      throw new Failure(
        `playback did not start within ${START_TIMEOUT_MS / 1000} s` +
          (last
            ? ` (phase ${last.phase}, engine ${last.engine}, currentTime ${last.time.toFixed(2)} s, ` +
              `readyState ${last.readyState}, paused ${last.paused})`
            : ' (no window.oxcastLive hook)'),
      );
    }
    await sleep(200);
  }
}

async function run() {
  browser = await launch(args.chromium);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  logs = collectLogs(page);

  const started = Date.now();
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: START_TIMEOUT_MS });

  // 1. Playback starts.
  await waitForPlayback(page, started);
  const timeToPlay = Date.now() - started;

  // 2. Continuous playback at low latency.
  const samples = [];
  const measured = []; // latencies after the warm-up
  const sampleStart = Date.now();
  let prev = last;
  let lastAdvance = Date.now();
  let maxStall = 0;
  while (Date.now() - sampleStart < args.seconds * 1000) {
    await sleep(SAMPLE_MS);
    last = await state(page);
    const elapsed = (Date.now() - sampleStart) / 1000;
    checkHealthy(last, `at ${elapsed.toFixed(1)} s of sampling`);
    if (last.time > prev.time) {
      lastAdvance = Date.now();
    } else {
      const stalled = (Date.now() - lastAdvance) / 1000;
      maxStall = Math.max(maxStall, stalled);
      if (args.maxStall === 0 || stalled > args.maxStall) {
        throw new Failure(
          `currentTime stopped advancing at ${elapsed.toFixed(1)} s of sampling, for ${stalled.toFixed(1)} s ` +
            `(${prev.time.toFixed(3)} → ${last.time.toFixed(3)} s, paused ${last.paused}, readyState ${last.readyState})`,
        );
      }
    }
    if (typeof last.latency !== 'number') {
      throw new Failure(`oxcastLive.latency() is not a number at ${elapsed.toFixed(1)} s: ${JSON.stringify(last.latency)}`);
    }
    samples.push({ t: round(elapsed, 1), time: round(last.time), latency: round(last.latency) });
    if (elapsed >= WARMUP_S) {
      measured.push(last.latency);
      if (last.latency >= args.maxLatency) {
        throw new Failure(
          `latency ${last.latency.toFixed(2)} s ≥ --max-latency ${args.maxLatency} s at ${elapsed.toFixed(1)} s ` +
            `(latencies so far: ${samples.map((s) => s.latency).join(', ')})`,
        );
      }
    }
    prev = last;
  }
  if (measured.length === 0) throw new Failure(`no latency samples after the ${WARMUP_S} s warm-up; raise --seconds`);
  const live = {
    engine: last.engine,
    levels: last.levels,
    time_to_play_ms: timeToPlay,
    samples: samples.length,
    max_stall_s: round(maxStall, 1),
    latency_s: stats(measured),
    at_live_edge: last.atLiveEdge,
    seekable: last.seekable,
    video_height: last.videoHeight,
  };

  // 3. DVR: back to the start of the session, then back to live.
  let dvr = null;
  if (args.dvr) {
    const seekable = last.seekable;
    if (!seekable.length || seekable[0][0] > DVR_TARGET_S) {
      throw new Failure(`session start not seekable: seekable ranges ${JSON.stringify(seekable)} (need start ≤ ${DVR_TARGET_S} s)`);
    }
    const seekAt = Date.now();
    await page.evaluate((t) => window.oxcastLive.seekTo(t), DVR_TARGET_S);
    // Wait until the seek has landed near the start and playback moves again.
    let landed = null;
    for (;;) {
      await sleep(200);
      last = await state(page);
      checkHealthy(last, 'after seeking to the session start');
      if (!last.seeking && !last.paused && last.time >= DVR_TARGET_S && last.time < DVR_MAX_TIME_S) {
        if (landed === null) landed = last.time;
        else if (last.time > landed) break;
      } else {
        landed = null;
      }
      if (Date.now() - seekAt > DVR_SEEK_TIMEOUT_MS) {
        throw new Failure(
          `seek to ${DVR_TARGET_S} s did not resume playback within ${DVR_SEEK_TIMEOUT_MS / 1000} s ` +
            `(currentTime ${last.time.toFixed(2)} s, seeking ${last.seeking}, paused ${last.paused}, readyState ${last.readyState})`,
        );
      }
    }
    const seekMs = Date.now() - seekAt;
    const resumedAt = last.time;
    await sleep(DVR_PLAY_S * 1000);
    last = await state(page);
    checkHealthy(last, 'while playing from the session start');
    if (!(last.time > resumedAt) || last.time < DVR_TARGET_S || last.time > DVR_MAX_TIME_S) {
      throw new Failure(
        `after ${DVR_PLAY_S} s of DVR playback currentTime is ${last.time.toFixed(2)} s ` +
          `(resumed at ${resumedAt.toFixed(2)} s; expected ${DVR_TARGET_S} < t ≤ ${DVR_MAX_TIME_S})`,
      );
    }
    const dvrTime = last.time;
    const dvrLatency = last.latency;
    const edgeWhileDvr = last.atLiveEdge;

    const liveAt = Date.now();
    await page.evaluate(() => window.oxcastLive.goLive());
    for (;;) {
      await sleep(250);
      last = await state(page);
      checkHealthy(last, 'after goLive()');
      if (typeof last.latency === 'number' && last.latency < args.maxLatency && !last.seeking && !last.paused) break;
      if (Date.now() - liveAt > GO_LIVE_TIMEOUT_MS) {
        throw new Failure(
          `goLive(): latency not under ${args.maxLatency} s within ${GO_LIVE_TIMEOUT_MS / 1000} s ` +
            `(latency ${last.latency}, currentTime ${last.time.toFixed(2)} s, seeking ${last.seeking}, paused ${last.paused})`,
        );
      }
    }
    const backMs = Date.now() - liveAt;
    // Still playing after the jump.
    const t0 = last.time;
    await sleep(1000);
    last = await state(page);
    checkHealthy(last, 'after returning to live');
    if (!(last.time > t0)) throw new Failure(`playback not advancing after goLive() (${t0.toFixed(2)} → ${last.time.toFixed(2)} s)`);
    dvr = {
      seek_to_s: DVR_TARGET_S,
      seek_ms: seekMs,
      resumed_at_s: round(resumedAt),
      time_after_play_s: round(dvrTime),
      latency_while_dvr_s: round(dvrLatency),
      at_live_edge_while_dvr: edgeWhileDvr,
      go_live_ms: backMs,
      latency_after_go_live_s: round(last.latency),
      at_live_edge_after_go_live: last.atLiveEdge,
    };
  }

  console.log(
    JSON.stringify({
      ok: true,
      stream: args.stream,
      max_latency_s: args.maxLatency,
      seconds: args.seconds,
      ...live,
      dvr,
      nonfatal_errors: last.errors,
    }),
  );
}

await runTest(run, {
  label: `live stream ${args.stream}`,
  onFail: () => last && printPlayerState(last),
  logs: () => logs,
  browser: () => browser,
});
