// Streamer's live dashboard: state, publisher, current ingest values, alerts,
// and uPlot charts of the last 30 minutes, from
// GET /api/v1/live-streams/{id}/health polled every second (only the new
// samples after the first load, via `since`).
// Exposes `window.oxcastDashboard` for tests (see web/README.md).

import { api, mountTokenWidget, formatDate, formatDuration, el, sleep } from './api.js';

const POLL_MS = 1000;
const ERROR_POLL_MS = 3000;
const MISSING_POLL_MS = 5000; // unknown stream: keep looking, slowly
const MAX_POINTS = 1800; // per series: 30 min at one sample per second
const WINDOW_MS = 30 * 60 * 1000;
const CHART_HEIGHT = 150;

/** The six series: API field, DOM id of the current value, chart label. */
const SERIES = [
  { key: 'ingest_kbps', id: 'dash-bitrate', label: 'Incoming bitrate', unit: 'kbit/s', digits: 0, color: '#3b5bdb' },
  { key: 'fps', id: 'dash-fps', label: 'Frame rate', unit: 'fps', digits: 1, color: '#2b8a3e' },
  { key: 'encoder_speed', id: 'dash-speed', label: 'Encoder speed', unit: '× real time', digits: 2, color: '#b7791f', floor: 1.2 },
  { key: 'dropped_frames', id: 'dash-dropped', label: 'Dropped frames', unit: 'this session', digits: 0, color: '#c92a2a', integer: true },
  { key: 'keyframe_interval_s', id: 'dash-keyframe', label: 'Keyframe interval', unit: 's', digits: 1, color: '#7048e8' },
  { key: 'viewers', id: 'dash-viewers', label: 'Viewers', unit: '', digits: 0, color: '#0c8599', integer: true },
];

const STATE_TEXT = {
  loading: 'loading',
  idle: 'idle',
  live: '● live',
  reconnecting: 'reconnecting…',
  ended: 'ended',
};

const ALERT_TEXT = {
  no_keyframe: 'No keyframe',
  encoder_slow: 'Encoder too slow',
  bitrate_high: 'Bitrate too high',
  bitrate_low: 'Bitrate too low',
};

const $ = (id) => document.getElementById(id);
const ui = {
  title: $('dash-title'),
  state: $('dash-state'),
  session: $('dash-session'),
  publisher: $('dash-publisher'),
  error: $('dash-error'),
  alerts: $('dash-alerts'),
  charts: $('dash-charts'),
  chartsStatus: $('dash-charts-status'),
  viewerLink: $('dash-viewer-link'),
  viewersUnit: $('dash-viewers-unit'),
  values: Object.fromEntries(SERIES.map((s) => [s.key, $(s.id)])),
};

/** `/streams/{id}/dashboard` → id (or `?id=`). */
function streamIdFromPath() {
  const segs = location.pathname.split('/').filter(Boolean);
  const i = segs.indexOf('streams');
  if (i >= 0 && segs[i + 1] && segs[i + 1] !== 'dashboard') return decodeURIComponent(segs[i + 1]);
  return new URLSearchParams(location.search).get('id') || '';
}

const streamId = streamIdFromPath();
const enc = encodeURIComponent(streamId);

// Samples held by the page, one array per field, oldest first. The chart data
// arrays are these very arrays (uPlot reads them on setData).
const buf = { t: [], ...Object.fromEntries(SERIES.map((s) => [s.key, []])) };
let heldSession; // session id the buffer belongs to (undefined: nothing loaded yet)
let lastMs = null; // `t` (ms, as the API sent it) of the newest sample held
let last = null; // last health answer
let state = 'loading';
let alertKinds = [];
let alertSig = '';
let charts = []; // { series, figure, plot, u }
let dirty = false; // new samples not drawn yet (tab hidden)

/** Test and debugging hook; see web/README.md. */
window.oxcastDashboard = {
  samples: () => buf.t.length,
  state: () => state,
  alerts: () => [...alertKinds],
  viewers: () => numberOrNull(last?.current?.viewers),
  points: () => Object.fromEntries(charts.map((c) => [c.series.key, Number(c.figure.dataset.points || 0)])),
  get uplot() {
    return charts.map((c) => c.u);
  },
};

