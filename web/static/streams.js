// Live streams page: create streams, show ingest settings (RTMP / SRT / OBS /
// ffmpeg), reset keys, delete, list past sessions (recordings), and link each
// stream to its viewer page and its streamer dashboard.

import { api, mountTokenWidget, formatDate, formatDuration, el } from './api.js';

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 3000;
const MASK = '•'.repeat(12);

const ui = {
  form: $('create-form'),
  title: $('stream-title-input'),
  create: $('create-button'),
  createError: $('create-error'),
  list: $('streams'),
  empty: $('streams-empty'),
  status: $('streams-status'),
};

const cards = new Map(); // stream id → { li, sig, health }
const shownKeys = new Set(); // stream ids whose key is revealed
let timer = 0;
let loading = false;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/** `rtmp://host:1935/live/KEY` → `rtmp://host:1935/live` (the OBS "Server" field). */
export function obsServer(rtmpUrl, key) {
  const url = String(rtmpUrl || '');
  if (key && url.endsWith(`/${key}`)) return url.slice(0, -(key.length + 1));
  const i = url.lastIndexOf('/');
  return i > url.indexOf('//') + 1 ? url.slice(0, i) : url;
}

export function ffmpegCommand(rtmpUrl) {
  return (
    'ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine ' +
    '-c:v libx264 -preset veryfast -tune zerolatency -g 60 -c:a aac ' +
    `-f flv '${String(rtmpUrl).replace(/'/g, "'\\''")}'`
  );
}

/** Replaces the stream key inside `text` unless the key is revealed. */
function masked(text, key, shown) {
  if (shown || !key) return String(text ?? '');
  return String(text ?? '').split(key).join(MASK);
}

async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    /* fall back below */
  }
  // Plain-HTTP fallback (the Clipboard API needs a secure context).
  const ta = el('textarea');
  ta.value = text;
  ta.setAttribute('readonly', '');
  ta.style.position = 'fixed';
  ta.style.opacity = '0';
  document.body.append(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  ta.remove();
  return ok;
}

function copyButton(label, getText, testid) {
  const b = el('button', 'btn small', label);
  b.type = 'button';
  if (testid) b.dataset.testid = testid;
  b.addEventListener('click', async () => {
    const ok = await copyText(getText());
    b.textContent = ok ? 'Copied' : 'Copy failed';
    setTimeout(() => {
      b.textContent = label;
    }, 1500);
  });
  return b;
}

function showCreateError(text) {
  ui.createError.hidden = !text;
  ui.createError.textContent = text || '';
}

const num = (v, digits = 0, unit = '') =>
  typeof v === 'number' && Number.isFinite(v) ? `${v.toFixed(digits)}${unit}` : '—';

function healthText(s) {
  const h = s.current_session?.health;
  if (s.status !== 'live' || !s.current_session) return '';
  const since = s.current_session.started_at ? `live since ${formatDate(s.current_session.started_at)}` : 'live';
  if (!h) return since;
  return [
    since,
    `${num(h.ingest_kbps, 0, ' kbps')}`,
    `${num(h.fps, 1, ' fps')}`,
    `dropped ${num(h.dropped_frames)}`,
    `encoder ${num(h.encoder_speed, 2, '×')}`,
    `latency ${num(h.latency_s, 1, ' s')}`,
  ].join(' · ');
}

// ---------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------

ui.form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const title = ui.title.value.trim();
  if (!title) {
    showCreateError('Give the stream a title.');
    return;
  }
  ui.create.disabled = true;
  showCreateError('');
  try {
    const s = await api('POST', '/api/v1/live-streams', { title });
    ui.title.value = '';
    if (s?.id) {
      shownKeys.delete(s.id);
      renderStreams([s, ...[...cards.values()].map((c) => c.stream).filter((x) => x.id !== s.id)]);
      cards.get(s.id)?.li.scrollIntoView({ block: 'nearest' });
    }
  } catch (err) {
    showCreateError(`Could not create the stream: ${err.message}`);
  } finally {
    ui.create.disabled = false;
  }
  refresh();
});

// ---------------------------------------------------------------------------
// List
// ---------------------------------------------------------------------------

async function refresh() {
  clearTimeout(timer);
  if (loading) {
    timer = setTimeout(refresh, 500);
    return;
  }
  loading = true;
  let streams = null;
  try {
    const data = await api('GET', '/api/v1/live-streams');
    streams = Array.isArray(data?.live_streams) ? data.live_streams : [];
    ui.status.textContent = '';
  } catch (err) {
    ui.status.textContent = `Could not load the streams: ${err.message}`;
  } finally {
    loading = false;
  }
  if (streams) renderStreams(streams);
  timer = setTimeout(refresh, streams ? REFRESH_MS : 10000);
}

