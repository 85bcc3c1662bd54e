#!/usr/bin/env node
// Plays a ready video on the watch page in headless Chromium and forces the
// lowest quality.
//
//   node web/tests/play.mjs --base http://127.0.0.1:PORT --video ID --protocol hls|dash \
//        [--chromium /usr/bin/chromium]
//
// Passes (exit 0, one JSON line on stdout) when: playback reaches 5 s with no
// fatal player error, there are at least 2 quality levels, and after
// setLevel(lowest) the lowest level is the one on screen and playback advances
// 2 s more. Otherwise prints the reason (plus player errors, console errors,
// page errors and failed requests) on stderr and exits 1.

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

const START_TIMEOUT_MS = 60_000;
const SWITCH_TIMEOUT_MS = 30_000;
const PLAY_BEFORE_SWITCH_S = 5;
const ADVANCE_AFTER_SWITCH_S = 2;

const args = parseCli(
  { base: undefined, video: undefined, protocol: 'hls', chromium: defaultChromium() },
  'node web/tests/play.mjs --base URL --video ID --protocol hls|dash [--chromium PATH]',
  (a) => {
    if (!['hls', 'dash'].includes(a.protocol)) throw new Error('--protocol must be hls or dash');
  },
);

const base = args.base.replace(/\/+$/, '');
const url = `${base}/watch/${encodeURIComponent(args.video)}?protocol=${args.protocol}&autoplay=1`;

let browser;
let logs = { console: [], page: [], requests: [] };
let last = null; // last observed player state

async function state(page) {
  return page.evaluate(() => {
    const p = window.oxcastPlayer;
    if (!p) return null;
    const v = p.video;
    let levels = [];
    let current = -1;
    try {
      levels = p.levels();
      current = p.currentLevel();
    } catch (e) {
      /* player not ready */
    }
    return {
      protocol: p.protocol,
      engine: p.engine ?? null,
      time: v.currentTime,
      ended: v.ended,
      paused: v.paused,
      readyState: v.readyState,
      videoHeight: v.videoHeight,
      mediaError: v.error ? `${v.error.code}: ${v.error.message}` : null,
      errors: [...p.errors],
      levels,
      current,
    };
  });
}

function checkHealthy(s, phase) {
  const fatal = fatalErrors(s);
  if (fatal.length) throw new Failure(`fatal player error ${phase}: ${fatal.join(' | ')}`);
  if (s && s.ended) throw new Failure(`playback ended ${phase} (currentTime ${s.time.toFixed(2)} s)`);
}

async function run() {
  browser = await launch(args.chromium);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  logs = collectLogs(page);

  const started = Date.now();
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: START_TIMEOUT_MS });

  // 1. Play past 5 s.
  for (;;) {
    last = await state(page);
    checkHealthy(last, 'before reaching 5 s');
    if (last && last.time > PLAY_BEFORE_SWITCH_S) break;
    if (Date.now() - started > START_TIMEOUT_MS) {
      throw new Failure(
        `currentTime did not pass ${PLAY_BEFORE_SWITCH_S} s within ${START_TIMEOUT_MS / 1000} s` +
          (last ? ` (at ${last.time.toFixed(2)} s, readyState ${last.readyState}, paused ${last.paused})` : ' (no player hook)'),
      );
    }
    await sleep(200);
  }
  const reachedAt = Date.now();

  // 2. At least two levels.
  const levels = last.levels;
  if (!Array.isArray(levels) || levels.length < 2) {
    throw new Failure(`expected at least 2 quality levels, got ${JSON.stringify(levels)}`);
  }
  const lowest = [...levels].sort((a, b) => a.height - b.height || a.bitrate - b.bitrate)[0];
  const before = { level: last.current, height: last.videoHeight, time: last.time };

  // 3. Force the lowest level; wait until it is on screen and playback goes on 2 s.
  await page.evaluate((i) => window.oxcastPlayer.setLevel(i), lowest.index);
  const switchStart = Date.now();
  let onLowestSince = null; // currentTime when the lowest level was first seen on screen
  for (;;) {
    last = await state(page);
    const onLowest =
      last.current === lowest.index && (!lowest.height || last.videoHeight === lowest.height);
    if (onLowest && onLowestSince === null) onLowestSince = last.time;
    if (!onLowest) onLowestSince = null;
    if (onLowestSince !== null && last.time - onLowestSince >= ADVANCE_AFTER_SWITCH_S) break;
    checkHealthy(last, 'after switching to the lowest level');
    if (Date.now() - switchStart > SWITCH_TIMEOUT_MS) {
      throw new Failure(
        `lowest level (index ${lowest.index}, ${lowest.height}p) not playing for ${ADVANCE_AFTER_SWITCH_S} s ` +
          `within ${SWITCH_TIMEOUT_MS / 1000} s: current level ${last.current}, videoHeight ${last.videoHeight}, ` +
          `currentTime ${last.time.toFixed(2)} s` + (onLowestSince !== null ? ` (on lowest since ${onLowestSince.toFixed(2)} s)` : ''),
      );
    }
    await sleep(200);
  }
  checkHealthy({ ...last, ended: false }, 'at the end');

  const summary = {
    ok: true,
    protocol: last.protocol,
    engine: last.engine,
    video: args.video,
    levels: levels.map((l) => ({ index: l.index, height: l.height, bitrate: l.bitrate })),
    before_switch: before,
    lowest: { index: lowest.index, height: lowest.height, bitrate: lowest.bitrate },
    on_lowest_since_s: Number(onLowestSince.toFixed(3)),
    final_time_s: Number(last.time.toFixed(3)),
    video_height: last.videoHeight,
    time_to_5s_ms: reachedAt - started,
    switch_ms: Date.now() - switchStart,
    nonfatal_errors: last.errors,
  };
  console.log(JSON.stringify(summary));
}

await runTest(run, {
  label: `${args.protocol}, video ${args.video}`,
  onFail: () => last && printPlayerState(last),
  logs: () => logs,
  browser: () => browser,
});
