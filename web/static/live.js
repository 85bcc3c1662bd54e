// Live viewer: low-latency HLS (hls.js) with DVR over the whole session, or
// DASH (dash.js); a LIVE button, a quality menu, a stream-health panel, and
// viewer heartbeats (POST /live/{id}/watching) for the concurrent-viewer count.
// Exposes `window.oxcastLive` for tests (see web/README.md).

import { api, mountTokenWidget, formatDate, formatDuration, sleep } from './api.js';
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

const POLL_MS = 2000; // API health poll and idle playlist retry
const TICK_MS = 500; // LIVE button / latency display refresh
const HEARTBEAT_MS = 5000; // viewer heartbeat while starting / playing

const $ = (id) => document.getElementById(id);
const video = $('video');
const ui = {
  title: $('stream-title'),
  status: $('stream-status'),
  meta: $('stream-meta'),
  message: $('player-message'),
  endedOverlay: $('ended-overlay'),
  endedOverlayLink: $('ended-recording-link'),
  endedBanner: $('ended-banner'),
  endedText: $('ended-text'),
  recordingLink: $('recording-link'),
  info: $('playback-info'),
  error: $('live-error'),
  live: $('live-button'),
  quality: $('quality-select'),
  protoButtons: [$('protocol-hls'), $('protocol-dash')],
  hlsUrl: $('hls-url'),
  dashUrl: $('dash-url'),
  health: {
    status: $('health-status'),
    ingest: $('health-ingest'),
    fps: $('health-fps'),
    dropped: $('health-dropped'),
    speed: $('health-speed'),
    latency: $('health-latency'),
    player: $('player-latency'),
    behind: $('player-behind'),
  },
};

const params = new URLSearchParams(location.search);
const autoplay = params.get('autoplay') === '1';
let protocol = protocolFromParams(params);
const streamId = idFromPath('streams', params);

let meta = null; // last stream object from the API
let current = null; // active player adapter
let generation = 0; // bumps on every (re)start; stale events are ignored
let phase = 'loading'; // loading | waiting | starting | playing | ended
let watchedSession = null; // id of the session the player was started for
let endedSession = null; // id of the session we saw end (no restart for it)
let probing = false;

const { errors, record: recordError } = createErrorLog('live', (gen) => gen === generation);
const quality = createQualityMenu({
  select: ui.quality,
  info: ui.info,
  video,
  player: () => current,
  protocol: () => protocol,
  isCurrent: (gen) => gen === generation,
  extraInfo: (player) => {
    const r = seekableRange();
    return r && player.isLive() ? [`DVR ${formatDuration(r.end - r.start)}`] : [];
  },
});

/** Test and debugging hook; see web/README.md. */
window.oxcastLive = {
  get hls() {
    return current?.hls ?? null;
  },
  get dash() {
    return current?.dash ?? null;
  },
  get protocol() {
    return protocol;
  },
  get engine() {
    return current?.engine ?? null;
  },
  get phase() {
    return phase;
  },
  video,
  errors,
  latency: () => (current ? current.latency() : null),
  ...quality.hooks,
  seekTo: (t) => {
    video.currentTime = Number(t);
  },
  goLive: () => goLive(),
  atLiveEdge: () => atLiveEdge(),
  seekable: () => seekableRange(),
  setProtocol: (p) => switchProtocol(p),
};

const showMessage = (text) => showText(ui.message, text);
const showError = (text) => showText(ui.error, text);
const tryPlay = () => playVideo(video, autoplay);

const hlsUrl = () => meta?.hls_url || `/live/${encodeURIComponent(streamId)}/master.m3u8`;
const dashUrl = () => meta?.dash_url || `/live/${encodeURIComponent(streamId)}/manifest.mpd`;

// ---------------------------------------------------------------------------
// Player adapters: { engine, levels(), currentLevel(), isAuto(), setLevel(i),
//   latency(), liveEdge(), targetLatency(), isLive(), destroy() }
// ---------------------------------------------------------------------------

