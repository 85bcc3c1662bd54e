// Watch page: HLS (hls.js, or native) and DASH (dash.js) playback with a
// protocol toggle and a quality menu. Exposes `window.oxcastPlayer` for tests.

import { api, mountTokenWidget, formatDuration, sleep } from './api.js';
import {
  VENDOR,
  loadScript,
  showText,
  idFromPath,
  playVideo,
  destroyPlayer,
  createErrorLog,
  reportMediaErrors,
  protocolFromParams,
  markProtocolButtons,
  bindProtocolButtons,
  setProtocolParam,
  SINGLE_LEVEL,
  handleHlsErrors,
  hlsLevels,
  setHlsLevel,
  dashSettings,
  handleDashErrors,
  dashVideoReps,
  dashLevels,
  setDashLevel,
  createQualityMenu,
} from './player.js';

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
let protocol = protocolFromParams(params);
let current = null; // the active player adapter
let generation = 0; // bumps on every (re)start; stale events are ignored
let meta = null; // the video object

const { errors, record: recordError } = createErrorLog('player', (gen) => gen === generation);
const quality = createQualityMenu({
  select: ui.quality,
  info: ui.info,
  video,
  player: () => current,
  protocol: () => protocol,
  isCurrent: (gen) => gen === generation,
});

/** Test and debugging hook; see web/README.md. */
window.oxcastPlayer = {
  get protocol() {
    return protocol;
  },
  get engine() {
    return current?.engine ?? null;
  },
  errors,
  ...quality.hooks,
  setProtocol: (p) => switchProtocol(p),
  video,
};

const showMessage = (text) => showText(ui.message, text);
const showError = (text) => showText(ui.error, text);
const tryPlay = () => playVideo(video, autoplay);

// ---------------------------------------------------------------------------
// Player adapters: { engine, levels(), currentLevel(), isAuto(), setLevel(i), destroy() }
// ---------------------------------------------------------------------------

function createHlsPlayer(src, gen, startAt) {
  const Hls = window.Hls;
  const hls = new Hls({ startPosition: startAt > 0 ? startAt : -1 });

  handleHlsErrors(hls, {
    record: (fatal, text) => recordError(gen, fatal, text),
    isCurrent: () => gen === generation,
    maxNetworkRetries: 2,
    giveUp: (details) => showMessage(`Playback failed (${details}).`),
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    quality.levelsKnown(gen);
    if (autoplay || startAt > 0) tryPlay();
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, () => quality.levelChanged(gen));
  hls.on(Hls.Events.FRAG_CHANGED, () => quality.levelChanged(gen));
  hls.loadSource(src);
  hls.attachMedia(video);

  return {
    engine: 'hls.js',
    levels: () => hlsLevels(hls),
    currentLevel: () => hls.currentLevel,
    isAuto: () => hls.autoLevelEnabled,
    setLevel: (i) => setHlsLevel(hls, i),
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
      quality.levelsKnown(gen);
      if (autoplay || startAt > 0) tryPlay();
    },
    { once: true },
  );
  return {
    engine: 'native',
    ...SINGLE_LEVEL,
    destroy: () => {},
  };
}

function createDashPlayer(src, gen, startAt) {
  const dashjs = window.dashjs;
  const events = dashjs.MediaPlayer.events;
  const player = dashjs.MediaPlayer().create();
  let rendered = null; // representation on screen (QUALITY_CHANGE_RENDERED)
  let auto = true;

  player.updateSettings(dashSettings(dashjs));
  handleDashErrors(player, events, {
    record: (fatal, text) => recordError(gen, fatal, text),
    isCurrent: () => gen === generation,
    giveUp: (text) => showMessage(`Playback failed: ${text}`),
  });
  player.on(events.STREAM_INITIALIZED, () => {
    quality.levelsKnown(gen);
    if (autoplay || startAt > 0) tryPlay();
  });
  player.on(events.QUALITY_CHANGE_RENDERED, (e) => {
    if (e.mediaType !== 'video') return;
    rendered = e.newRepresentation || null;
    quality.levelChanged(gen);
  });

  const reps = () => dashVideoReps(player);
  const indexOf = (rep) => (rep ? reps().findIndex((r) => r.id === rep.id) : -1);

  player.initialize(video, src, autoplay || startAt > 0, startAt > 0 ? startAt : NaN);

  return {
    engine: 'dash.js',
    levels: () => dashLevels(reps()),
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
      auto = setDashLevel(player, i);
    },
    destroy: () => player.destroy(),
  };
}

// ---------------------------------------------------------------------------
// Player lifecycle
// ---------------------------------------------------------------------------

function teardown() {
  generation += 1;
  const old = current;
  current = null;
  destroyPlayer(old, video);
  quality.setLevels([]);
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
  quality.updateInfo();
}

function switchProtocol(next) {
  if (next !== 'hls' && next !== 'dash') return;
  if (next === protocol && current) return;
  const resumeAt = video.currentTime > 0 && !video.ended ? video.currentTime : 0;
  protocol = next;
  syncProtocolButtons();
  setProtocolParam(protocol);
  if (meta && meta.status === 'ready') startPlayer(resumeAt);
}

const syncProtocolButtons = () => markProtocolButtons(ui.protoButtons, protocol);
bindProtocolButtons(ui.protoButtons, switchProtocol);

reportMediaErrors(video, () => Boolean(current), (text) => recordError(generation, true, text));

// ---------------------------------------------------------------------------
// Video metadata
// ---------------------------------------------------------------------------

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
  const id = idFromPath('watch', params);
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
