// Admin page: jobs ended per hour (a chart), the processes of the deployment (workers, live encoders, API nodes)
// with their heartbeat age and load, and the processing queue (running with
// progress and worker, queued, failed with the reason and a Retry button),
// refreshed every 2 s.

import { api, mountTokenWidget, formatDate, el } from './api.js';

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 2000;
const STATES = ['running', 'queued', 'failed'];

const ui = {
  status: $('queue-status'),
  bodies: Object.fromEntries(STATES.map((s) => [s, $(`jobs-${s}`)])),
  tables: Object.fromEntries(STATES.map((s) => [s, document.querySelector(`table[data-state="${s}"]`)])),
  empty: Object.fromEntries(STATES.map((s) => [s, document.querySelector(`[data-empty="${s}"]`)])),
  counts: Object.fromEntries(STATES.map((s) => [s, document.querySelector(`[data-count="${s}"]`)])),
};

const rows = new Map(); // job id → { tr, sig, state }
const retrying = new Set(); // job ids whose retry is in flight
let timer = 0;
let loading = false;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

function percent(p) {
  const n = Number(p);
  return Number.isFinite(n) ? Math.round(Math.min(Math.max(n, 0), 1) * 100) : 0;
}

/** The title cell: a link to the watch page, the title as text. */
function titleCell(job) {
  const td = el('td');
  const a = el('a', 'title', job.title || 'Untitled');
  a.href = `/watch/${encodeURIComponent(job.video_id)}`;
  td.append(a, el('div', 'num small', job.id));
  // A long video is several jobs: say which step this one is.
  const step = {
    encode_chunk: `chunk ${Number(job.chunk) + 1}`,
    encode_audio: 'audio',
    stitch: 'stitch',
  }[job.kind];
  if (step) td.append(el('div', 'small', step));
  return td;
}