function createHlsPlayer(src, gen) {
  const Hls = window.Hls;
  const hls = new Hls({
    lowLatencyMode: true, // LL-HLS parts, start at PART-HOLD-BACK
    backBufferLength: Infinity, // keep what was played (DVR scrubbing without refetch)
    liveDurationInfinity: true, // MediaSource duration = Infinity, seekable = whole EVENT playlist
    maxLiveSyncPlaybackRate: 1.5, // catch up (≤ 1.5×) when drifting behind the target latency
    // liveMaxLatencyDurationCount stays Infinity: never yank a DVR viewer back to live.
  });
  const errorHandling = handleHlsErrors(hls, {
    record: (fatal, text) => recordError(gen, fatal, text),
    isCurrent: () => gen === generation,
    maxNetworkRetries: 3,
    // Most likely the broadcast went away (playlist 404). Back to waiting.
    giveUp: (details) => playerLost(gen, `Playback stopped (${details}).`),
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    quality.levelsKnown(gen);
    if (autoplay) tryPlay();
  });
  hls.on(Hls.Events.LEVEL_UPDATED, (_evt, d) => {
    if (gen !== generation) return;
    errorHandling.resetNetworkRetries();
    if (d.details && !d.details.live) onEndlist(gen);
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, () => quality.levelChanged(gen));
  hls.on(Hls.Events.FRAG_CHANGED, () => quality.levelChanged(gen));
  hls.loadSource(src);
  hls.attachMedia(video);

  const details = () => hls.latestLevelDetails || null;
  return {
    engine: 'hls.js',
    hls,
    levels: () => hlsLevels(hls),
    currentLevel: () => hls.currentLevel,
    isAuto: () => hls.autoLevelEnabled,
    setLevel: (i) => setHlsLevel(hls, i),
    isLive: () => Boolean(details()?.live),
    // Same formula as hls.latency (edge + playlist age − currentTime), but
    // also fresh while paused (hls.latency only updates on timeupdate).
    latency: () => {
      const d = details();
      if (!d || !d.live || !Number.isFinite(d.edge)) return null;
      const l = d.edge + (d.age || 0) - video.currentTime;
      return Number.isFinite(l) ? l : null;
    },
    targetLatency: () => hls.targetLatency ?? null,
    targetDuration: () => details()?.partTarget || details()?.targetduration || 2,
    liveEdge: () => hls.liveSyncPosition ?? null,
    destroy: () => hls.destroy(),
  };
}

function createDashPlayer(src, gen) {
  const dashjs = window.dashjs;
  const events = dashjs.MediaPlayer.events;
  const player = dashjs.MediaPlayer().create();
  let rendered = null;
  let auto = true;

  // dash.js 5 has no `lowLatencyEnabled` switch: low-latency mode follows the
  // MPD (ServiceDescription / availabilityTimeOffset). Catch-up is enabled here.
  player.updateSettings(
    dashSettings(dashjs, {
      liveCatchup: { enabled: true, playbackRate: { min: -0.5, max: 0.5 } },
      buffer: { bufferToKeep: 3600 },
    }),
  );
  handleDashErrors(player, events, {
    record: (fatal, text) => recordError(gen, fatal, text),
    isCurrent: () => gen === generation,
    giveUp: (text) => playerLost(gen, `Playback failed: ${text}`),
  });
  player.on(events.STREAM_INITIALIZED, () => {
    quality.levelsKnown(gen);
    if (autoplay) tryPlay();
  });
  player.on(events.QUALITY_CHANGE_RENDERED, (e) => {
    if (e.mediaType !== 'video') return;
    rendered = e.newRepresentation || null;
    quality.levelChanged(gen);
  });
  if (events.MANIFEST_LOADED) {
    player.on(events.MANIFEST_LOADED, (e) => {
      if (e.data && e.data.type === 'static') onEndlist(gen);
    });
  }

  const reps = () => dashVideoReps(player);
  const indexOf = (rep) => (rep ? reps().findIndex((r) => r.id === rep.id) : -1);
  const safe = (fn, dflt = null) => {
    try {
      const v = fn();
      return Number.isFinite(v) ? v : dflt;
    } catch {
      return dflt;
    }
  };

  player.initialize(video, src, autoplay);

  return {
    engine: 'dash.js',
    dash: player,
    levels: () => dashLevels(reps()),
    currentLevel: () => {
      let i = indexOf(rendered);
      if (i < 0 && video.videoHeight) i = reps().findIndex((r) => r.height === video.videoHeight);
      return i;
    },
    isAuto: () => auto,
    setLevel: (i) => {
      auto = setDashLevel(player, i);
    },
    isLive: () => safe(() => (player.isDynamic() ? 1 : 0), 0) === 1,
    latency: () => (safe(() => (player.isDynamic() ? 1 : 0), 0) ? safe(() => player.getCurrentLiveLatency()) : null),
    targetLatency: () => safe(() => player.getTargetLiveDelay()),
    targetDuration: () => 2,
    liveEdge: () => {
      const w = (() => {
        try {
          return player.getDvrWindow();
        } catch {
          return null;
        }
      })();
      const target = safe(() => player.getTargetLiveDelay(), 3);
      return w && Number.isFinite(w.end) ? Math.max(w.start ?? 0, w.end - target) : null;
    },
    goLive: () => player.seekToOriginalLive(),
    destroy: () => player.reset(),
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
  updateLiveButton();
}

async function startPlayer() {
  teardown();
  const gen = generation;
  phase = 'starting';
  syncHeartbeat();
  watchedSession = meta?.current_session?.id ?? null;
  showMessage('');
  hideEnded();
  try {
    if (protocol === 'hls') {
      await loadScript(VENDOR.hls);
      if (gen !== generation) return;
      if (window.Hls && window.Hls.isSupported()) {
        current = createHlsPlayer(hlsUrl(), gen);
      } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
        current = createNativePlayer(hlsUrl(), gen);
      } else {
        throw new Error('this browser cannot play HLS (no Media Source Extensions, no native HLS)');
      }
    } else {
      await loadScript(VENDOR.dash);
      if (gen !== generation) return;
      if (!window.dashjs) throw new Error('dash.js did not load');
      current = createDashPlayer(dashUrl(), gen);
    }
    phase = 'playing';
  } catch (err) {
    recordError(gen, true, `${protocol} setup: ${err.message}`);
    showMessage(err.message);
    phase = 'waiting';
  }
  syncHeartbeat();
  quality.updateInfo();
}

/** Safari / iOS: native HLS; no levels, latency from seekable end. */
function createNativePlayer(src, gen) {
  video.src = src;
  video.addEventListener(
    'loadedmetadata',
    () => {
      if (gen !== generation) return;
      quality.levelsKnown(gen);
      if (autoplay) tryPlay();
    },
    { once: true },
  );
  const end = () => (video.seekable.length ? video.seekable.end(video.seekable.length - 1) : null);
  return {
    engine: 'native',
    ...SINGLE_LEVEL,
    isLive: () => video.duration === Infinity,
    latency: () => (end() === null ? null : end() - video.currentTime),
    targetLatency: () => null,
    targetDuration: () => 2,
    liveEdge: () => end(),
    destroy: () => {},
  };
}

/** The player gave up (fatal error after retries): tear down and wait again. */
function playerLost(gen, text) {
  if (gen !== generation) return;
  teardown();
  if (phase === 'ended') {
    showEndedOverlay();
    return;
  }
  phase = 'waiting';
  showMessage(text);
  setTimeout(() => {
    if (phase === 'waiting') tick();
  }, 500);
}

function switchProtocol(next) {
  if (next !== 'hls' && next !== 'dash') return;
  if (next === protocol && current) return;
  protocol = next;
  syncProtocolButtons();
  setProtocolParam(protocol);
  if (current) startPlayer();
  else tick();
}

const syncProtocolButtons = () => markProtocolButtons(ui.protoButtons, protocol);
bindProtocolButtons(ui.protoButtons, switchProtocol);

// ---------------------------------------------------------------------------
// Live edge, DVR
// ---------------------------------------------------------------------------

function seekableRange() {
  const s = video.seekable;
  if (!s || s.length === 0) return null;
  return { start: s.start(0), end: s.end(s.length - 1) };
}

function atLiveEdge() {
  if (!current || !current.isLive() || video.paused) return false;
  const l = current.latency();
  if (l === null) return false;
  const target = current.targetLatency() ?? 3 * current.targetDuration();
  // Within one target duration (at least 1.5 s) of where the player aims to be.
  return l <= target + Math.max(1.5, current.targetDuration());
}

function goLive() {
  if (!current || !current.isLive()) return false;
  if (current.goLive) {
    current.goLive();
  } else {
    const edge = current.liveEdge();
    if (edge === null) return false;
    video.currentTime = edge;
  }
  if (video.paused) tryPlay();
  updateLiveButton();
  return true;
}

ui.live.addEventListener('click', () => goLive());

function updateLiveButton() {
  const live = Boolean(current && current.isLive());
  const edge = live && atLiveEdge();
  ui.live.disabled = !live;
  ui.live.dataset.atEdge = String(edge);
  ui.live.title = !live ? 'Not live' : edge ? 'Playing at the live edge' : 'Jump to the live edge';
  const l = current ? current.latency() : null;
  ui.health.player.textContent = l === null ? '—' : `${l.toFixed(1)} s`;
  const r = seekableRange();
  const behind = live && r && l !== null ? Math.max(0, l - (current.targetLatency() ?? 0)) : null;
  ui.health.behind.textContent = behind === null ? '—' : edge ? 'at live edge' : formatDuration(behind) || '—';
}

// ---------------------------------------------------------------------------
// End of a broadcast
// ---------------------------------------------------------------------------

function lastSession(stream) {
  const list = Array.isArray(stream?.sessions) ? stream.sessions : [];
  return [...list].sort((a, b) => String(b.started_at || '').localeCompare(String(a.started_at || '')))[0] || null;
}

function recordingVideoId() {
  const list = Array.isArray(meta?.sessions) ? meta.sessions : [];
  const watched = watchedSession ? list.find((s) => s.id === watchedSession) : null;
  return watched?.video_id || meta?.current_session?.video_id || lastSession(meta)?.video_id || null;
}

function setRecordingLink(a) {
  const id = recordingVideoId();
  a.hidden = !id;
  if (id) a.href = `/watch/${encodeURIComponent(id)}`;
}

/** The playlist got ENDLIST (or the MPD turned static): the broadcast is over. */
function onEndlist(gen) {
  if (gen !== generation || phase === 'ended') return;
  markEnded('Stream ended. You can watch to the end of what was broadcast.');
}

function markEnded(text) {
  phase = 'ended';
  syncHeartbeat();
  endedSession = watchedSession || meta?.current_session?.id || lastSession(meta)?.id || null;
  ui.endedText.textContent = text;
  setRecordingLink(ui.recordingLink);
  ui.endedBanner.hidden = false;
  updateLiveButton();
  if (!current || video.ended) showEndedOverlay();
}

function showEndedOverlay() {
  showMessage('');
  setRecordingLink(ui.endedOverlayLink);
  ui.endedOverlay.hidden = false;
}

function hideEnded() {
  ui.endedBanner.hidden = true;
  ui.endedOverlay.hidden = true;
}

video.addEventListener('ended', () => {
  if (phase === 'ended' || (meta && meta.status !== 'live')) {
    if (phase !== 'ended') markEnded('Stream ended.');
    showEndedOverlay();
  }
});

reportMediaErrors(video, () => Boolean(current), (text) => recordError(generation, true, text));

// ---------------------------------------------------------------------------
// Viewer heartbeats: POST /live/{id}/watching every 5 s while starting /
// playing, a `leaving` beacon on pagehide. Concurrent viewers are counted at
// the origin from these (a CDN collapses playlist requests). No API token.
// ---------------------------------------------------------------------------

const watchingUrl = () => `/live/${encodeURIComponent(streamId)}/watching`;
let viewerSession = null;
let heartbeatTimer = 0;
let heartbeatSent = false; // at least one heartbeat went out (so `leaving` means something)
let heartbeatWarned = false;
let unloaded = false; // between pagehide and pageshow

/** 32 random hex chars, the same for every load of this tab (sessionStorage). */
function viewerId() {
  if (viewerSession) return viewerSession;
  const key = `oxcast.viewer.${streamId}`;
  try {
    const stored = sessionStorage.getItem(key);
    if (stored && /^[0-9a-f]{32}$/.test(stored)) viewerSession = stored;
  } catch {
    /* storage unavailable: one id per page load */
  }
  if (!viewerSession) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    viewerSession = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    try {
      sessionStorage.setItem(key, viewerSession);
    } catch {
      /* as above */
    }
  }
  return viewerSession;
}

