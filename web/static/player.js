// Player plumbing shared by the watch page (watch.js) and the live viewer
// (live.js): vendor script loading, hls.js / dash.js helpers, error log, the
// protocol toggle, and the quality menu with its info line.
//
// A player adapter (built by each page) is an object
//   { engine, levels(), currentLevel(), isAuto(), setLevel(i), destroy(), … }
// where levels() are { index, height, width, bitrate } and setLevel(-1) means ABR.

export const VENDOR = {
  hls: '/static/vendor/hls.min.js',
  dash: '/static/vendor/dash.all.min.js',
};

// ---------------------------------------------------------------------------
// Vendor script loading (classic UMD bundles exposing window.Hls / window.dashjs)
// ---------------------------------------------------------------------------

const scripts = new Map();
export function loadScript(src) {
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
// Page basics
// ---------------------------------------------------------------------------

/** Shows `text` in `el`, or hides `el` when `text` is empty. */
export function showText(el, text) {
  el.hidden = !text;
  el.textContent = text || '';
}

/** The id after `/{segment}/` in the address, else the `?id=` parameter, else ''. */
export function idFromPath(segment, params) {
  const segs = location.pathname.split('/').filter(Boolean);
  const i = segs.indexOf(segment);
  if (i >= 0 && segs[i + 1]) return decodeURIComponent(segs[i + 1]);
  return params.get('id') || '';
}

/** Starts playback (muted for `?autoplay=1`, which browsers require); logs a refusal. */
export function playVideo(video, autoplay) {
  if (autoplay) video.muted = true;
  const p = video.play();
  if (p && p.catch) p.catch((err) => console.warn(`oxcast: play() refused: ${err.message}`));
}

/** Destroys an adapter (if any) and empties the video element. */
export function destroyPlayer(player, video) {
  if (player) {
    try {
      player.destroy();
    } catch (err) {
      console.warn('oxcast: player teardown failed', err);
    }
  }
  video.removeAttribute('src');
  video.load();
}

/**
 * The player hook's `errors` list and the function that appends to it:
 * record(gen, fatal, text) keeps only events of the current generation
 * (`isCurrent(gen)`) and logs them as `oxcast {label}: fatal|non-fatal text`.
 */
export function createErrorLog(label, isCurrent) {
  const errors = [];
  const record = (gen, fatal, text) => {
    if (!isCurrent(gen)) return;
    const line = `${fatal ? 'fatal' : 'non-fatal'} ${text}`;
    errors.push(line);
    (fatal ? console.error : console.warn)(`oxcast ${label}: ${line}`);
  };
  return { errors, record };
}

const MEDIA_ERRORS = ['', 'MEDIA_ERR_ABORTED', 'MEDIA_ERR_NETWORK', 'MEDIA_ERR_DECODE', 'MEDIA_ERR_SRC_NOT_SUPPORTED'];

/** Reports `<video>` errors while a player is active (teardown empties the element; not an error). */
export function reportMediaErrors(video, isPlaying, record) {
  video.addEventListener('error', () => {
    const e = video.error;
    if (!e || !isPlaying()) return;
    record(`video ${MEDIA_ERRORS[e.code] || e.code}: ${e.message || ''}`);
  });
}

// ---------------------------------------------------------------------------
// Protocol toggle (?protocol=hls|dash)
// ---------------------------------------------------------------------------

export const protocolFromParams = (params) => (params.get('protocol') === 'dash' ? 'dash' : 'hls');

export function markProtocolButtons(buttons, protocol) {
  for (const b of buttons) b.setAttribute('aria-pressed', String(b.dataset.protocol === protocol));
}

export function bindProtocolButtons(buttons, onSelect) {
  for (const b of buttons) b.addEventListener('click', () => onSelect(b.dataset.protocol));
}

/** Records the protocol in the address (no reload, no history entry). */
export function setProtocolParam(protocol) {
  const q = new URLSearchParams(location.search);
  q.set('protocol', protocol);
  history.replaceState(null, '', `${location.pathname}?${q}`);
}

// ---------------------------------------------------------------------------
// Adapter helpers
// ---------------------------------------------------------------------------

/** levels() / currentLevel() / isAuto() / setLevel() of a player without a quality choice. */
export const SINGLE_LEVEL = {
  levels: () => [],
  currentLevel: () => -1,
  isAuto: () => true,
  setLevel: () => {},
};

/**
 * hls.js ERROR handling: records every error, recovers fatal media errors
 * (twice) and network errors (`maxNetworkRetries` times), then calls
 * giveUp(details). Returns { resetNetworkRetries() }.
 */
export function handleHlsErrors(hls, { record, isCurrent, maxNetworkRetries, giveUp }) {
  const Hls = window.Hls;
  let mediaRecoveries = 0;
  let networkRecoveries = 0;
  hls.on(Hls.Events.ERROR, (_evt, d) => {
    const http = d.response && d.response.code ? ` HTTP ${d.response.code}` : '';
    const url = d.frag?.url || d.context?.url || d.url || '';
    const detail = d.error?.message || d.reason || '';
    record(d.fatal, `hls ${d.type}/${d.details}${http}${detail ? `: ${detail}` : ''}${url ? ` (${url})` : ''}`);
    if (!d.fatal || !isCurrent()) return;
    if (d.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRecoveries < 2) {
      mediaRecoveries += 1;
      hls.recoverMediaError();
    } else if (d.type === Hls.ErrorTypes.NETWORK_ERROR && networkRecoveries < maxNetworkRetries) {
      networkRecoveries += 1;
      hls.startLoad();
    } else {
      giveUp(d.details);
    }
  });
  return {
    resetNetworkRetries: () => {
      networkRecoveries = 0;
    },
  };
}

export const hlsLevels = (hls) =>
  (hls.levels || []).map((l, index) => ({ index, height: l.height, width: l.width, bitrate: l.bitrate }));

/** hls.js quality switch: `currentLevel` switches now (flushes the buffer); -1 re-enables ABR. */
export function setHlsLevel(hls, i) {
  hls.currentLevel = i >= 0 && i < (hls.levels || []).length ? i : -1;
}

/** dash.js settings shared by both pages, plus page-specific `streaming` settings. */
export function dashSettings(dashjs, streaming = {}) {
  return {
    debug: { logLevel: dashjs.Debug?.LOG_LEVEL_WARNING ?? 3 },
    streaming: { abr: { autoSwitchBitrate: { video: true } }, cmcd: { enabled: false }, ...streaming },
  };
}

/** dash.js ERROR (fatal: record, then giveUp(text) if current) and PLAYBACK_WARNING events. */
export function handleDashErrors(player, events, { record, isCurrent, giveUp }) {
  player.on(events.ERROR, (e) => {
    const err = e.error || {};
    const text = err.message || (typeof e.error === 'string' ? e.error : JSON.stringify(err));
    record(true, `dash error ${err.code ?? ''}: ${text}`);
    if (isCurrent()) giveUp(text);
  });
  if (events.PLAYBACK_WARNING) {
    player.on(events.PLAYBACK_WARNING, (e) => record(false, `dash warning: ${e.error || ''}`));
  }
}

/** The video representations of a dash.js player ([] before streaming is initialised). */
export function dashVideoReps(player) {
  try {
    return player.getRepresentationsByType('video') || [];
  } catch {
    return []; // streaming not initialised yet
  }
}

export const dashLevels = (reps) =>
  reps.map((r, index) => ({ index, height: r.height, width: r.width, bitrate: r.bandwidth }));

/** Pins dash.js to video representation `i`, or back to ABR when i < 0. Returns whether ABR is on. */
export function setDashLevel(player, i) {
  const auto = !(i >= 0);
  player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: auto } } } });
  if (auto) return auto;
  if (typeof player.setRepresentationForTypeByIndex === 'function') {
    player.setRepresentationForTypeByIndex('video', i, true); // dash.js v5
  } else if (typeof player.setQualityFor === 'function') {
    player.setQualityFor('video', i, true); // dash.js v4
  }
  return auto;
}

