// Index page: upload form + library.

import { api, mountTokenWidget, formatBytes, formatDuration, formatDate, el, sleep } from './api.js';
import { uploadFile } from './upload.js';

const $ = (id) => document.getElementById(id);
const FINAL = new Set(['ready', 'failed']);

// ---------------------------------------------------------------------------
// Upload form
// ---------------------------------------------------------------------------

const ui = {
  section: $('upload-section'),
  form: $('upload-form'),
  drop: $('drop-zone'),
  fileInput: $('file-input'),
  fileLabel: $('file-label'),
  title: $('title-input'),
  button: $('upload-button'),
  cancel: $('upload-cancel'),
  panel: $('upload-panel'),
  progress: $('upload-progress'),
  percent: $('upload-percent'),
  stats: $('upload-stats'),
  processing: $('processing'),
  processingProgress: $('processing-progress'),
  processingPercent: $('processing-percent'),
  status: $('upload-status'),
  error: $('upload-error'),
  watch: $('watch-link'),
};

let selectedFile = null;
let running = null; // AbortController of the upload in flight

function selectFile(file) {
  if (running) return;
  selectedFile = file || null;
  ui.drop.classList.toggle('has-file', Boolean(file));
  ui.fileLabel.textContent = file ? `${file.name} — ${formatBytes(file.size)}` : '';
  if (!file) ui.fileLabel.append('Drop a video file here, or ', el('u', '', 'choose one'));
  ui.title.placeholder = file ? file.name.replace(/\.[^.]+$/, '') : 'Title (optional)';
  ui.button.disabled = !file;
}

ui.fileInput.addEventListener('change', () => selectFile(ui.fileInput.files[0]));

for (const type of ['dragenter', 'dragover']) {
  ui.drop.addEventListener(type, (ev) => {
    ev.preventDefault();
    if (!running) ui.drop.classList.add('dragging');
  });
}
for (const type of ['dragleave', 'drop']) {
  ui.drop.addEventListener(type, () => ui.drop.classList.remove('dragging'));
}
ui.drop.addEventListener('drop', (ev) => {
  ev.preventDefault();
  const file = ev.dataTransfer?.files?.[0];
  if (file) selectFile(file);
});
// Dropping outside the zone must not navigate away from the page.
window.addEventListener('dragover', (ev) => ev.preventDefault());
window.addEventListener('drop', (ev) => ev.preventDefault());

function setState(state, text, videoId) {
  ui.section.dataset.state = state;
  ui.status.dataset.state = state;
  if (videoId) ui.status.dataset.videoId = videoId;
  ui.status.textContent = text;
}

function showError(message) {
  ui.error.hidden = !message;
  ui.error.textContent = message || '';
}

function showUploadProgress(p) {
  const pct = Math.min(100, Math.floor(p.percent));
  ui.progress.value = pct;
  ui.progress.dataset.percent = String(pct);
  ui.percent.textContent = `${pct}%`;
  const parts = [`${formatBytes(p.loaded)} / ${formatBytes(p.total)}`];
  if (p.bytesPerSec > 0) parts.push(`${(p.bytesPerSec / 1e6).toFixed(1)} MB/s`);
  if (p.loaded < p.total && Number.isFinite(p.etaSec) && p.bytesPerSec > 0) {
    parts.push(`ETA ${formatDuration(Math.max(1, p.etaSec))}`);
  }
  parts.push(`part ${p.partsDone}/${p.partsTotal}`);
  ui.stats.textContent = parts.join(' · ');
}

function showProcessing(video) {
  const pct = Math.round(Math.min(1, Math.max(0, Number(video.progress) || 0)) * 100);
  ui.processing.hidden = false;
  ui.processingProgress.value = pct;
  ui.processingPercent.textContent = `${pct}%`;
}