function renderStreams(streams) {
  const seen = new Set();
  streams.forEach((s, i) => {
    seen.add(s.id);
    let entry = cards.get(s.id);
    if (!entry) {
      entry = { li: el('li', 'stream-card'), sig: '', stream: s };
      entry.li.dataset.testid = 'stream-card';
      cards.set(s.id, entry);
    }
    entry.stream = s;
    const sessions = Array.isArray(s.sessions) ? s.sessions : [];
    const sig = JSON.stringify([
      s.title, s.status, s.stream_key, s.rtmp_url, s.srt_url, s.created_at,
      s.current_session?.id, sessions, shownKeys.has(s.id),
    ]);
    if (sig !== entry.sig) {
      fillCard(entry, s);
      entry.sig = sig;
    }
    entry.health.textContent = healthText(s);
    entry.health.hidden = !entry.health.textContent;
    if (ui.list.children[i] !== entry.li) ui.list.insertBefore(entry.li, ui.list.children[i] || null);
  });
  for (const [id, entry] of cards) {
    if (!seen.has(id)) {
      entry.li.remove();
      cards.delete(id);
    }
  }
  ui.empty.hidden = streams.length > 0;
}

function row(dl, label, valueNode, ...buttons) {
  const dt = el('dt', '', label);
  const dd = el('dd');
  dd.append(valueNode, ...buttons);
  dl.append(dt, dd);
}

