// Watch page: HLS (hls.js, or native) and DASH (dash.js) playback with a
// protocol toggle and a quality menu. Exposes `window.oxcastPlayer` for tests.

import { api, mountTokenWidget, formatDuration, sleep } from './api.js';

const VENDOR = {
  hls: '/static/vendor/hls.min.js',
  dash: '/static/vendor/dash.all.min.js',
};

const $ = (id) => document.getElementById(id);
const video = $('video');
const ui = {
  title: $('video-title'),
  status: $('video-status'),
  meta: $('video-meta'),
  message: $('player-message'),
  info: $('playback-info'),
  quality: $('quality-select'),
  protoButtons: [$('protocol-hls'), $('protocol-dash')],
  processingLine: $('processing-line'),
  processing: $('processing-progress'),
  processingPercent: $('processing-percent'),
  error: $('video-error'),
  hlsUrl: $('hls-url'),
  dashUrl: $('dash-url'),
};

const params = new URLSearchParams(location.search);
const autoplay = params.get('autoplay') === '1';
let protocol = params.get('protocol') === 'dash' ? 'dash' : 'hls';
let current = null; // the active player adapter
let generation = 0; // bumps on every (re)start; stale events are ignored
let meta = null; // the video object

const errors = [];

/** Test and debugging hook; see web/README.md. */
window.oxcastPlayer = {
  get protocol() {
    return protocol;
  },
  get engine() {
    return current?.engine ?? null;
  },
  errors,
  levels: () => (current ? current.levels() : []),
  currentLevel: () => (current ? current.currentLevel() : -1),
  autoLevel: () => (current ? current.isAuto() : true),
  setLevel: (i) => {
    current?.setLevel(Number(i));
    syncQualityMenu();
  },
  setProtocol: (p) => switchProtocol(p),
  video,
};

function recordError(gen, fatal, text) {
  if (gen !== generation) return;
  const line = `${fatal ? 'fatal' : 'non-fatal'} ${text}`;
  errors.push(line);
  (fatal ? console.error : console.warn)(`oxcast player: ${line}`);
}

function showMessage(text) {
  ui.message.hidden = !text;
  ui.message.textContent = text || '';
}

function showError(text) {
  ui.error.hidden = !text;
  ui.error.textContent = text || '';
}

// ---------------------------------------------------------------------------
// Vendor script loading (classic UMD bundles exposing window.Hls / window.dashjs)
// ---------------------------------------------------------------------------

const scripts = new Map();
function loadScript(src) {
  if (!scripts.has(src)) {
    scripts.set(
      src,
      new Promise((resolve, reject) => {
        const s = document.createElement('script');
        s.src = src;
        s.async = true;
        s.onload = () => resolve();
        s.onerror = () => {
          scripts.delete(src);
          reject(new Error(`could not load ${src}`));
        };
        document.head.append(s);
      }),
    );
  }
  return scripts.get(src);
}

// ---------------------------------------------------------------------------
// Player adapters: { engine, levels(), currentLevel(), isAuto(), setLevel(i), destroy() }
// ---------------------------------------------------------------------------