ui.form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (!selectedFile || running) return;
  const file = selectedFile;
  const title = ui.title.value.trim();
  const ctl = new AbortController();
  running = ctl;

  ui.button.disabled = true;
  ui.fileInput.disabled = true;
  ui.title.disabled = true;
  ui.cancel.hidden = false;
  ui.panel.hidden = false;
  ui.processing.hidden = true;
  ui.watch.hidden = true;
  delete ui.status.dataset.videoId;
  showError('');
  showUploadProgress({ loaded: 0, total: file.size, percent: 0, bytesPerSec: 0, partsDone: 0, partsTotal: 0 });
  setState('creating', 'Starting upload…');

  let video;
  try {
    video = await uploadFile(file, {
      title,
      signal: ctl.signal,
      onProgress: showUploadProgress,
      onState: (state, info) => {
        if (state === 'uploading') setState('uploading', `Uploading ${file.name}…`, info.videoId);
        if (state === 'completing') setState('completing', 'Finishing upload…', info.videoId);
      },
    });
  } catch (err) {
    finishUpload();
    if (err.name === 'AbortError') {
      setState('cancelled', 'Upload cancelled.');
    } else {
      setState('error', 'Upload failed.');
      showError(err.message);
    }
    return;
  }
  ui.cancel.hidden = true;
  setState(video.status || 'queued', 'Uploaded. Waiting for processing…', video.id);
  refreshLibrary();
  await followProcessing(video, ctl.signal);
  finishUpload();
});

ui.cancel.addEventListener('click', () => running?.abort());

function finishUpload() {
  running = null;
  ui.cancel.hidden = true;
  ui.fileInput.disabled = false;
  ui.title.disabled = false;
  ui.button.disabled = !selectedFile;
}

/** Polls the video every second until it is ready or failed. */
async function followProcessing(video, signal) {
  let v = video;
  let lastStatus = '';
  for (;;) {
    if (v.status !== lastStatus) refreshLibrary();
    lastStatus = v.status;
    if (v.status === 'ready') {
      showProcessing({ progress: 1 });
      setState('ready', 'Ready to watch.', v.id);
      ui.watch.href = `/watch/${encodeURIComponent(v.id)}`;
      ui.watch.dataset.videoId = v.id;
      ui.watch.hidden = false;
      return;
    }
    if (v.status === 'failed') {
      setState('failed', 'Processing failed.', v.id);
      showError(v.error || 'processing failed (no details)');
      return;
    }
    if (v.status === 'processing') {
      showProcessing(v);
      setState('processing', 'Processing…', v.id);
    } else {
      setState(v.status || 'queued', v.status === 'uploading' ? 'Upload registered…' : 'Queued for processing…', v.id);
    }
    try {
      await sleep(1000, signal);
    } catch {
      return;
    }
    try {
      v = await api('GET', `/api/v1/videos/${encodeURIComponent(v.id)}`, undefined, { signal });
      showError('');
    } catch (err) {
      if (err.name === 'AbortError') return;
      showError(`Could not check processing status: ${err.message}`); // keep polling
    }
  }
}

// ---------------------------------------------------------------------------
// Library
// ---------------------------------------------------------------------------

const lib = {
  list: $('library'),
  empty: $('library-empty'),
  status: $('library-status'),
  cards: new Map(), // id → { li, sig }
  timer: 0,
  loading: false,
};

async function refreshLibrary() {
  clearTimeout(lib.timer);
  if (lib.loading) {
    lib.timer = setTimeout(refreshLibrary, 500);
    return;
  }
  lib.loading = true;
  let videos = null;
  try {
    const data = await api('GET', '/api/v1/videos');
    videos = Array.isArray(data?.videos) ? data.videos : [];
    lib.status.textContent = '';
  } catch (err) {
    lib.status.textContent = `Could not load the library: ${err.message}`;
  } finally {
    lib.loading = false;
  }
  if (videos) renderLibrary(videos);
  const busy = !videos || videos.some((v) => !FINAL.has(v.status));
  if (busy) lib.timer = setTimeout(refreshLibrary, videos ? 3000 : 10000);
}

