//! The playback origin's memory and its limits on held requests.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OriginConfig {
    /// Memory for published objects the origin keeps (MiB): every object's headers, and the
    /// bytes of small ones (playlists, MPDs, init segments, posters).
    pub memory_cache_mb: u64,
    /// Objects up to this size (KiB) are kept whole in that memory (least recently used go
    /// first); larger ones are read from the store on each request. The default holds the
    /// segments of the default ladder (about 2 MB at 1080p), so popular videos play from memory.
    pub small_object_kb: u64,
    /// LL-HLS blocking playlist requests held open at once, in total; beyond it a request gets
    /// 503 with `Retry-After`, so a flood of held requests cannot exhaust memory or descriptors.
    pub max_blocking: usize,
    /// The same, from one client address. A CDN in front collapses identical requests, so its
    /// few addresses need far fewer than this.
    pub max_blocking_per_addr: usize,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            memory_cache_mb: 256,
            small_object_kb: 4096,
            max_blocking: 20_000,
            max_blocking_per_addr: 1_000,
        }
    }
}

impl OriginConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_blocking == 0 || self.max_blocking_per_addr == 0 {
            return Err(
                "origin.max_blocking and origin.max_blocking_per_addr must be at least 1 \
                 (LL-HLS players hold one blocking request per rendition they play)"
                    .into(),
            );
        }
        if self.small_object_kb > self.memory_cache_mb.saturating_mul(1024) {
            return Err(format!(
                "origin.small_object_kb ({} KiB) is larger than the whole origin.memory_cache_mb \
                 ({} MiB)",
                self.small_object_kb, self.memory_cache_mb
            ));
        }
        Ok(())
    }
}
