//! The object key layout, in one place.
//!
//! ```text
//! uploads/{upload_id}/part-00001.{o}  parts of an upload ({o}: one token per PUT)
//! sources/{upload_id}                 an upload sent straight to an S3 bucket (one object)
//! videos/{video_id}/master.m3u8       a published video: manifests, poster,
//! videos/{video_id}/720p/init.mp4     and one folder per rendition
//! videos/{video_id}/720p/seg-1.m4s
//! ```

use object_store::path::Path as Key;
use oxcast_base::{UploadId, VideoId};

use crate::{Error, Result};

pub fn upload_prefix(upload: UploadId) -> Key {
    Key::from(format!("uploads/{upload}"))
}

/// A stored part. Every PUT of a part writes a new object, named by `object` (a random token
/// chosen by the server), so a part's bytes never change under its recorded ETag; `None` is the
/// fixed name parts had before that.
pub fn upload_part(upload: UploadId, part_number: u32, object: Option<&str>) -> Key {
    match object {
        Some(o) => Key::from(format!("uploads/{upload}/part-{part_number:05}.{o}")),
        None => Key::from(format!("uploads/{upload}/part-{part_number:05}")),
    }
}

/// The object an upload becomes when its parts went straight to an S3 bucket (multipart). Not
/// under `uploads/`, whose objects the reconciler keeps only when a part record names them.
pub fn upload_source(upload: UploadId) -> Key {
    Key::from(format!("sources/{upload}"))
}

pub fn video_prefix(video: VideoId) -> Key {
    Key::from(format!("videos/{video}"))
}

/// An object inside a video's prefix. `name` comes from a request path, so only plain relative
/// names of safe characters are accepted: no `..`, no empty or hidden segments, no escapes.
pub fn video_object(video: VideoId, name: &str) -> Result<Key> {
    if !is_safe_relative(name) {
        return Err(Error::InvalidName(name.chars().take(128).collect()));
    }
    Ok(Key::from(format!("videos/{video}/{name}")))
}

fn is_safe_relative(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let u: UploadId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        assert_eq!(
            upload_part(u, 7, None).as_ref(),
            "uploads/0123456789abcdef0123456789abcdef/part-00007"
        );
        assert_eq!(
            upload_part(u, 7, Some("9f")).as_ref(),
            "uploads/0123456789abcdef0123456789abcdef/part-00007.9f"
        );
        assert_eq!(
            upload_source(u).as_ref(),
            "sources/0123456789abcdef0123456789abcdef"
        );
        let v: VideoId = "fedcba9876543210fedcba9876543210".parse().unwrap();
        assert_eq!(
            video_object(v, "720p/seg-3.m4s").unwrap().as_ref(),
            "videos/fedcba9876543210fedcba9876543210/720p/seg-3.m4s"
        );
    }

    #[test]
    fn rejects_traversal_and_odd_names() {
        let v = VideoId::new();
        for bad in [
            "",
            "../x",
            "a/../b",
            "/etc/passwd",
            "a//b",
            ".hidden",
            "a/.b",
            "a%2F..",
            "a b",
            "a\\b",
            "ü",
        ] {
            assert!(video_object(v, bad).is_err(), "{bad:?}");
        }
    }
}
