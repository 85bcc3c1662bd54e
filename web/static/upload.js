// Multipart upload client: create → parallel signed part PUTs → complete.
// The same code works against the embedded server (HMAC-signed part URLs) and
// S3 presigned URLs: part PUTs never carry our Authorization header, and their
// bodies are untyped blobs so no Content-Type enters the signature.

import { api, ApiError, sleep } from './api.js';

const RESUME_PREFIX = 'oxcast.upload.';

/** Upload `file`; resolves to the video object returned by `complete`. */
export async function uploadFile(file, opts = {}) {
  const {
    title,
    signal,
    concurrency = 4,
    maxRetries = 3,
    onProgress = () => {},
    onState = () => {},
  } = opts;

  onState('creating');
  const plan = await resumeOrCreate(file, title, signal);
  const { uploadId, partSize } = plan;

  const parts = partRanges(file.size, partSize);
  const etags = new Map(plan.stored); // part_number → etag
  const urls = new Map(plan.urls); // part_number → signed url
  const inflight = new Map(); // part_number → bytes sent so far
  const doneBytes = () => {
    let n = 0;
    for (const p of parts) if (etags.has(p.number)) n += p.end - p.start;
    return n;
  };

  const meter = new SpeedMeter();
  const report = () => {
    let loaded = doneBytes();
    for (const b of inflight.values()) loaded += b;
    loaded = Math.min(loaded, file.size);
    const bytesPerSec = meter.sample(loaded);
    const remaining = file.size - loaded;
    onProgress({
      uploadId,
      videoId: plan.videoId,
      loaded,
      total: file.size,
      percent: file.size > 0 ? (loaded / file.size) * 100 : 100,
      bytesPerSec,
      etaSec: bytesPerSec > 0 ? remaining / bytesPerSec : Infinity,
      partsDone: etags.size,
      partsTotal: parts.length,
    });
  };

  onState('uploading', { uploadId, videoId: plan.videoId });
  meter.start(doneBytes());
  report();

  // A failed part aborts the siblings still running.
  const local = new AbortController();
  const onOuterAbort = () => local.abort();
  signal?.addEventListener('abort', onOuterAbort, { once: true });

  const queue = parts.filter((p) => !etags.has(p.number));
  const worker = async () => {
    while (queue.length > 0 && !local.signal.aborted) {
      const part = queue.shift();
      const etag = await sendPartWithRetry(part);
      etags.set(part.number, etag);
      inflight.delete(part.number);
      report();
    }
  };

  async function sendPartWithRetry(part) {
    let lastErr;
    for (let attempt = 0; attempt <= maxRetries; attempt += 1) {
      if (attempt > 0) {
        inflight.set(part.number, 0);
        report();
        await sleep(500 * 2 ** (attempt - 1), local.signal);
        // The URL may have expired or the server restarted: ask for a fresh one,
        // and skip the part if the server already stored it.
        try {
          const st = await api('GET', `/api/v1/uploads/${encodeURIComponent(uploadId)}`, undefined, {
            signal: local.signal,
          });
          const stored = (st.parts || []).find((p) => p.part_number === part.number && p.etag);
          if (stored && (stored.size === undefined || stored.size === part.end - part.start)) {
            return stored.etag;
          }
          const fresh = (st.missing || []).find((p) => p.part_number === part.number);
          if (fresh?.url) urls.set(part.number, fresh.url);
        } catch (err) {
          if (err.name === 'AbortError') throw err;
          /* keep the old URL and try it anyway */
        }
      }
      const url = urls.get(part.number);
      if (!url) throw new Error(`server gave no URL for part ${part.number}`);
      try {
        return await putPart(url, file.slice(part.start, part.end), local.signal, (sent) => {
          inflight.set(part.number, sent);
          report();
        });
      } catch (err) {
        if (err.name === 'AbortError') throw err;
        lastErr = err;
        inflight.set(part.number, 0);
        console.warn(`oxcast: part ${part.number} attempt ${attempt + 1} failed: ${err.message}`);
      }
    }
    throw new Error(`part ${part.number} failed after ${maxRetries + 1} attempts: ${lastErr?.message}`);
  }

  try {
    const workers = Array.from({ length: Math.max(1, Math.min(concurrency, queue.length)) }, () =>
      worker().catch((err) => {
        local.abort();
        throw err;
      }),
    );
    const results = await Promise.allSettled(workers);
    const failure = results.find((r) => r.status === 'rejected' && r.reason?.name !== 'AbortError');
    if (failure) throw failure.reason;
    if (signal?.aborted) throw new DOMException('upload cancelled', 'AbortError');
    const aborted = results.find((r) => r.status === 'rejected');
    if (aborted) throw aborted.reason;
  } finally {
    signal?.removeEventListener('abort', onOuterAbort);
  }
  inflight.clear();
  report();

  onState('completing', { uploadId, videoId: plan.videoId });
  const body = {
    parts: parts.map((p) => ({ part_number: p.number, etag: etags.get(p.number) })),
  };
  const video = await api('POST', `/api/v1/uploads/${encodeURIComponent(uploadId)}/complete`, body, {
    signal,
  });
  forgetResume(file);
  return video;
}