function warnHeartbeat(text) {
  if (heartbeatWarned) return;
  heartbeatWarned = true;
  console.warn(`oxcast: viewer heartbeat failed (${text}); viewers may be under-counted`);
}

function sendHeartbeat() {
  heartbeatSent = true;
  fetch(watchingUrl(), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ session: viewerId() }),
    keepalive: true,
    cache: 'no-store',
  })
    .then((res) => {
      if (!res.ok) warnHeartbeat(`HTTP ${res.status}`);
    })
    .catch((err) => warnHeartbeat(err.message));
}

/**
 * Starts or stops the heartbeat to match the phase. A background tab that plays is still a
 * viewer (it is listening), so visibility does not matter; unloading does.
 */
function syncHeartbeat() {
  const want = Boolean(streamId) && (phase === 'starting' || phase === 'playing') && !unloaded;
  if (want && !heartbeatTimer) {
    sendHeartbeat(); // once right away, then every 5 s
    heartbeatTimer = setInterval(sendHeartbeat, HEARTBEAT_MS);
  } else if (!want && heartbeatTimer) {
    clearInterval(heartbeatTimer);
    heartbeatTimer = 0;
  }
}

window.addEventListener('pagehide', () => {
  unloaded = true;
  syncHeartbeat(); // stops it
  if (heartbeatSent && navigator.sendBeacon) {
    const body = new Blob([JSON.stringify({ session: viewerId(), leaving: true })], { type: 'application/json' });
    navigator.sendBeacon(watchingUrl(), body);
  }
  heartbeatSent = false;
});
window.addEventListener('pageshow', (ev) => {
  if (!ev.persisted) return; // back/forward cache: resume as the same viewer
  unloaded = false;
  syncHeartbeat();
});