function fillCard(entry, s) {
  const { li } = entry;
  const status = s.status === 'live' ? 'live' : 'idle';
  const title = s.title || 'Untitled';
  const key = String(s.stream_key || '');
  const shown = shownKeys.has(s.id);
  const viewerHref = `/streams/${encodeURIComponent(s.id)}`;
  li.dataset.streamId = s.id;
  li.dataset.status = status;
  li.replaceChildren();

  // Head: title, status, viewer link.
  const head = el('div', 'stream-head');
  const titleBox = el('div', 'stream-title');
  const h3 = el('h3');
  const link = el('a', '', title);
  link.href = viewerHref;
  h3.append(link);
  const meta = el('div', 'meta-row');
  const badge = el('span', `badge status-${status}`, status === 'live' ? '● live' : 'idle');
  badge.dataset.testid = 'stream-status';
  meta.append(badge);
  if (s.created_at) meta.append(el('span', 'muted', `created ${formatDate(s.created_at)}`));
  titleBox.append(h3, meta);
  const watch = el('a', `btn ${status === 'live' ? 'primary' : ''}`, status === 'live' ? 'Watch live ▸' : 'Viewer page ▸');
  watch.href = viewerHref;
  watch.dataset.testid = 'viewer-link';
  const dash = el('a', 'btn', 'Dashboard ▸');
  dash.href = `${viewerHref}/dashboard`;
  dash.dataset.testid = 'dashboard-link';
  dash.title = 'Live health, charts and alerts for the streamer';
  const links = el('div', 'stream-links');
  links.append(dash, watch);
  head.append(titleBox, links);
  li.append(head);

  entry.health = el('p', 'health-line small');
  entry.health.dataset.testid = 'stream-health';
  li.append(entry.health);

  // Ingest settings.
  const dl = el('dl', 'ingest');
  const keyCode = el('code', shown ? 'secret' : 'secret masked', shown ? key : MASK);
  keyCode.dataset.testid = 'stream-key';
  const toggle = el('button', 'btn small', shown ? 'Hide' : 'Show');
  toggle.type = 'button';
  toggle.dataset.testid = 'toggle-key';
  toggle.setAttribute('aria-pressed', String(shown));
  toggle.addEventListener('click', () => {
    if (shownKeys.has(s.id)) shownKeys.delete(s.id);
    else shownKeys.add(s.id);
    renderStreams([...cards.values()].map((c) => c.stream));
  });
  row(dl, 'Stream key', keyCode, toggle, copyButton('Copy', () => key, 'copy-key'));
  row(dl, 'RTMP URL', el('code', '', masked(s.rtmp_url, key, shown)), copyButton('Copy', () => s.rtmp_url || '', 'copy-rtmp'));
  row(dl, 'SRT URL', el('code', '', masked(s.srt_url, key, shown)), copyButton('Copy', () => s.srt_url || '', 'copy-srt'));
  li.append(dl);

  // OBS + ffmpeg.
  const help = el('details', 'links ingest-help');
  help.append(el('summary', '', 'OBS settings and a test command'));
  const obs = el('dl', 'ingest');
  const server = obsServer(s.rtmp_url, key);
  obs.append(el('dt', 'group', 'OBS → Settings → Stream → Service: Custom…'));
  row(obs, 'Server', el('code', '', server), copyButton('Copy', () => server, 'copy-obs-server'));
  row(obs, 'Stream key', el('code', '', shown ? key : MASK), copyButton('Copy', () => key, 'copy-obs-key'));
  help.append(obs);
  const cmd = ffmpegCommand(s.rtmp_url || '');
  const pre = el('pre', 'command');
  pre.append(el('code', '', masked(cmd, key, shown)));
  const cmdHead = el('div', 'command-head');
  cmdHead.append(el('span', 'muted', 'Test-publish with ffmpeg:'), copyButton('Copy command', () => cmd, 'copy-ffmpeg'));
  help.append(cmdHead, pre);
  li.append(help);

  // Past sessions.
  const sessions = (Array.isArray(s.sessions) ? s.sessions : []).slice().sort((a, b) =>
    String(b.started_at || '').localeCompare(String(a.started_at || '')),
  );
  const past = el('details', 'links sessions');
  past.dataset.testid = 'sessions';
  past.append(el('summary', '', `Sessions (${sessions.length})`));
  if (sessions.length === 0) {
    past.append(el('p', 'muted small', 'No sessions yet. Recordings appear here when a broadcast ends.'));
  } else {
    const ul = el('ul', 'session-list');
    for (const sess of sessions) {
      const item = el('li');
      item.dataset.sessionId = sess.id;
      const isLive = !sess.ended_at && s.current_session?.id === sess.id;
      const when = sess.started_at ? formatDate(sess.started_at) : 'unknown start';
      let a;
      if (isLive) {
        a = el('a', '', `${when} — live now`);
        a.href = viewerHref;
      } else if (sess.video_id) {
        a = el('a', '', when);
        a.href = `/watch/${encodeURIComponent(sess.video_id)}`;
      } else {
        a = el('span', '', when);
      }
      item.append(a);
      const start = Date.parse(sess.started_at);
      const end = Date.parse(sess.ended_at);
      if (Number.isFinite(start) && Number.isFinite(end) && end >= start) {
        item.append(el('span', 'muted', formatDuration((end - start) / 1000)));
      }
      const st = String(isLive ? 'live' : sess.status || (sess.ended_at ? 'ended' : ''));
      if (st) item.append(el('span', `badge status-${st.replace(/[^a-z]/g, '')}`, st));
      ul.append(item);
    }
    past.append(ul);
  }
  li.append(past);

  // Actions.
  const actions = el('div', 'stream-actions');
  const reset = el('button', 'btn small', 'Reset key');
  reset.type = 'button';
  reset.dataset.testid = 'reset-key';
  reset.addEventListener('click', () => resetKey(s, reset));
  const del = el('button', 'btn small danger', 'Delete');
  del.type = 'button';
  del.dataset.testid = 'delete-stream';
  del.addEventListener('click', () => deleteStream(s, del));
  actions.append(reset, del);
  li.append(actions);
}

async function resetKey(s, button) {
  const warn = s.status === 'live' ? ' The current broadcast will be disconnected.' : '';
  if (!window.confirm(`Reset the stream key of “${s.title || 'Untitled'}”? Encoders using the old key stop working.${warn}`)) return;
  button.disabled = true;
  try {
    const updated = await api('POST', `/api/v1/live-streams/${encodeURIComponent(s.id)}/reset-key`);
    const entry = cards.get(s.id);
    if (entry && updated?.id) {
      entry.stream = updated;
      renderStreams([...cards.values()].map((c) => c.stream));
    }
    ui.status.textContent = 'Stream key reset.';
  } catch (err) {
    ui.status.textContent = `Reset failed: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

async function deleteStream(s, button) {
  if (!window.confirm(`Delete the live stream “${s.title || 'Untitled'}”? This cannot be undone.`)) return;
  button.disabled = true;
  try {
    await api('DELETE', `/api/v1/live-streams/${encodeURIComponent(s.id)}`);
    shownKeys.delete(s.id);
    const entry = cards.get(s.id);
    entry?.li.remove();
    cards.delete(s.id);
    ui.empty.hidden = cards.size > 0;
  } catch (err) {
    button.disabled = false;
    ui.status.textContent = `Delete failed: ${err.message}`;
  }
  refresh();
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') refresh();
});

mountTokenWidget($('token-form'), refresh);
refresh();
