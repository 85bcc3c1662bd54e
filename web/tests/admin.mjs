#!/usr/bin/env node
// Checks the admin page's processing queue in headless Chromium.
//
//   node web/tests/admin.mjs --base http://127.0.0.1:PORT --running VIDEO_ID \
//        --failed VIDEO_ID --failed-title TITLE [--chromium /usr/bin/chromium]
//
// Passes (exit 0, prints a JSON summary) when, within 60 s, the page lists the
// `--running` video's job as running with a progress bar above 0 and its worker,
// and the `--failed` video's job as failed with its reason and its title shown
// as text, and the process list shows the one server up with its worker slot busy
// ("1 / 1"), and the jobs-per-hour chart is drawn with the failed job in it; then Retry on the failed job is answered with the job queued with 0
// attempts, and the page moves it to the queued list with 0 attempts (the
// caller keeps the only worker busy with the running job). Otherwise prints the
// reason on stderr and exits 1.

import { parseCli, launch, collectLogs, defaultChromium, sleep, Failure, runTest } from './lib.mjs';

const TIMEOUT_MS = 60_000;

const args = parseCli(
  { base: undefined, running: undefined, failed: undefined, 'failed-title': undefined, chromium: defaultChromium() },
  'node web/tests/admin.mjs --base URL --running VIDEO_ID --failed VIDEO_ID --failed-title TITLE [--chromium PATH]',
);

const base = args.base.replace(/\/+$/, '');
let browser;
let logs = { console: [], page: [], requests: [] };
let last = null;

/** What the page shows about the jobs of the two videos. */
function observe(page) {
  return page.evaluate(
    ({ running, failed }) => {
      const row = (video) => {
        const tr = document.querySelector(`tr[data-video-id="${CSS.escape(video)}"]`);
        if (!tr) return null;
        const title = tr.querySelector('.title');
        return {
          state: tr.dataset.state,
          attempts: Number(tr.dataset.attempts),
          title: title ? title.textContent : null,
          titleElements: title ? title.children.length : null,
          progress: tr.querySelector('progress') ? Number(tr.querySelector('progress').value) : null,
          worker: tr.querySelector('.worker')?.textContent ?? null,
          error: tr.querySelector('.error-text')?.textContent ?? null,
          retry: Boolean(tr.querySelector('[data-testid=retry]')),
        };
      };
      const nodes = [...document.querySelectorAll('#nodes tr')].map((tr) => ({
        id: tr.dataset.nodeId,
        status: tr.dataset.status,
        roles: tr.dataset.roles,
        jobs: tr.querySelector('[data-testid=node-jobs]')?.textContent ?? null,
      }));
      const chart = document.getElementById('jobs-chart');
      const hours = {
        points: Number(chart?.dataset.points ?? 0),
        failed: Number(chart?.dataset.failed ?? 0),
        drawn: Boolean(chart?.querySelector('canvas')),
      };
      return { running: row(running), failed: row(failed), nodes, hours, status: document.getElementById('queue-status').textContent };
    },
    { running: args.running, failed: args.failed },
  );
}

async function until(page, what, ok) {
  const started = Date.now();
  for (;;) {
    last = await observe(page);
    if (ok(last)) return last;
    if (Date.now() - started > TIMEOUT_MS) throw new Failure(`${what}: not within ${TIMEOUT_MS / 1000} s`);
    await sleep(200);
  }
}

async function run() {
  browser = await launch(args.chromium);
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  logs = collectLogs(page);

  await page.goto(`${base}/admin`, { waitUntil: 'domcontentloaded', timeout: 30_000 });
  const seen = await until(
    page,
    'the running job with progress and worker, the failed job with its reason',
    (s) =>
      s.running?.state === 'running' &&
      s.running.progress > 0 &&
      s.running.worker &&
      s.running.worker !== '—' &&
      s.failed?.state === 'failed' &&
      s.failed.error &&
      s.failed.retry &&
      // The one process: up, all roles, its one worker slot busy with the running job.
      s.nodes.length === 1 &&
      s.nodes[0].status === 'up' &&
      s.nodes[0].roles.includes('worker') &&
      s.nodes[0].jobs === '1 / 1' &&
      // The chart of the last 24 hours, drawn, with the failed job in it.
      s.hours.points === 24 &&
      s.hours.failed >= 1 &&
      s.hours.drawn,
  );
  if (seen.failed.title !== args['failed-title'] || seen.failed.titleElements !== 0) {
    throw new Failure(`failed job's title shown as ${JSON.stringify(seen.failed.title)} with ${seen.failed.titleElements} elements, expected the text ${JSON.stringify(args['failed-title'])}`);
  }

  const answered = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/retry'), { timeout: 10_000 });
  await page.click(`tr[data-video-id="${args.failed}"] [data-testid=retry]`, { timeout: 10_000 });
  const res = await answered;
  const retried = await res.json();
  if (res.status() !== 200 || retried.state !== 'queued' || retried.attempts !== 0) {
    throw new Failure(`retry answered HTTP ${res.status()}: ${JSON.stringify(retried)}`);
  }
  const after = await until(
    page,
    'the retried job in the queued list with 0 attempts',
    (s) => s.failed?.state === 'queued' && s.failed.attempts === 0,
  );
  console.log(JSON.stringify({ running: seen.running, failed: seen.failed, nodes: seen.nodes, hours: seen.hours, retried, after: after.failed }));
}

await runTest(run, {
  label: `admin page at ${base}`,
  onFail: () => last && console.error(`page state: ${JSON.stringify(last)}`),
  logs: () => logs,
  browser: () => browser,
});
