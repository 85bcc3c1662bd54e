//! `moov` parsing: the one track's identity, timescale, codec string and picture/audio format,
//! plus the `trex` defaults later fragments may rely on.

use super::read::{BoxRef, Reader};
use super::{TrackInfo, TrackKind};
use crate::{Error, FourCc, Result};

/// `trex` defaults for samples of a track's fragments (ISO/IEC 14496-12 §8.8.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Trex {
    pub default_sample_duration: u32,
    pub default_sample_flags: u32,
}

/// Parses a `moov` box holding exactly one `trak`.
pub(crate) fn parse_moov(moov: &BoxRef<'_>) -> Result<(TrackInfo, Option<Trex>)> {
    let mut traks = Vec::new();
    let mut mvex = None;
    for child in moov.children() {
        let child = child?;
        match &child.typ.0 {
            b"trak" => traks.push(child),
            b"mvex" => mvex = Some(child),
            _ => {}
        }
    }
    let [trak] = traks[..] else {
        return Err(Error::TrackCount {
            offset: moov.offset,
            found: traks.len(),
        });
    };
    let track = parse_trak(&trak)?;
    let trex = match mvex {
        Some(mvex) => parse_trex(&mvex, track.track_id)?,
        None => None,
    };
    Ok((track, trex))
}

fn parse_trex(mvex: &BoxRef<'_>, track_id: u32) -> Result<Option<Trex>> {
    for child in mvex.children() {
        let child = child?;
        if &child.typ.0 != b"trex" {
            continue;
        }
        let mut r = child.reader();
        r.full_header()?;
        if r.u32()? != track_id {
            continue;
        }
        let _sample_description_index = r.u32()?;
        let default_sample_duration = r.u32()?;
        let _default_sample_size = r.u32()?;
        let default_sample_flags = r.u32()?;
        return Ok(Some(Trex {
            default_sample_duration,
            default_sample_flags,
        }));
    }
    Ok(None)
}

fn parse_trak(trak: &BoxRef<'_>) -> Result<TrackInfo> {
    let tkhd = trak.require(b"tkhd")?;
    let mut r = tkhd.reader();
    let (version, _) = r.full_header()?;
    r.skip(if version == 1 { 16 } else { 8 })?; // creation + modification time
    let track_id = r.u32()?;
    r.skip(4)?; // reserved
    r.skip(if version == 1 { 8 } else { 4 })?; // duration
    r.skip(8 + 2 + 2 + 2 + 2 + 36)?; // reserved, layer, alternate_group, volume, reserved, matrix
    let tkhd_width = r.u32()? >> 16; // 16.16 fixed point
    let tkhd_height = r.u32()? >> 16;

    let mdia = trak.require(b"mdia")?;
    let mdhd = mdia.require(b"mdhd")?;
    let mut r = mdhd.reader();
    let (version, _) = r.full_header()?;
    r.skip(if version == 1 { 16 } else { 8 })?;
    let timescale = r.u32()?;
    if timescale == 0 {
        return Err(mdhd.invalid("timescale is 0"));
    }

    let hdlr = mdia.require(b"hdlr")?;
    let mut r = hdlr.reader();
    r.full_header()?;
    r.skip(4)?; // pre_defined
    let handler = r.fourcc()?;
    let kind = match &handler.0 {
        b"vide" => TrackKind::Video,
        b"soun" => TrackKind::Audio,
        _ => {
            return Err(Error::UnsupportedHandler {
                handler,
                offset: hdlr.offset,
            })
        }
    };

    let stsd = mdia.require(b"minf")?.require(b"stbl")?.require(b"stsd")?;
    // stsd is a full box (4 bytes) with an entry count (4 bytes) before the sample entries.
    let entry = stsd.children_after(8)?.next().ok_or(Error::MissingBox {
        box_type: FourCc(*b"avc1"),
        parent: stsd.typ,
        offset: stsd.offset,
    })??;

    let mut info = TrackInfo {
        track_id,
        kind,
        timescale,
        codec: entry.typ.as_string(),
        width: None,
        height: None,
        sample_rate: None,
        channels: None,
    };
    match kind {
        TrackKind::Video => {
            parse_visual_entry(&entry, &mut info)?;
            if info.width.unwrap_or(0) == 0 && tkhd_width > 0 {
                info.width = Some(tkhd_width);
            }
            if info.height.unwrap_or(0) == 0 && tkhd_height > 0 {
                info.height = Some(tkhd_height);
            }
        }
        TrackKind::Audio => parse_audio_entry(&entry, &mut info)?,
    }
    Ok(info)
}