function renderLibrary(videos) {
  const seen = new Set();
  videos.forEach((v, i) => {
    seen.add(v.id);
    let entry = lib.cards.get(v.id);
    if (!entry) {
      entry = { li: el('li', 'video-card'), sig: '' };
      entry.li.dataset.testid = 'video-card';
      lib.cards.set(v.id, entry);
    }
    const sig = JSON.stringify([v.title, v.status, v.progress, v.error, v.duration_s, v.height, v.poster_url]);
    if (sig !== entry.sig) {
      fillCard(entry.li, v);
      entry.sig = sig;
    }
    if (lib.list.children[i] !== entry.li) lib.list.insertBefore(entry.li, lib.list.children[i] || null);
  });
  for (const [id, entry] of lib.cards) {
    if (!seen.has(id)) {
      entry.li.remove();
      lib.cards.delete(id);
    }
  }
  lib.empty.hidden = videos.length > 0;
}

function fillCard(li, v) {
  const status = String(v.status || 'unknown');
  const ready = status === 'ready';
  const watchHref = `/watch/${encodeURIComponent(v.id)}`;
  const title = v.title || 'Untitled';
  li.dataset.videoId = v.id;
  li.dataset.status = status;
  li.replaceChildren();

  const thumb = el(ready ? 'a' : 'div', 'thumb');
  if (ready) {
    thumb.href = watchHref;
    thumb.setAttribute('aria-label', `Watch ${title}`);
    if (v.poster_url) {
      const img = el('img');
      img.src = v.poster_url;
      img.alt = '';
      img.loading = 'lazy';
      img.decoding = 'async';
      img.addEventListener('error', () => img.remove(), { once: true });
      thumb.append(img);
    }
    thumb.append(el('span', 'play-glyph', '▶'));
  } else {
    thumb.append(el('span', 'thumb-state', status === 'failed' ? 'failed' : `${status}…`));
  }
  if (Number.isFinite(v.duration_s)) thumb.append(el('span', 'duration', formatDuration(v.duration_s)));

  const meta = el('div', 'meta');
  const titleEl = el(ready ? 'a' : 'span', 'title', title);
  titleEl.title = title;
  if (ready) titleEl.href = watchHref;
  meta.append(titleEl);

  const row = el('div', 'meta-row');
  const badge = el('span', `badge status-${status.replace(/[^a-z]/g, '')}`, status);
  badge.dataset.testid = 'status-badge';
  row.append(badge);
  if (v.height) row.append(el('span', 'muted', `${v.height}p`));
  if (v.created_at) row.append(el('span', 'muted', formatDate(v.created_at)));
  meta.append(row);

  if (status === 'processing' || status === 'queued') {
    const pct = Math.round(Math.min(1, Math.max(0, Number(v.progress) || 0)) * 100);
    const bar = el('progress', 'card-progress');
    bar.max = 100;
    bar.value = pct;
    bar.setAttribute('aria-label', `Processing ${pct}%`);
    meta.append(bar);
  }
  if (status === 'failed' && v.error) meta.append(el('p', 'error-text small', v.error));

  const del = el('button', 'btn small danger delete', 'Delete');
  del.type = 'button';
  del.dataset.testid = 'delete-video';
  del.addEventListener('click', () => deleteVideo(v.id, title, del));
  meta.append(del);

  li.append(thumb, meta);
}

async function deleteVideo(id, title, button) {
  if (!window.confirm(`Delete “${title}”? This cannot be undone.`)) return;
  button.disabled = true;
  try {
    await api('DELETE', `/api/v1/videos/${encodeURIComponent(id)}`);
    const entry = lib.cards.get(id);
    entry?.li.remove();
    lib.cards.delete(id);
    lib.empty.hidden = lib.cards.size > 0;
  } catch (err) {
    button.disabled = false;
    lib.status.textContent = `Delete failed: ${err.message}`;
  }
  refreshLibrary();
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') refreshLibrary();
});

mountTokenWidget($('token-form'), refreshLibrary);
refreshLibrary();