// ---------------------------------------------------------------------------
// Stream metadata + health (API, every 2 s)
// ---------------------------------------------------------------------------

const num = (v, digits = 0, unit = '') =>
  typeof v === 'number' && Number.isFinite(v) ? `${v.toFixed(digits)}${unit}` : '—';

function showStream(s) {
  meta = s;
  const title = s.title || 'Untitled';
  ui.title.textContent = title;
  document.title = `${title} · Live · oxcast`;
  const status = s.status === 'live' ? 'live' : 'idle';
  ui.status.textContent = status === 'live' ? '● live' : 'idle';
  ui.status.className = `badge status-${status}`;
  const started = s.current_session?.started_at;
  ui.meta.textContent = status === 'live' && started ? `live since ${formatDate(started)}` : '';
  ui.hlsUrl.textContent = new URL(hlsUrl(), location.href).href;
  ui.dashUrl.textContent = new URL(dashUrl(), location.href).href;

  const h = (status === 'live' && s.current_session?.health) || {};
  ui.health.status.textContent = status;
  ui.health.status.dataset.status = status;
  ui.health.ingest.textContent = num(h.ingest_kbps, 0, ' kbps');
  ui.health.fps.textContent = num(h.fps, 1);
  ui.health.dropped.textContent = num(h.dropped_frames);
  ui.health.speed.textContent = num(h.encoder_speed, 2, '×');
  ui.health.latency.textContent = num(h.latency_s, 1, ' s');
}