/// VisualSampleEntry: 78 bytes of fields before its child boxes (ISO/IEC 14496-12 §12.1.3).
const VISUAL_ENTRY_LEN: usize = 78;

fn parse_visual_entry(entry: &BoxRef<'_>, info: &mut TrackInfo) -> Result<()> {
    let mut r = entry.reader();
    r.skip(6 + 2 + 2 + 2 + 12)?; // reserved, data_reference_index, pre_defined, reserved, pre_defined
    let width = r.u16()?;
    let height = r.u16()?;
    if width > 0 {
        info.width = Some(u32::from(width));
    }
    if height > 0 {
        info.height = Some(u32::from(height));
    }
    let children = entry.children_after(VISUAL_ENTRY_LEN)?;
    for child in children {
        let child = child?;
        match &child.typ.0 {
            b"avcC" => {
                let mut r = child.reader();
                let _version = r.u8()?;
                let profile = r.u8()?;
                let compat = r.u8()?;
                let level = r.u8()?;
                info.codec = format!("{}.{profile:02x}{compat:02x}{level:02x}", entry.typ);
            }
            b"hvcC" => info.codec = format!("{}.{}", entry.typ, hevc_suffix(&child)?),
            _ => {}
        }
    }
    Ok(())
}

/// RFC 6381 / ISO/IEC 14496-15 Annex E codec suffix from an `hvcC` box, e.g. `1.6.L93.B0`.
fn hevc_suffix(hvcc: &BoxRef<'_>) -> Result<String> {
    let mut r = hvcc.reader();
    let _version = r.u8()?;
    let b = r.u8()?;
    let profile_space = b >> 6;
    let tier_high = b & 0x20 != 0;
    let profile_idc = b & 0x1f;
    let compat = r.u32()?;
    let constraints = r.bytes(6)?;
    let level = r.u8()?;

    let space = match profile_space {
        1 => "A",
        2 => "B",
        3 => "C",
        _ => "",
    };
    let mut s = format!(
        "{space}{profile_idc}.{:X}.{}{level}",
        compat.reverse_bits(),
        if tier_high { 'H' } else { 'L' }
    );
    // Trailing zero constraint bytes are omitted.
    let used = constraints
        .iter()
        .rposition(|&c| c != 0)
        .map_or(0, |i| i + 1);
    for c in &constraints[..used] {
        s.push_str(&format!(".{c:X}"));
    }
    Ok(s)
}

/// AudioSampleEntry fields before child boxes (QuickTime sound description version 0).
const AUDIO_ENTRY_LEN: usize = 28;