// ---------------------------------------------------------------------------
// Quality menu and info line
// ---------------------------------------------------------------------------

const kbps = (bitrate) => `${Math.round(bitrate / 1000)} kbps`;

export const heightLabel = (l) => (l.height ? `${l.height}p` : l.bitrate ? kbps(l.bitrate) : 'source');

/**
 * Drives the quality <select> (Auto + one option per level, highest first)
 * and the info line ("HLS via hls.js · 1280×720 · 2500 kbps · 3 qualities",
 * then extraInfo(player) parts) for the adapter returned by player().
 * isCurrent(gen) tells whether events of generation `gen` are still relevant.
 */
export function createQualityMenu({ select, info, video, player, protocol, isCurrent, extraInfo = () => [] }) {
  function setLevels(levels) {
    const auto = new Option('Auto', '-1');
    const sorted = [...levels].sort((a, b) => b.height - a.height || b.bitrate - a.bitrate);
    const counts = new Map();
    for (const l of sorted) counts.set(l.height, (counts.get(l.height) || 0) + 1);
    const options = sorted.map((l) => {
      const dup = counts.get(l.height) > 1;
      const label = dup ? `${heightLabel(l)} · ${kbps(l.bitrate)}` : heightLabel(l);
      return new Option(label, String(l.index));
    });
    select.replaceChildren(auto, ...options);
    select.disabled = levels.length < 2;
  }

  function sync() {
    const current = player();
    if (!current) return;
    const now = current.levels()[current.currentLevel()];
    const autoOpt = select.options[0];
    if (autoOpt) autoOpt.textContent = now && current.isAuto() ? `Auto (${heightLabel(now)})` : 'Auto';
    select.value = current.isAuto() ? '-1' : String(current.currentLevel());
  }

  function updateInfo() {
    const current = player();
    if (!current) {
      info.textContent = '';
      return;
    }
    const parts = [`${protocol().toUpperCase()} via ${current.engine}`];
    const levels = current.levels();
    const now = levels[current.currentLevel()];
    if (video.videoWidth) parts.push(`${video.videoWidth}×${video.videoHeight}`);
    if (now?.bitrate) parts.push(kbps(now.bitrate));
    if (levels.length) parts.push(`${levels.length} qualities`);
    parts.push(...extraInfo(current));
    info.textContent = parts.join(' · ');
  }

  select.addEventListener('change', () => {
    const current = player();
    if (!current) return;
    current.setLevel(Number(select.value));
    sync();
    updateInfo();
  });
  video.addEventListener('resize', updateInfo);

  return {
    setLevels,
    sync,
    updateInfo,
    /** The level part of the test hooks (window.oxcastPlayer / window.oxcastLive). */
    hooks: {
      levels: () => (player() ? player().levels() : []),
      currentLevel: () => (player() ? player().currentLevel() : -1),
      autoLevel: () => (player() ? player().isAuto() : true),
      setLevel: (i) => {
        player()?.setLevel(Number(i));
        sync();
      },
    },
    /** The adapter knows its levels (manifest parsed): rebuild the menu. */
    levelsKnown(gen) {
      const current = player();
      if (!isCurrent(gen) || !current) return;
      setLevels(current.levels());
      sync();
      updateInfo();
    },
    /** The level on screen (or the ABR choice) changed. */
    levelChanged(gen) {
      if (!isCurrent(gen)) return;
      sync();
      updateInfo();
    },
  };
}