const numberOrNull = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function showError(text) {
  ui.error.hidden = !text;
  ui.error.textContent = text || '';
}

// ---------------------------------------------------------------------------
// Sample buffer
// ---------------------------------------------------------------------------

function resetBuffer(session) {
  for (const k of Object.keys(buf)) buf[k].length = 0;
  heldSession = session;
  lastMs = null;
}

/** Appends samples newer than the last one held, then trims to 30 min / 1800 points. */
function append(samples) {
  if (!Array.isArray(samples) || samples.length === 0) return false;
  let added = false;
  for (const s of samples) {
    const t = numberOrNull(s?.t);
    if (t === null) continue;
    if (lastMs !== null && t <= lastMs) continue; // duplicate or out of order
    lastMs = t;
    buf.t.push(t / 1000); // uPlot's time scale is in seconds
    for (const { key } of SERIES) buf[key].push(numberOrNull(s[key]));
    added = true;
  }
  if (!added) return false;
  const newest = buf.t[buf.t.length - 1];
  let drop = Math.max(0, buf.t.length - MAX_POINTS);
  while (drop < buf.t.length && buf.t[drop] < newest - WINDOW_MS / 1000) drop += 1;
  if (drop > 0) for (const k of Object.keys(buf)) buf[k].splice(0, drop);
  return true;
}

/** `since` for the next request: the last sample's time in ms, or null for a full load. */
const sinceMs = () => (heldSession !== undefined && buf.t.length ? lastMs : null);

// ---------------------------------------------------------------------------
// Charts (uPlot)
// ---------------------------------------------------------------------------

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

const INTEGER_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6];

function buildCharts() {
  ui.charts.replaceChildren();
  charts = SERIES.map((series) => {
    const figure = el('figure', 'dash-chart');
    figure.dataset.series = series.key;
    figure.dataset.testid = 'dash-chart';
    const caption = el('figcaption', '', series.label);
    if (series.unit) caption.append(el('span', 'muted', ` (${series.unit})`));
    const plot = el('div', 'dash-plot');
    figure.append(caption, plot);
    ui.charts.append(figure);
    return { series, figure, plot, u: null };
  });

  const uPlot = window.uPlot;
  if (typeof uPlot !== 'function') {
    ui.chartsStatus.textContent = 'Charts unavailable: uPlot did not load (run npm ci in web/ and rebuild).';
    console.error('oxcast dashboard: window.uPlot missing, no charts');
    return;
  }
  const axisColor = cssVar('--muted', '#6b7280');
  const gridColor = cssVar('--border', '#e3e6eb');
  for (const c of charts) {
    const s = c.series;
    const yAxis = {
      stroke: axisColor,
      grid: { stroke: gridColor, width: 1 },
      ticks: { stroke: gridColor, width: 1 },
      size: 56,
    };
    if (s.integer) yAxis.incrs = INTEGER_INCRS;
    const opts = {
      width: Math.max(200, c.plot.clientWidth || 400),
      height: CHART_HEIGHT,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: {
        x: { time: true },
        y: {
          range: (_u, _min, max) => {
            const top = Math.max(numberOrNull(max) ?? 0, s.floor ?? 0);
            return [0, top > 0 ? (s.integer ? Math.ceil(top * 1.15) : top * 1.15) : 1];
          },
        },
      },
      axes: [{ stroke: axisColor, grid: { stroke: gridColor, width: 1 }, ticks: { stroke: gridColor, width: 1 } }, yAxis],
      series: [
        {},
        {
          label: s.label,
          stroke: s.color,
          width: 1.5,
          fill: `${s.color}1f`,
          spanGaps: false,
          points: { show: false },
          value: (_u, v) => (v === null || v === undefined ? '—' : v.toFixed(s.digits)),
        },
      ],
    };
    c.u = new uPlot(opts, [buf.t, buf[s.key]], c.plot);
  }
  new ResizeObserver(() => {
    for (const c of charts) {
      const w = c.plot.clientWidth;
      if (c.u && w > 0 && Math.abs(w - c.u.width) > 1) c.u.setSize({ width: w, height: CHART_HEIGHT });
    }
  }).observe(ui.charts);
}