fn parse_audio_entry(entry: &BoxRef<'_>, info: &mut TrackInfo) -> Result<()> {
    let mut r = entry.reader();
    r.skip(6 + 2)?; // reserved, data_reference_index
    let qt_version = r.u16()?;
    r.skip(6)?; // revision, vendor
    let channels = r.u16()?;
    r.skip(2 + 2 + 2)?; // samplesize, pre_defined, reserved
    let sample_rate = r.u32()? >> 16;
    // QuickTime version 1 sound descriptions carry 16 more bytes before the children.
    let children_at = match qt_version {
        1 => AUDIO_ENTRY_LEN + 16,
        2 => AUDIO_ENTRY_LEN + 36,
        _ => AUDIO_ENTRY_LEN,
    };
    if channels > 0 {
        info.channels = Some(channels);
    }
    if sample_rate > 0 {
        info.sample_rate = Some(sample_rate);
    }
    for child in entry.children_after(children_at)? {
        let child = child?;
        if &child.typ.0 == b"esds" {
            let esds = parse_esds(&child)?;
            info.codec = match esds.audio_object_type {
                Some(aot) => format!("{}.{:02x}.{aot}", entry.typ, esds.object_type),
                None => format!("{}.{:02x}", entry.typ, esds.object_type),
            };
            // Sample entry fields are authoritative; the AudioSpecificConfig fills gaps
            // (e.g. rates above 65535 Hz do not fit the 16.16 field).
            if info.sample_rate.is_none() {
                info.sample_rate = esds.sample_rate;
            }
            if info.channels.is_none() {
                info.channels = esds.channels;
            }
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Esds {
    object_type: u8,
    audio_object_type: Option<u8>,
    sample_rate: Option<u32>,
    channels: Option<u16>,
}

/// Walks ES_Descriptor → DecoderConfigDescriptor → DecoderSpecificInfo (ISO/IEC 14496-1 §7.2.6).
fn parse_esds(esds: &BoxRef<'_>) -> Result<Esds> {
    let mut r = esds.reader();
    r.full_header()?;
    let (tag, len) = descriptor_header(&mut r)?;
    if tag != 0x03 {
        return Err(esds.invalid(format!("expected ES_Descriptor tag 3, found {tag}")));
    }
    let es_body = r.bytes(len.min(r.remaining()))?;
    let mut es = Reader::new(es_body, esds.body_offset, esds.typ);
    es.skip(2)?; // ES_ID
    let flags = es.u8()?;
    if flags & 0x80 != 0 {
        es.skip(2)?; // dependsOn_ES_ID
    }
    if flags & 0x40 != 0 {
        let url_len = es.u8()?;
        es.skip(usize::from(url_len))?;
    }
    if flags & 0x20 != 0 {
        es.skip(2)?; // OCR_ES_Id
    }
    loop {
        let (tag, len) = descriptor_header(&mut es)?;
        let body = es.bytes(len.min(es.remaining()))?;
        if tag != 0x04 {
            continue;
        }
        let mut dc = Reader::new(body, esds.body_offset, esds.typ);
        let mut out = Esds {
            object_type: dc.u8()?,
            ..Esds::default()
        };
        dc.skip(1 + 3 + 4 + 4)?; // streamType/upStream, bufferSizeDB, maxBitrate, avgBitrate
        if dc.remaining() > 0 {
            let (tag, len) = descriptor_header(&mut dc)?;
            if tag == 0x05 {
                let asc = dc.bytes(len.min(dc.remaining()))?;
                parse_audio_specific_config(asc, &mut out);
            }
        }
        return Ok(out);
    }
}

/// An MPEG-4 descriptor tag and its expandable length (up to four 7-bit groups).
fn descriptor_header(r: &mut Reader<'_>) -> Result<(u8, usize)> {
    let tag = r.u8()?;
    let mut len = 0usize;
    for _ in 0..4 {
        let b = r.u8()?;
        len = (len << 7) | usize::from(b & 0x7f);
        if b & 0x80 == 0 {
            break;
        }
    }
    Ok((tag, len))
}

/// Reads audioObjectType, sampling frequency and channel configuration (ISO/IEC 14496-3
/// §1.6.2.1). Best effort: a short config just leaves fields unset.
fn parse_audio_specific_config(asc: &[u8], out: &mut Esds) {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let mut bits = Bits { data: asc, pos: 0 };
    let Some(mut aot) = bits.take(5) else { return };
    if aot == 31 {
        let Some(ext) = bits.take(6) else { return };
        aot = 32 + ext;
    }
    out.audio_object_type = u8::try_from(aot).ok();
    let Some(index) = bits.take(4) else { return };
    out.sample_rate = if index == 0xf {
        bits.take(24)
    } else {
        RATES.get(index as usize).copied()
    };
    out.channels = bits.take(4).filter(|&c| c > 0).map(|c| c as u16);
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn take(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Some(v)
    }
}
