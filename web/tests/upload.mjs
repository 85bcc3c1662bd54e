#!/usr/bin/env node
// Uploads a file through the index page in headless Chromium and waits until it
// is processed.
//
//   node web/tests/upload.mjs --base http://127.0.0.1:PORT --file PATH --title TITLE \
//        [--chromium /usr/bin/chromium]
//
// Passes (exit 0, prints {"video_id": "..."}) when the upload progress bar reaches
// 100 % and the page shows the video as ready (upload status and library card),
// within 180 s. Otherwise prints the reason on stderr and exits 1.

import { existsSync } from 'node:fs';
import { parseCli, launch, collectLogs, defaultChromium, sleep, Failure, runTest } from './lib.mjs';

const TIMEOUT_MS = 180_000;

const args = parseCli(
  { base: undefined, file: undefined, title: '', chromium: defaultChromium() },
  'node web/tests/upload.mjs --base URL --file PATH --title TITLE [--chromium PATH]',
  (a) => {
    if (!existsSync(a.file)) throw new Error(`no such file: ${a.file}`);
  },
);

const base = args.base.replace(/\/+$/, '');
let browser;
let logs = { console: [], page: [], requests: [] };
let last = null;

async function run() {
  browser = await launch(args.chromium);
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  logs = collectLogs(page);
  page.on('dialog', (d) => d.dismiss()); // never confirm anything (e.g. delete)

  const started = Date.now();
  await page.goto(`${base}/`, { waitUntil: 'domcontentloaded', timeout: 30_000 });
  await page.setInputFiles('#file-input', args.file);
  await page.fill('#title-input', args.title);
  await page.click('#upload-button', { timeout: 10_000 });

  let maxPercent = 0;
  for (;;) {
    last = await page.evaluate(() => {
      const status = document.getElementById('upload-status');
      const progress = document.getElementById('upload-progress');
      const id = status.dataset.videoId || null;
      const card = id ? document.querySelector(`#library li[data-video-id="${CSS.escape(id)}"]`) : null;
      return {
        state: status.dataset.state,
        text: status.textContent,
        percent: Number(progress.value),
        stats: document.getElementById('upload-stats').textContent,
        error: document.getElementById('upload-error').hidden ? '' : document.getElementById('upload-error').textContent,
        videoId: id,
        cardStatus: card ? card.dataset.status : null,
        cardTitle: card ? card.querySelector('.title')?.textContent : null,
      };
    });
    maxPercent = Math.max(maxPercent, last.percent);
    if (['error', 'failed', 'cancelled'].includes(last.state)) {
      throw new Failure(`upload ${last.state}: ${last.error || last.text}`);
    }
    if (last.state === 'ready' && last.percent >= 100 && last.cardStatus === 'ready') break;
    if (Date.now() - started > TIMEOUT_MS) {
      throw new Failure(`not ready within ${TIMEOUT_MS / 1000} s`);
    }
    await sleep(250);
  }
  if (args.title && last.cardTitle !== args.title) {
    throw new Failure(`library shows title ${JSON.stringify(last.cardTitle)}, expected ${JSON.stringify(args.title)}`);
  }
  console.log(JSON.stringify({ video_id: last.videoId }));
}

await runTest(run, {
  label: `upload ${args.file}`,
  onFail: () => last && console.error(`page state: ${JSON.stringify(last)}`),
  logs: () => logs,
  browser: () => browser,
});