/** Byte ranges of each part: part N is [(N-1)*partSize, min(N*partSize, size)). */
export function partRanges(size, partSize) {
  if (!(partSize > 0)) throw new Error(`bad part size from server: ${partSize}`);
  const n = Math.max(1, Math.ceil(size / partSize));
  return Array.from({ length: n }, (_, i) => ({
    number: i + 1,
    start: i * partSize,
    end: Math.min((i + 1) * partSize, size),
  }));
}

/** PUTs one part with XHR (for byte-level progress); resolves to its ETag. */
function putPart(url, blob, signal, onSent) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new DOMException('aborted', 'AbortError'));
      return;
    }
    const xhr = new XMLHttpRequest();
    const onAbort = () => xhr.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    const done = () => signal.removeEventListener('abort', onAbort);
    xhr.open('PUT', url);
    xhr.upload.onprogress = (e) => onSent(e.loaded);
    xhr.onload = () => {
      done();
      if (xhr.status >= 200 && xhr.status < 300) {
        const etag = xhr.getResponseHeader('ETag');
        if (etag) resolve(etag);
        else reject(new Error(`HTTP ${xhr.status} without an ETag header (CORS must expose ETag)`));
      } else {
        let msg = xhr.statusText;
        try {
          msg = JSON.parse(xhr.responseText).error || msg;
        } catch {
          /* not JSON (S3 answers XML) */
          if (xhr.responseText) msg = xhr.responseText.slice(0, 200);
        }
        reject(new Error(`HTTP ${xhr.status}: ${msg}`));
      }
    };
    xhr.onerror = () => {
      done();
      reject(new Error('network error'));
    };
    xhr.onabort = () => {
      done();
      reject(new DOMException('aborted', 'AbortError'));
    };
    xhr.send(blob);
  });
}

// ---- resume after a reload or a server restart -------------------------------

function resumeKey(file) {
  return `${RESUME_PREFIX}${file.name}:${file.size}:${file.lastModified}`;
}

function forgetResume(file) {
  try {
    localStorage.removeItem(resumeKey(file));
  } catch {
    /* ignore */
  }
}

async function resumeOrCreate(file, title, signal) {
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(resumeKey(file)) || 'null');
  } catch {
    saved = null;
  }
  const notExpired = saved && (!saved.expires_at || Date.parse(saved.expires_at) > Date.now() + 60_000);
  if (saved?.upload_id && notExpired && (saved.title || '') === (title || '')) {
    try {
      const st = await api('GET', `/api/v1/uploads/${encodeURIComponent(saved.upload_id)}`, undefined, {
        signal,
      });
      const open = !['completed', 'complete', 'aborted', 'expired', 'failed'].includes(st.state);
      if (open && st.size === file.size && st.part_size > 0 && Array.isArray(st.missing)) {
        return {
          uploadId: st.upload_id,
          videoId: st.video_id,
          partSize: st.part_size,
          stored: (st.parts || []).filter((p) => p.etag).map((p) => [p.part_number, p.etag]),
          urls: st.missing.map((p) => [p.part_number, p.url]),
        };
      }
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      /* gone or unreadable: start a fresh upload */
    }
    forgetResume(file);
  }

  const body = { filename: file.name, size: file.size };
  if (title) body.title = title;
  const created = await api('POST', '/api/v1/uploads', body, { signal });
  if (!created || !created.upload_id || !Array.isArray(created.parts)) {
    throw new ApiError(0, 'unexpected response from POST /api/v1/uploads');
  }
  try {
    localStorage.setItem(
      resumeKey(file),
      JSON.stringify({ upload_id: created.upload_id, expires_at: created.expires_at, title: title || '' }),
    );
  } catch {
    /* ignore */
  }
  return {
    uploadId: created.upload_id,
    videoId: created.video_id,
    partSize: created.part_size,
    stored: [],
    urls: created.parts.map((p) => [p.part_number, p.url]),
  };
}

/** Throughput over a sliding window of a few seconds. */
class SpeedMeter {
  constructor(windowMs = 4000) {
    this.windowMs = windowMs;
    this.samples = [];
  }
  start(bytes) {
    this.samples = [[performance.now(), bytes]];
  }
  sample(bytes) {
    const now = performance.now();
    this.samples.push([now, bytes]);
    while (this.samples.length > 2 && now - this.samples[1][0] > this.windowMs) this.samples.shift();
    const [t0, b0] = this.samples[0];
    const dt = (now - t0) / 1000;
    return dt > 0.2 ? Math.max(0, (bytes - b0) / dt) : 0;
  }
}