function createHlsPlayer(src, gen, startAt) {
  const Hls = window.Hls;
  const hls = new Hls({ startPosition: startAt > 0 ? startAt : -1 });
  let mediaRecoveries = 0;
  let networkRecoveries = 0;

  hls.on(Hls.Events.ERROR, (_evt, d) => {
    const http = d.response && d.response.code ? ` HTTP ${d.response.code}` : '';
    const url = d.frag?.url || d.context?.url || d.url || '';
    const detail = d.error?.message || d.reason || '';
    recordError(gen, d.fatal, `hls ${d.type}/${d.details}${http}${detail ? `: ${detail}` : ''}${url ? ` (${url})` : ''}`);
    if (!d.fatal || gen !== generation) return;
    if (d.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRecoveries < 2) {
      mediaRecoveries += 1;
      hls.recoverMediaError();
    } else if (d.type === Hls.ErrorTypes.NETWORK_ERROR && networkRecoveries < 2) {
      networkRecoveries += 1;
      hls.startLoad();
    } else {
      showMessage(`Playback failed (${d.details}).`);
    }
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    onLevelsKnown(gen);
    if (autoplay || startAt > 0) tryPlay();
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, () => onLevelChanged(gen));
  hls.on(Hls.Events.FRAG_CHANGED, () => onLevelChanged(gen));
  hls.loadSource(src);
  hls.attachMedia(video);

  return {
    engine: 'hls.js',
    levels: () => (hls.levels || []).map((l, index) => ({ index, height: l.height, width: l.width, bitrate: l.bitrate })),
    currentLevel: () => hls.currentLevel,
    isAuto: () => hls.autoLevelEnabled,
    // currentLevel: switch now (flushes the buffer); -1 re-enables ABR.
    setLevel: (i) => {
      hls.currentLevel = i >= 0 && i < (hls.levels || []).length ? i : -1;
    },
    destroy: () => hls.destroy(),
  };
}

function createNativePlayer(src, gen, startAt) {
  video.src = src;
  video.addEventListener(
    'loadedmetadata',
    () => {
      if (gen !== generation) return;
      if (startAt > 0) video.currentTime = startAt;
      onLevelsKnown(gen);
      if (autoplay || startAt > 0) tryPlay();
    },
    { once: true },
  );
  return {
    engine: 'native',
    levels: () => [],
    currentLevel: () => -1,
    isAuto: () => true,
    setLevel: () => {},
    destroy: () => {},
  };
}

function createDashPlayer(src, gen, startAt) {
  const dashjs = window.dashjs;
  const events = dashjs.MediaPlayer.events;
  const player = dashjs.MediaPlayer().create();
  let rendered = null; // representation on screen (QUALITY_CHANGE_RENDERED)
  let auto = true;

  player.updateSettings({
    debug: { logLevel: dashjs.Debug?.LOG_LEVEL_WARNING ?? 3 },
    streaming: { abr: { autoSwitchBitrate: { video: true } }, cmcd: { enabled: false } },
  });
  player.on(events.ERROR, (e) => {
    const err = e.error || {};
    const text = err.message || (typeof e.error === 'string' ? e.error : JSON.stringify(err));
    recordError(gen, true, `dash error ${err.code ?? ''}: ${text}`);
    if (gen === generation) showMessage(`Playback failed: ${text}`);
  });
  if (events.PLAYBACK_WARNING) {
    player.on(events.PLAYBACK_WARNING, (e) => recordError(gen, false, `dash warning: ${e.error || ''}`));
  }
  player.on(events.STREAM_INITIALIZED, () => {
    onLevelsKnown(gen);
    if (autoplay || startAt > 0) tryPlay();
  });
  player.on(events.QUALITY_CHANGE_RENDERED, (e) => {
    if (e.mediaType !== 'video') return;
    rendered = e.newRepresentation || null;
    onLevelChanged(gen);
  });

  const reps = () => {
    try {
      return player.getRepresentationsByType('video') || [];
    } catch {
      return []; // streaming not initialised yet
    }
  };
  const indexOf = (rep) => (rep ? reps().findIndex((r) => r.id === rep.id) : -1);

  player.initialize(video, src, autoplay || startAt > 0, startAt > 0 ? startAt : NaN);

  return {
    engine: 'dash.js',
    levels: () => reps().map((r, index) => ({ index, height: r.height, width: r.width, bitrate: r.bandwidth })),
    currentLevel: () => {
      let i = indexOf(rendered);
      if (i < 0 && video.videoHeight) i = reps().findIndex((r) => r.height === video.videoHeight);
      if (i < 0) {
        try {
          i = indexOf(player.getCurrentRepresentationForType('video'));
        } catch {
          i = -1;
        }
      }
      return i;
    },
    isAuto: () => auto,
    setLevel: (i) => {
      auto = !(i >= 0);
      player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: auto } } } });
      if (auto) return;
      if (typeof player.setRepresentationForTypeByIndex === 'function') {
        player.setRepresentationForTypeByIndex('video', i, true); // dash.js v5
      } else if (typeof player.setQualityFor === 'function') {
        player.setQualityFor('video', i, true); // dash.js v4
      }
    },
    destroy: () => player.destroy(),
  };
}

function tryPlay() {
  if (autoplay) video.muted = true;
  const p = video.play();
  if (p && p.catch) p.catch((err) => console.warn(`oxcast: play() refused: ${err.message}`));
}