function showStatus(text) {
  ui.status.textContent = text || '';
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

function fillRunning(tr, job) {
  const progressTd = el('td');
  const line = el('div', 'progress-line');
  const bar = el('progress');
  bar.max = 100;
  bar.value = percent(job.progress);
  bar.setAttribute('aria-label', `Progress of ${job.title || 'Untitled'}`);
  line.append(bar, el('span', 'percent', `${percent(job.progress)} %`));
  progressTd.append(line);
  tr.append(
    titleCell(job),
    progressTd,
    el('td', 'worker', job.worker || '—'),
    el('td', 'num', `${job.attempts} of ${job.max_attempts}`),
    el('td', 'when', formatDate(job.updated_at)),
  );
}

function fillQueued(tr, job) {
  tr.append(
    titleCell(job),
    el('td', 'num', `${job.attempts} of ${job.max_attempts}`),
    el('td', 'error-text small', job.last_error || ''),
    el('td', 'when', formatDate(job.updated_at)),
  );
}

function fillFailed(tr, job) {
  const button = el('button', 'btn small', retrying.has(job.id) ? 'Retrying…' : 'Retry');
  button.type = 'button';
  button.dataset.testid = 'retry';
  button.disabled = retrying.has(job.id);
  button.addEventListener('click', () => retry(job, button));
  const action = el('td');
  action.append(button);
  tr.append(
    titleCell(job),
    el('td', 'error-text', job.last_error || 'no reason recorded'),
    el('td', 'num', `${job.attempts} of ${job.max_attempts}`),
    el('td', 'when', formatDate(job.updated_at)),
    action,
  );
}

const FILL = { running: fillRunning, queued: fillQueued, failed: fillFailed };

function render(state, jobs) {
  const body = ui.bodies[state];
  jobs.forEach((job, i) => {
    let entry = rows.get(job.id);
    if (!entry || entry.state !== state) {
      entry?.tr.remove();
      entry = { tr: el('tr'), sig: '', state };
      entry.tr.dataset.jobId = job.id;
      entry.tr.dataset.state = state;
      rows.set(job.id, entry);
    }
    const sig = JSON.stringify([job, retrying.has(job.id)]);
    if (sig !== entry.sig) {
      entry.tr.replaceChildren();
      entry.tr.dataset.videoId = job.video_id;
      entry.tr.dataset.attempts = String(job.attempts);
      FILL[state](entry.tr, job);
      entry.sig = sig;
    }
    if (body.children[i] !== entry.tr) body.insertBefore(entry.tr, body.children[i] || null);
  });
  const seen = new Set(jobs.map((j) => j.id));
  for (const [id, entry] of rows) {
    if (entry.state === state && !seen.has(id)) {
      entry.tr.remove();
      rows.delete(id);
    }
  }
  ui.tables[state].hidden = jobs.length === 0;
  ui.empty[state].hidden = jobs.length > 0;
  ui.counts[state].textContent = jobs.length ? `(${jobs.length})` : '';
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

function age(seconds) {
  const s = Number(seconds);
  if (!Number.isFinite(s)) return '—';
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

function renderNodes(nodes) {
  const body = $('nodes');
  body.replaceChildren(
    ...nodes.map((n) => {
      const tr = el('tr');
      tr.dataset.nodeId = n.id;
      tr.dataset.status = n.status;
      tr.dataset.roles = n.roles;
      const who = el('td');
      who.append(el('div', 'worker', n.id), el('div', 'num small', `${n.host} · pid ${n.pid} · v${n.version}`));
      const jobs = el('td', 'num', n.job_slots ? `${n.jobs_running} / ${n.job_slots}` : '—');
      jobs.dataset.testid = 'node-jobs';
      const live = el('td', 'num', n.roles.includes('live') ? `${n.live_sessions} live · ${n.live_viewers} watching` : '—');
      const beat = el('td', n.status === 'up' ? 'when' : 'when status-silent', n.status === 'up' ? age(n.heartbeat_age_s) : `silent, ${age(n.heartbeat_age_s)}`);
      beat.dataset.testid = 'node-heartbeat';
      tr.append(who, el('td', '', n.roles), jobs, live, el('td', 'num', Number(n.load1).toFixed(2)), beat);
      return tr;
    }),
  );
  $('nodes-table').hidden = nodes.length === 0;
  $('nodes-empty').hidden = nodes.length > 0;
  document.querySelector('[data-count="nodes"]').textContent = nodes.length ? `(${nodes.length})` : '';
}

// ---------------------------------------------------------------------------
// Jobs per hour (uPlot, from npm like the players)
// ---------------------------------------------------------------------------

let hoursChart = null;

function renderHours(hours) {
  const box = $('jobs-chart');
  const data = [
    hours.map((h) => h.t / 1000),
    hours.map((h) => h.done),
    hours.map((h) => h.failed),
  ];
  box.dataset.points = String(hours.length);
  box.dataset.done = String(data[1].reduce((a, b) => a + b, 0));
  box.dataset.failed = String(data[2].reduce((a, b) => a + b, 0));
  if (typeof window.uPlot !== 'function') {
    box.textContent = 'Charts need the uPlot bundle: run npm ci in web/ and rebuild.';
    return;
  }
  if (hoursChart) {
    hoursChart.setData(data);
    return;
  }
  const bars = window.uPlot.paths?.bars ? window.uPlot.paths.bars({ size: [0.6, 40] }) : undefined;
  hoursChart = new window.uPlot(
    {
      width: Math.max(320, box.clientWidth || 640),
      height: 180,
      series: [
        {},
        { label: 'Done', stroke: '#1a7f37', fill: 'rgba(26,127,55,0.25)', paths: bars },
        { label: 'Failed', stroke: '#b42318', fill: 'rgba(180,35,24,0.25)', paths: bars },
      ],
      axes: [{}, { label: 'jobs' }],
      scales: { y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
    },
    data,
    box,
  );
}

// ---------------------------------------------------------------------------
// Refresh and retry
// ---------------------------------------------------------------------------

async function refresh() {
  clearTimeout(timer);
  if (loading) {
    timer = setTimeout(refresh, 300);
    return;
  }
  loading = true;
  let ok = false;
  try {
    const [stats, nodes, ...lists] = await Promise.all([
      api('GET', '/api/v1/admin/stats'),
      api('GET', '/api/v1/admin/nodes'),
      ...STATES.map((s) => api('GET', `/api/v1/admin/jobs?state=${s}`)),
    ]);
    renderHours(Array.isArray(stats?.jobs_per_hour) ? stats.jobs_per_hour : []);
    renderNodes(Array.isArray(nodes?.nodes) ? nodes.nodes : []);
    STATES.forEach((s, i) => render(s, Array.isArray(lists[i]?.jobs) ? lists[i].jobs : []));
    document.body.dataset.loaded = 'true';
    if (ui.status.dataset.kind !== 'retry') showStatus('');
    ok = true;
  } catch (err) {
    ui.status.dataset.kind = 'load';
    showStatus(`Could not load the queue: ${err.message}`);
  } finally {
    loading = false;
  }
  timer = setTimeout(refresh, ok ? REFRESH_MS : 10000);
}

async function retry(job, button) {
  retrying.add(job.id);
  button.disabled = true;
  button.textContent = 'Retrying…';
  try {
    await api('POST', `/api/v1/admin/jobs/${encodeURIComponent(job.id)}/retry`);
    ui.status.dataset.kind = '';
    showStatus('');
  } catch (err) {
    ui.status.dataset.kind = 'retry';
    showStatus(`Could not retry “${job.title || 'Untitled'}”: ${err.message}`);
  } finally {
    retrying.delete(job.id);
  }
  refresh();
}

mountTokenWidget($('token-form'), refresh);
refresh();