function drawCharts() {
  if (document.hidden) {
    dirty = true; // redrawn when the tab is visible again
    return;
  }
  dirty = false;
  if (!charts.some((c) => c.u)) return; // no uPlot: the status line says why
  for (const c of charts) {
    if (!c.u) continue;
    c.u.setData([buf.t, buf[c.series.key]]);
    c.figure.dataset.points = String(buf.t.length);
  }
  const n = buf.t.length;
  ui.chartsStatus.textContent =
    n === 0 ? 'No samples yet.' : `${formatDuration(n)} of samples${n >= MAX_POINTS ? ' (window full)' : ''}`;
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && dirty) drawCharts();
});

// ---------------------------------------------------------------------------
// Page state
// ---------------------------------------------------------------------------

function showState(h) {
  state = STATE_TEXT[h.state] ? h.state : String(h.state || 'idle');
  ui.state.dataset.state = state;
  ui.state.textContent = STATE_TEXT[state] || state;
  ui.state.className = `badge dash-state status-${state.replace(/[^a-z]/g, '')}`;

  const started = Date.parse(h.started_at || '');
  const since = Number.isFinite(started) ? formatDate(h.started_at) : '';
  const dur = Number.isFinite(started) ? formatDuration(Math.max(0, (Date.now() - started) / 1000)) : '';
  ui.session.textContent = {
    live: since ? `live since ${since} · ${dur}` : 'live',
    reconnecting: `publisher disconnected, waiting for it to reconnect${since ? ` · session since ${since} · ${dur}` : ''}`,
    ended: since ? `last session started ${since}` : 'the last session ended',
    idle: 'waiting for a publisher',
  }[state] ?? '';
}

function showPublisher(p) {
  const node = ui.publisher;
  if (!p || typeof p !== 'object') {
    node.dataset.protocol = '';
    node.textContent =
      state === 'live' ? 'Publisher details not known yet.' : state === 'reconnecting' ? 'Publisher disconnected.' : 'No publisher connected.';
    return;
  }
  node.dataset.protocol = String(p.protocol || '');
  const parts = [];
  parts.push(`${String(p.protocol || '?').toUpperCase()}${p.address ? ` from ${p.address}` : ''}`);
  const video = [];
  if (p.video_codec) video.push(p.video_codec);
  if (numberOrNull(p.width) && numberOrNull(p.height)) video.push(`${p.width}×${p.height}`);
  if (numberOrNull(p.fps)) video.push(`@ ${Number(p.fps.toFixed(2))} fps`);
  if (video.length) parts.push(`video ${video.join(' ')}`);
  if (p.audio_codec) parts.push(`audio ${p.audio_codec}`);
  node.textContent = parts.join(' · ');
}

function showCurrent(cur, viewerWindow) {
  for (const s of SERIES) {
    const node = ui.values[s.key];
    const v = numberOrNull(cur?.[s.key]);
    node.textContent = v === null ? '—' : v.toFixed(s.digits);
    if (v === null) delete node.dataset.value;
    else node.dataset.value = String(v);
  }
  const w = numberOrNull(viewerWindow);
  ui.viewersUnit.textContent = w ? `in the last ${w} s` : 'now';
  ui.values.dropped_frames.classList.toggle('warn', (numberOrNull(cur?.dropped_frames) ?? 0) > 0);
}

/** Which current value an alert is about (shown in red while it lasts). */
const ALERT_SERIES = {
  no_keyframe: 'keyframe_interval_s',
  encoder_slow: 'encoder_speed',
  bitrate_high: 'ingest_kbps',
  bitrate_low: 'ingest_kbps',
};

