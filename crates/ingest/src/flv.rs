//! FLV writing: the file header, tags, and an `onMetaData` script body. Pure, no I/O.
//!
//! RTMP audio/video message payloads are already FLV tag bodies (codec header byte, then for
//! AVC/AAC the packet type and, for video, the composition time), so a tag is just an 11-byte
//! header, the payload, and the 4-byte `PreviousTagSize`.

use bytes::{BufMut, Bytes, BytesMut};

/// FLV tag type of an audio tag.
pub const TAG_AUDIO: u8 = 8;
/// FLV tag type of a video tag.
pub const TAG_VIDEO: u8 = 9;
/// FLV tag type of a script data tag.
pub const TAG_SCRIPT: u8 = 18;

/// Largest tag body an FLV tag header can describe (24-bit size).
pub const MAX_TAG_BODY: usize = 0x00FF_FFFF;

/// The 9-byte FLV file header (version 1, audio + video flags) followed by `PreviousTagSize0`.
pub fn header() -> Bytes {
    Bytes::from_static(&[b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0])
}

/// One FLV tag: header, `body`, trailing `PreviousTagSize`. `timestamp_ms` is split into the
/// 24-bit field and the 8-bit extension. Returns `None` if `body` is larger than
/// [`MAX_TAG_BODY`].
pub fn tag(tag_type: u8, timestamp_ms: u32, body: &[u8]) -> Option<Bytes> {
    if body.len() > MAX_TAG_BODY {
        return None;
    }
    let size = body.len() as u32;
    let mut out = BytesMut::with_capacity(11 + body.len() + 4);
    out.put_u8(tag_type);
    put_u24(&mut out, size);
    put_u24(&mut out, timestamp_ms & 0x00FF_FFFF);
    out.put_u8((timestamp_ms >> 24) as u8);
    put_u24(&mut out, 0); // stream id
    out.put_slice(body);
    out.put_u32(11 + size);
    Some(out.freeze())
}

fn put_u24(out: &mut BytesMut, v: u32) {
    out.put_slice(&v.to_be_bytes()[1..]);
}

/// A value in an `onMetaData` ECMA array.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// AMF0 number.
    Number(f64),
    /// AMF0 boolean.
    Bool(bool),
    /// AMF0 string (truncated to 65535 bytes).
    Str(String),
}

/// The script tag body `"onMetaData", ECMA array { entries }` in AMF0.
pub fn on_metadata_body(entries: &[(&str, MetaValue)]) -> Bytes {
    let mut out = BytesMut::new();
    put_amf_string(&mut out, "onMetaData");
    out.put_u8(0x08); // ECMA array
    out.put_u32(entries.len() as u32);
    for (name, value) in entries {
        put_short_str(&mut out, name);
        match value {
            MetaValue::Number(n) => {
                out.put_u8(0x00);
                out.put_f64(*n);
            }
            MetaValue::Bool(b) => {
                out.put_u8(0x01);
                out.put_u8(u8::from(*b));
            }
            MetaValue::Str(s) => put_amf_string(&mut out, s),
        }
    }
    out.put_slice(&[0, 0, 0x09]); // object end
    out.freeze()
}

fn put_amf_string(out: &mut BytesMut, s: &str) {
    out.put_u8(0x02);
    put_short_str(out, s);
}

fn put_short_str(out: &mut BytesMut, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

/// The `onMetaData` entries for what an RTMP publisher announced (`@setDataFrame`).
pub(crate) fn metadata_entries(
    m: &rml_rtmp::sessions::StreamMetadata,
) -> Vec<(&'static str, MetaValue)> {
    let mut e = Vec::new();
    let num = |v: Option<u32>| v.map(|v| MetaValue::Number(f64::from(v)));
    let fields = [
        ("width", num(m.video_width)),
        ("height", num(m.video_height)),
        ("videocodecid", num(m.video_codec_id)),
        (
            "framerate",
            m.video_frame_rate.map(|v| MetaValue::Number(f64::from(v))),
        ),
        ("videodatarate", num(m.video_bitrate_kbps)),
        ("audiocodecid", num(m.audio_codec_id)),
        ("audiodatarate", num(m.audio_bitrate_kbps)),
        ("audiosamplerate", num(m.audio_sample_rate)),
        ("audiochannels", num(m.audio_channels)),
        ("stereo", m.audio_is_stereo.map(MetaValue::Bool)),
        ("encoder", m.encoder.clone().map(MetaValue::Str)),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            e.push((k, v));
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes() {
        assert_eq!(
            &header()[..],
            &[0x46, 0x4C, 0x56, 0x01, 0x05, 0, 0, 0, 9, 0, 0, 0, 0]
        );
    }

    #[test]
    fn video_tag_layout() {
        let t = tag(TAG_VIDEO, 0x1234_5678, &[0x17, 0x01, 0xAA]).unwrap();
        assert_eq!(
            &t[..],
            &[
                9, 0, 0, 3, // type, size
                0x34, 0x56, 0x78, 0x12, // timestamp low 24 + extended
                0, 0, 0, // stream id
                0x17, 0x01, 0xAA, // body
                0, 0, 0, 14, // previous tag size = 11 + 3
            ]
        );
    }

    #[test]
    fn empty_and_oversized_bodies() {
        let t = tag(TAG_AUDIO, 0, &[]).unwrap();
        assert_eq!(&t[..], &[8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11]);
        assert!(tag(TAG_AUDIO, 0, &vec![0; MAX_TAG_BODY]).is_some());
        assert!(tag(TAG_AUDIO, 0, &vec![0; MAX_TAG_BODY + 1]).is_none());
    }

    #[test]
    fn metadata_body_exact() {
        let b = on_metadata_body(&[
            ("width", MetaValue::Number(640.0)),
            ("stereo", MetaValue::Bool(true)),
            ("encoder", MetaValue::Str("x".into())),
        ]);
        let mut want = vec![0x02, 0, 10];
        want.extend_from_slice(b"onMetaData");
        want.extend_from_slice(&[0x08, 0, 0, 0, 3]);
        want.extend_from_slice(&[0, 5]);
        want.extend_from_slice(b"width");
        want.push(0x00);
        want.extend_from_slice(&640f64.to_be_bytes());
        want.extend_from_slice(&[0, 6]);
        want.extend_from_slice(b"stereo");
        want.extend_from_slice(&[0x01, 1]);
        want.extend_from_slice(&[0, 7]);
        want.extend_from_slice(b"encoder");
        want.extend_from_slice(&[0x02, 0, 1, b'x']);
        want.extend_from_slice(&[0, 0, 9]);
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn long_strings_are_truncated_on_char_boundary() {
        let s = "é".repeat(40_000); // 80_000 bytes
        let b = on_metadata_body(&[("encoder", MetaValue::Str(s))]);
        // "onMetaData"(13) + array header(5) + key(2+7) + marker(1) + len(2) + body + end(3)
        let body_len = u16::from_be_bytes([b[13 + 5 + 9 + 1], b[13 + 5 + 9 + 2]]) as usize;
        assert_eq!(body_len, 65534);
        assert_eq!(b.len(), 13 + 5 + 9 + 1 + 2 + body_len + 3);
    }

    #[test]
    fn metadata_from_rtmp_skips_missing_fields() {
        let mut m = rml_rtmp::sessions::StreamMetadata::new();
        m.video_width = Some(640);
        m.audio_is_stereo = Some(false);
        let e = metadata_entries(&m);
        assert_eq!(
            e,
            vec![
                ("width", MetaValue::Number(640.0)),
                ("stereo", MetaValue::Bool(false)),
            ]
        );
    }
}
