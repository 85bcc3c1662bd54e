//! Parsing the SRT `streamid` a caller sends into a stream key. Pure, no I/O.
//!
//! Accepted forms:
//! * a bare key: `KEY`
//! * the SRT access-control syntax: `#!::r=KEY,m=publish` (keys in any order; `u`, `h`, `s`,
//!   `t` and unknown keys are ignored; `m` may be absent but, if present, must be `publish`)
//! * a bare key with a leading `publish:`: `publish:KEY`
//!
//! Any of them may arrive percent-encoded: ffmpeg 5.1 (libavformat's `libsrt`) passes the
//! `streamid` of an `srt://host:port?streamid=...` URL to libsrt without URL-decoding it, so a
//! user who encodes `#!::r=KEY` as `%23%21%3A%3Ar%3DKEY` sends those bytes verbatim. Valid
//! `%XX` escapes are therefore decoded first; stream keys must not contain a literal `%XX`.

/// Why a `streamid` cannot name a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamIdError {
    /// No streamid, or no key in it.
    MissingKey,
    /// The access-control `m=` asks for something other than publishing.
    NotPublish(String),
    /// A `#!::` entry is not `key=value`.
    Malformed(String),
}

impl std::fmt::Display for StreamIdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamIdError::MissingKey => f.write_str("streamid names no stream key"),
            StreamIdError::NotPublish(m) if m.len() <= 16 => {
                write!(f, "streamid mode {m:?} is not supported, only publish")
            }
            StreamIdError::NotPublish(_) => f.write_str("streamid mode is not supported"),
            // Not the entry itself: a mistyped `r=KEY` would put a key in the logs.
            StreamIdError::Malformed(e) => {
                write!(f, "malformed streamid entry ({} bytes, no '=')", e.len())
            }
        }
    }
}

impl std::error::Error for StreamIdError {}

/// Extracts the stream key from an SRT `streamid`.
pub fn parse_stream_id(sid: &str) -> Result<String, StreamIdError> {
    let decoded = percent_decode(sid);
    let sid = decoded.as_deref().unwrap_or(sid).trim();
    let key = if let Some(body) = sid.strip_prefix("#!::") {
        let mut key = None;
        for entry in body.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (k, v) = entry
                .split_once('=')
                .ok_or_else(|| StreamIdError::Malformed(entry.to_string()))?;
            match k.trim() {
                "r" => key = Some(v.trim()),
                "m" if v.trim() != "publish" => {
                    return Err(StreamIdError::NotPublish(v.trim().to_string()))
                }
                _ => {}
            }
        }
        key.unwrap_or("")
    } else {
        sid.strip_prefix("publish:").unwrap_or(sid).trim()
    };
    if key.is_empty() {
        Err(StreamIdError::MissingKey)
    } else {
        Ok(key.to_string())
    }
}

/// Decodes `%XX` escapes; `None` if there are none, or if the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut any = false;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                any = true;
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    if any {
        String::from_utf8(out).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_stream_id("abc123").unwrap(), "abc123");
        assert_eq!(parse_stream_id("publish:abc123").unwrap(), "abc123");
        assert_eq!(parse_stream_id(" publish: abc ").unwrap(), "abc");
        assert_eq!(parse_stream_id("#!::r=abc,m=publish").unwrap(), "abc");
        assert_eq!(parse_stream_id("#!::m=publish,r=abc").unwrap(), "abc");
        assert_eq!(parse_stream_id("#!::r=abc").unwrap(), "abc");
        assert_eq!(
            parse_stream_id("#!::u=bob,r=a=b,h=example.com,m=publish").unwrap(),
            "a=b"
        );
    }

    #[test]
    fn percent_encoded_forms() {
        assert_eq!(
            parse_stream_id("%23%21%3A%3Ar%3Dabc%2Cm%3Dpublish").unwrap(),
            "abc"
        );
        assert_eq!(parse_stream_id("%23!::r=abc").unwrap(), "abc");
        assert_eq!(parse_stream_id("publish%3Aabc").unwrap(), "abc");
        // Not escapes: left alone.
        assert_eq!(parse_stream_id("a%zzb%").unwrap(), "a%zzb%");
        assert_eq!(parse_stream_id("ab%4").unwrap(), "ab%4");
        // Decodes to invalid UTF-8: left alone.
        assert_eq!(parse_stream_id("ab%ff").unwrap(), "ab%ff");
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_stream_id(""), Err(StreamIdError::MissingKey));
        assert_eq!(parse_stream_id("publish:"), Err(StreamIdError::MissingKey));
        assert_eq!(
            parse_stream_id("#!::m=publish"),
            Err(StreamIdError::MissingKey)
        );
        assert_eq!(
            parse_stream_id("#!::r=abc,m=request"),
            Err(StreamIdError::NotPublish("request".into()))
        );
        assert_eq!(
            parse_stream_id("#!::r=abc,junk"),
            Err(StreamIdError::Malformed("junk".into()))
        );
    }

    #[test]
    fn never_panics_on_garbage() {
        // Deterministic xorshift so failures reproduce.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet: Vec<char> = "#!:=,rmpublish: \u{e9}\u{1F600}\0xyz".chars().collect();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let mut s = String::new();
            let mut y = x;
            for _ in 0..len {
                y = y
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.push(alphabet[(y >> 33) as usize % alphabet.len()]);
            }
            if let Ok(k) = parse_stream_id(&s) {
                assert!(!k.is_empty());
            }
        }
    }
}