function showAlerts(list) {
  const alerts = (Array.isArray(list) ? list : []).filter((a) => a && a.kind);
  alertKinds = alerts.map((a) => String(a.kind));
  const flagged = new Set(alertKinds.map((k) => ALERT_SERIES[k]).filter(Boolean));
  for (const s of SERIES) ui.values[s.key].classList.toggle('bad', flagged.has(s.key));
  const sig = JSON.stringify(alerts.map((a) => [a.kind, a.since]));
  if (sig === alertSig) {
    // Same alerts: only refresh a changed message (no re-announcement otherwise).
    alerts.forEach((a, i) => {
      const msg = ui.alerts.children[i]?.querySelector('.dash-alert-message');
      if (msg && msg.textContent !== String(a.message || '')) msg.textContent = String(a.message || '');
    });
    return;
  }
  alertSig = sig;
  ui.alerts.replaceChildren(
    ...alerts.map((a) => {
      const li = el('li', 'dash-alert');
      li.dataset.kind = String(a.kind);
      li.append(el('strong', '', ALERT_TEXT[a.kind] || String(a.kind)), el('span', 'dash-alert-message', String(a.message || '')));
      const t = Date.parse(a.since || '');
      if (Number.isFinite(t)) li.append(el('span', 'dash-alert-since', `since ${new Date(t).toLocaleTimeString()}`));
      return li;
    }),
  );
}

// ---------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------

/** One request; returns the delay before the next one. */
async function pollOnce() {
  const since = sinceMs();
  let h;
  try {
    h = await api('GET', `/api/v1/live-streams/${enc}/health${since === null ? '' : `?since=${since}`}`);
  } catch (err) {
    if (err.status === 404) {
      // Unknown (or deleted) stream, or a server without live streaming.
      showError(`No health data for this stream: ${err.message}`);
      return MISSING_POLL_MS;
    }
    showError(`Could not load the stream health: ${err.message}`);
    return ERROR_POLL_MS;
  }
  showError('');
  if (!h || typeof h !== 'object') return ERROR_POLL_MS;
  const session = h.session_id ?? null;
  if (since !== null && session !== heldSession) {
    // A new session: start over with its full history, right away.
    resetBuffer(undefined);
    return 0;
  }
  if (since === null) resetBuffer(session);
  last = h;
  showState(h);
  showPublisher(h.publisher);
  showCurrent(h.current, h.viewer_window_s);
  showAlerts(h.alerts);
  append(h.samples);
  drawCharts(); // also when nothing was added: the first load marks data-points
  if (titleMissing) loadTitle();
  return POLL_MS;
}

let titleMissing = true;
async function loadTitle() {
  titleMissing = false;
  try {
    const s = await api('GET', `/api/v1/live-streams/${enc}`);
    const title = s?.title || 'Untitled';
    ui.title.textContent = title;
    document.title = `${title} · Dashboard · oxcast`;
  } catch (err) {
    if (err.status === 404) {
      ui.title.textContent = 'Stream not found';
      document.title = 'Stream not found · Dashboard · oxcast';
      return;
    }
    titleMissing = true; // retried after the next successful poll
    if (ui.title.textContent === 'Loading…') ui.title.textContent = 'Live dashboard';
  }
}

let wake = null; // resolves the current wait early (token changed)

async function main() {
  if (!streamId) {
    ui.title.textContent = 'No stream selected';
    showError('No stream id in the address.');
    return;
  }
  ui.viewerLink.href = `/streams/${enc}`;
  buildCharts();
  loadTitle();
  for (;;) {
    const started = performance.now();
    let delay = POLL_MS;
    try {
      delay = await pollOnce();
    } catch (err) {
      console.error('oxcast dashboard: poll failed', err);
      delay = ERROR_POLL_MS;
    }
    const left = delay - (performance.now() - started);
    if (left > 0) {
      const ctl = new AbortController();
      wake = () => ctl.abort();
      await sleep(left, ctl.signal).catch(() => {});
      wake = null;
    }
  }
}

mountTokenWidget($('token-form'), () => {
  titleMissing = true;
  if (wake) wake();
});
main();
