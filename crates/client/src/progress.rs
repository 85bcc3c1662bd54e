//! Progress reporting: a trait, a terminal implementation and a silent one.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::api::VideoInfo;

/// Receives progress events from [`upload_file`](crate::upload_file), in this order:
/// `upload_started`, any number of `bytes_sent`, `upload_done`, then (when waiting) any number
/// of `processing` and one `finished`.
pub trait Progress: Send + Sync {
    /// The upload begins: `total_bytes` is the file size, `already_stored` what the server holds
    /// from an earlier, interrupted run.
    fn upload_started(&self, total_bytes: u64, already_stored: u64);
    /// `n` more bytes were handed to the network (reported per 64 KiB chunk; a retried part is
    /// not counted twice).
    fn bytes_sent(&self, n: u64);
    /// Every part is stored and the upload is completed.
    fn upload_done(&self);
    /// The video's processing status (`queued`, `processing`, ...) and progress (0.0 to 1.0).
    fn processing(&self, status: &str, progress: f64);
    /// The video reached `ready` or `failed`.
    fn finished(&self, video: &VideoInfo);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn upload_started(&self, _: u64, _: u64) {}
    fn bytes_sent(&self, _: u64) {}
    fn upload_done(&self) {}
    fn processing(&self, _: &str, _: f64) {}
    fn finished(&self, _: &VideoInfo) {}
}

/// Terminal progress bars on stderr (hidden automatically when stderr is not a terminal): bytes,
/// rate and ETA while uploading, then a percentage bar with the processing status.
#[derive(Debug, Default)]
pub struct BarProgress {
    upload: Mutex<Option<ProgressBar>>,
    processing: Mutex<Option<ProgressBar>>,
}

impl BarProgress {
    pub fn new() -> Self {
        Self::default()
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Progress for BarProgress {
    fn upload_started(&self, total_bytes: u64, already_stored: u64) {
        let bar = ProgressBar::new(total_bytes).with_style(style(
            "uploading  [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        ));
        bar.set_position(already_stored);
        bar.reset_eta();
        bar.enable_steady_tick(Duration::from_millis(200));
        *lock(&self.upload) = Some(bar);
    }

    fn bytes_sent(&self, n: u64) {
        if let Some(bar) = &*lock(&self.upload) {
            bar.inc(n);
        }
    }

    fn upload_done(&self) {
        if let Some(bar) = lock(&self.upload).take() {
            bar.finish();
        }
    }

    fn processing(&self, status: &str, progress: f64) {
        let mut slot = lock(&self.processing);
        let bar = slot.get_or_insert_with(|| {
            let bar = ProgressBar::new(100).with_style(style("{msg:<10} [{bar:40}] {pos:>3}%"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        bar.set_message(status.to_owned());
        bar.set_position((progress.clamp(0.0, 1.0) * 100.0).round() as u64);
    }

    fn finished(&self, video: &VideoInfo) {
        if let Some(bar) = lock(&self.processing).take() {
            if video.status == crate::VideoStatus::Ready {
                bar.set_position(100);
            }
            bar.finish_with_message(video.status.as_str());
        }
    }
}