/**
 * Fetches the live playlist and tells whether it is playable right now:
 * 'live' (has segments, no ENDLIST / dynamic MPD), 'ended', or 'absent'.
 */
async function probePlaylist() {
  const get = async (url) => {
    const res = await fetch(url, { cache: 'no-store' });
    if (!res.ok) return null;
    return { text: await res.text(), url: res.url || new URL(url, location.href).href };
  };
  try {
    if (protocol === 'dash') {
      const r = await get(dashUrl());
      if (!r) return 'absent';
      return /type\s*=\s*["']dynamic["']/.test(r.text) ? 'live' : 'ended';
    }
    let r = await get(hlsUrl());
    if (!r) return 'absent';
    if (r.text.includes('#EXT-X-STREAM-INF')) {
      const lines = r.text.split(/\r?\n/);
      const i = lines.findIndex((l) => l.startsWith('#EXT-X-STREAM-INF'));
      const uri = lines.slice(i + 1).find((l) => l.trim() && !l.startsWith('#'));
      if (!uri) return 'absent';
      r = await get(new URL(uri.trim(), r.url).href);
      if (!r) return 'absent';
    }
    if (!/#EXTINF|#EXT-X-PART:/.test(r.text)) return 'absent';
    return r.text.includes('#EXT-X-ENDLIST') ? 'ended' : 'live';
  } catch (err) {
    console.warn(`oxcast: playlist probe failed: ${err.message}`);
    return 'absent';
  }
}

/** One round of the 2 s loop: refresh the stream, (re)start or stop playback. */
async function tick() {
  if (probing) return;
  probing = true;
  try {
    let s = null;
    try {
      s = await api('GET', `/api/v1/live-streams/${encodeURIComponent(streamId)}`);
      showError('');
    } catch (err) {
      if (err.status === 404) {
        ui.title.textContent = 'Stream not found';
        showMessage('This live stream does not exist.');
        stop = true;
        return;
      }
      showError(`Could not load the stream: ${err.message}`);
    }
    if (s) showStream(s);
    const apiLive = s ? s.status === 'live' : null; // null: API unreachable
    const sessionId = s?.current_session?.id ?? null;

    if (current) {
      // Playing. The API says the broadcast is over (or a new one started).
      if (apiLive === false && phase === 'playing' && meta) {
        markEnded('Stream ended. You can watch to the end of what was broadcast.');
      } else if (apiLive && sessionId && watchedSession && sessionId !== watchedSession && phase === 'ended') {
        if ((await probePlaylist()) === 'live') await startPlayer();
      }
      return;
    }

    // Not playing: waiting for the streamer (or the stream just ended).
    if (phase === 'ended' && sessionId && sessionId === endedSession) return;
    // Retry the playlist itself (the API may lag behind the packager).
    const state = phase === 'ended' && apiLive === false ? 'absent' : await probePlaylist();
    if (state === 'live') {
      await startPlayer();
      return;
    }
    if (phase !== 'ended') {
      phase = 'waiting';
      const last = lastSession(meta);
      showMessage(apiLive ? 'The stream is starting…' : 'Waiting for the streamer…');
      if (!apiLive && last?.video_id) {
        ui.endedText.textContent = `Last broadcast ${last.started_at ? formatDate(last.started_at) : ''}.`;
        setRecordingLink(ui.recordingLink);
        ui.endedBanner.hidden = false;
      }
    }
  } finally {
    probing = false;
  }
}

let stop = false;

async function main() {
  syncProtocolButtons();
  if (!streamId) {
    ui.title.textContent = 'No stream selected';
    showMessage('No stream id in the address.');
    return;
  }
  setInterval(() => {
    updateLiveButton();
    syncHeartbeat(); // follows phase changes (ended, waiting, …) within TICK_MS
    if (current) quality.updateInfo();
  }, TICK_MS);
  for (;;) {
    await tick();
    if (stop) return;
    await sleep(POLL_MS);
  }
}

mountTokenWidget($('token-form'), () => tick());
main();