// ---------------------------------------------------------------------------
// Player lifecycle
// ---------------------------------------------------------------------------

function teardown() {
  generation += 1;
  if (current) {
    try {
      current.destroy();
    } catch (err) {
      console.warn('oxcast: player teardown failed', err);
    }
    current = null;
  }
  video.removeAttribute('src');
  video.load();
  setQualityOptions([]);
}

async function startPlayer(startAt = 0) {
  teardown();
  const gen = generation;
  showMessage('');
  const url = protocol === 'dash' ? meta.dash_url : meta.hls_url;
  if (!url) {
    showMessage(`No ${protocol.toUpperCase()} stream for this video.`);
    return;
  }
  try {
    if (protocol === 'hls') {
      let hlsOk = false;
      try {
        await loadScript(VENDOR.hls);
        hlsOk = Boolean(window.Hls && window.Hls.isSupported());
      } catch (err) {
        console.warn(`oxcast: ${err.message}`);
      }
      if (gen !== generation) return;
      if (hlsOk) current = createHlsPlayer(url, gen, startAt);
      else if (video.canPlayType('application/vnd.apple.mpegurl')) current = createNativePlayer(url, gen, startAt);
      else throw new Error('this browser cannot play HLS (no Media Source Extensions, no native HLS)');
    } else {
      await loadScript(VENDOR.dash);
      if (gen !== generation) return;
      if (!window.dashjs) throw new Error('dash.js did not load');
      if (window.dashjs.supportsMediaSource && !window.dashjs.supportsMediaSource()) {
        throw new Error('this browser cannot play DASH (no Media Source Extensions)');
      }
      current = createDashPlayer(url, gen, startAt);
    }
  } catch (err) {
    recordError(gen, true, `${protocol} setup: ${err.message}`);
    showMessage(err.message);
  }
  updateInfo();
}

function switchProtocol(next) {
  if (next !== 'hls' && next !== 'dash') return;
  if (next === protocol && current) return;
  const resumeAt = video.currentTime > 0 && !video.ended ? video.currentTime : 0;
  protocol = next;
  syncProtocolButtons();
  const q = new URLSearchParams(location.search);
  q.set('protocol', protocol);
  history.replaceState(null, '', `${location.pathname}?${q}`);
  if (meta && meta.status === 'ready') startPlayer(resumeAt);
}

function syncProtocolButtons() {
  for (const b of ui.protoButtons) b.setAttribute('aria-pressed', String(b.dataset.protocol === protocol));
}

for (const b of ui.protoButtons) b.addEventListener('click', () => switchProtocol(b.dataset.protocol));

// ---------------------------------------------------------------------------
// Quality menu and info line
// ---------------------------------------------------------------------------

const heightLabel = (l) => (l.height ? `${l.height}p` : `${Math.round(l.bitrate / 1000)} kbps`);

function setQualityOptions(levels) {
  const auto = new Option('Auto', '-1');
  const sorted = [...levels].sort((a, b) => b.height - a.height || b.bitrate - a.bitrate);
  const counts = new Map();
  for (const l of sorted) counts.set(l.height, (counts.get(l.height) || 0) + 1);
  const options = sorted.map((l) => {
    const dup = counts.get(l.height) > 1;
    const label = dup ? `${heightLabel(l)} · ${Math.round(l.bitrate / 1000)} kbps` : heightLabel(l);
    return new Option(label, String(l.index));
  });
  ui.quality.replaceChildren(auto, ...options);
  ui.quality.disabled = levels.length < 2;
}

function onLevelsKnown(gen) {
  if (gen !== generation || !current) return;
  setQualityOptions(current.levels());
  syncQualityMenu();
  updateInfo();
}

function onLevelChanged(gen) {
  if (gen !== generation) return;
  syncQualityMenu();
  updateInfo();
}

function syncQualityMenu() {
  if (!current) return;
  const levels = current.levels();
  const now = levels[current.currentLevel()];
  const autoOpt = ui.quality.options[0];
  if (autoOpt) autoOpt.textContent = now && current.isAuto() ? `Auto (${heightLabel(now)})` : 'Auto';
  ui.quality.value = current.isAuto() ? '-1' : String(current.currentLevel());
}

ui.quality.addEventListener('change', () => {
  if (!current) return;
  current.setLevel(Number(ui.quality.value));
  syncQualityMenu();
  updateInfo();
});

function updateInfo() {
  if (!current) {
    ui.info.textContent = '';
    return;
  }
  const parts = [`${protocol.toUpperCase()} via ${current.engine}`];
  const levels = current.levels();
  const now = levels[current.currentLevel()];
  if (video.videoWidth) parts.push(`${video.videoWidth}×${video.videoHeight}`);
  if (now?.bitrate) parts.push(`${Math.round(now.bitrate / 1000)} kbps`);
  if (levels.length) parts.push(`${levels.length} qualities`);
  ui.info.textContent = parts.join(' · ');
}

video.addEventListener('resize', updateInfo);
video.addEventListener('error', () => {
  const e = video.error;
  if (!e || !current) return; // teardown empties the element; not an error
  const names = ['', 'MEDIA_ERR_ABORTED', 'MEDIA_ERR_NETWORK', 'MEDIA_ERR_DECODE', 'MEDIA_ERR_SRC_NOT_SUPPORTED'];
  recordError(generation, true, `video ${names[e.code] || e.code}: ${e.message || ''}`);
});

// ---------------------------------------------------------------------------
// Video metadata
// ---------------------------------------------------------------------------

function videoIdFromPath() {
  const segs = location.pathname.split('/').filter(Boolean);
  const i = segs.indexOf('watch');
  if (i >= 0 && segs[i + 1]) return decodeURIComponent(segs[i + 1]);
  return params.get('id') || '';
}

function showVideo(v) {
  meta = v;
  const title = v.title || 'Untitled';
  ui.title.textContent = title;
  document.title = `${title} · oxcast`;
  const status = String(v.status || 'unknown');
  ui.status.textContent = status;
  ui.status.className = `badge status-${status.replace(/[^a-z]/g, '')}`;
  const bits = [];
  if (v.width && v.height) bits.push(`${v.width}×${v.height}`);
  if (Number.isFinite(v.duration_s)) bits.push(formatDuration(v.duration_s));
  if (Array.isArray(v.renditions) && v.renditions.length) {
    bits.push(`${v.renditions.length} renditions`);
  }
  ui.meta.textContent = bits.join(' · ');
  ui.hlsUrl.textContent = v.hls_url ? new URL(v.hls_url, location.href).href : '–';
  ui.dashUrl.textContent = v.dash_url ? new URL(v.dash_url, location.href).href : '–';
  if (status === 'processing' || status === 'queued') {
    const pct = Math.round(Math.min(1, Math.max(0, Number(v.progress) || 0)) * 100);
    ui.processingLine.hidden = false;
    ui.processing.value = pct;
    ui.processingPercent.textContent = `${pct}%`;
  } else {
    ui.processingLine.hidden = true;
  }
  showError(status === 'failed' ? v.error || 'processing failed' : '');
  if (status === 'ready' && v.poster_url) video.poster = v.poster_url;
}

async function main() {
  syncProtocolButtons();
  const id = videoIdFromPath();
  if (!id) {
    ui.title.textContent = 'No video selected';
    showMessage('No video id in the address.');
    return;
  }
  let delay = 1000;
  for (;;) {
    let v;
    try {
      v = await api('GET', `/api/v1/videos/${encodeURIComponent(id)}`);
    } catch (err) {
      ui.title.textContent = err.status === 404 ? 'Video not found' : 'Could not load video';
      showMessage(err.message);
      if (err.status === 404 || err.status === 401 || err.status === 403) {
        recordError(generation, true, `page: GET video ${id}: ${err.message}`);
        return;
      }
      await sleep(5000);
      continue;
    }
    showVideo(v);
    if (v.status === 'ready') {
      showMessage('');
      await startPlayer(0);
      return;
    }
    if (v.status === 'failed') {
      showMessage('This video could not be processed.');
      recordError(generation, true, `page: video ${id} failed: ${v.error || 'no details'}`);
      return;
    }
    showMessage(`This video is ${v.status}. It will play as soon as it is ready.`);
    await sleep(delay);
    delay = Math.min(delay * 1.5, 5000);
  }
}

mountTokenWidget($('token-form'), () => {
  if (!current) main();
});
main();
