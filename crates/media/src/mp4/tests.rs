use super::testutil::*;
use super::*;
use crate::FourCc;

fn video_track() -> TrackInfo {
    TrackInfo {
        track_id: 1,
        kind: TrackKind::Video,
        timescale: 15360,
        codec: "avc1.64001f".into(),
        width: Some(1280),
        height: Some(720),
        sample_rate: None,
        channels: None,
    }
}

/// Two 2-sample video fragments of 512 ticks per sample, B-frame style ctos.
fn video_file() -> (Vec<u8>, usize, Vec<usize>) {
    let init = init(&video_spec());
    let f1 = Frag::new(1, 0, video_samples(512, &[1024, -512])).bytes();
    let f2 = Frag::new(2, 1024, video_samples(512, &[512, 0])).bytes();
    let file = cat(&[&init, &f1, &f2]);
    (file, init.len(), vec![f1.len(), f2.len()])
}

#[test]
fn parses_video_init() {
    let (file, init_len, _) = video_file();
    let (range, track) = parse_init(&file).unwrap();
    assert_eq!(range, 0..init_len);
    assert_eq!(track, video_track());
}

#[test]
fn parses_audio_init() {
    let data = init(&audio_spec());
    let (range, track) = parse_init(&data).unwrap();
    assert_eq!(range, 0..data.len());
    assert_eq!(
        track,
        TrackInfo {
            track_id: 1,
            kind: TrackKind::Audio,
            timescale: 48000,
            codec: "mp4a.40.2".into(),
            width: None,
            height: None,
            sample_rate: Some(48000),
            channels: Some(2),
        }
    );
    assert_eq!(InitSegment::parse(&data).unwrap().track.codec, "mp4a.40.2");
}

#[test]
fn he_aac_and_escape_object_types() {
    // HE-AAC: audioObjectType 5 (00101), 24 kHz (index 6), mono.
    let mut spec = audio_spec();
    spec.entry = Entry::Aac {
        channels: 0,
        rate: 0,
        asc: vec![0x2b, 0x08],
    };
    let (_, t) = parse_init(&init(&spec)).unwrap();
    assert_eq!(t.codec, "mp4a.40.5");
    assert_eq!(t.sample_rate, Some(24000), "falls back to the ASC rate");
    assert_eq!(t.channels, Some(1));
    // Escape: 31 then 6 bits (42 - 32 = 10 -> USAC-style 42).
    spec.entry = Entry::Aac {
        channels: 2,
        rate: 48000,
        asc: vec![0b1111_1001, 0b0100_0000],
    };
    let (_, t) = parse_init(&init(&spec)).unwrap();
    assert_eq!(t.codec, "mp4a.40.42");
}

#[test]
fn hevc_and_unknown_codecs() {
    let mut entry = vec![0u8; 24];
    entry.extend_from_slice(&1920u16.to_be_bytes());
    entry.extend_from_slice(&1080u16.to_be_bytes());
    entry.extend_from_slice(&[0u8; 50]);
    // Main profile (1), compat flags bit 1 and 2 set (0x60000000), tier L, level 93, constraints B0.
    let hvcc = bx(b"hvcC", &[1, 0x01, 0x60, 0, 0, 0, 0xb0, 0, 0, 0, 0, 0, 93]);
    let mut spec = video_spec();
    spec.entry = Entry::Raw(bx(b"hvc1", &cat(&[&entry, &hvcc])));
    let (_, t) = parse_init(&init(&spec)).unwrap();
    assert_eq!(t.codec, "hvc1.1.6.L93.B0");
    assert_eq!((t.width, t.height), (Some(1920), Some(1080)));

    spec.entry = Entry::Raw(bx(b"vp09", &entry));
    let (_, t) = parse_init(&init(&spec)).unwrap();
    assert_eq!(t.codec, "vp09");
}

#[test]
fn falls_back_to_tkhd_size() {
    let mut spec = video_spec();
    spec.entry = Entry::Raw(avc1(0, 0, [0x42, 0xc0, 0x1e]));
    let mut data = init(&spec);
    // Write 854x480 (16.16 fixed point) into tkhd's width/height, 76 bytes into its body.
    let tkhd = data.windows(4).position(|w| w == b"tkhd").unwrap() + 4 + 76;
    data[tkhd..tkhd + 4].copy_from_slice(&(854u32 << 16).to_be_bytes());
    data[tkhd + 4..tkhd + 8].copy_from_slice(&(480u32 << 16).to_be_bytes());
    let (_, t) = parse_init(&data).unwrap();
    assert_eq!(t.codec, "avc1.42c01e");
    assert_eq!((t.width, t.height), (Some(854), Some(480)));
}

#[test]
fn rejects_zero_or_two_tracks() {
    let spec = video_spec();
    let two = cat(&[&ftyp(), &moov_with(&[trak(&spec), trak(&spec)], &spec)]);
    let err = parse_init(&two).unwrap_err();
    assert!(
        matches!(err, Error::TrackCount { found: 2, offset } if offset == ftyp().len()),
        "{err}"
    );
    let none = cat(&[&ftyp(), &moov_with(&[], &spec)]);
    assert!(matches!(
        parse_init(&none),
        Err(Error::TrackCount { found: 0, .. })
    ));
    assert!(matches!(
        parse_init(&ftyp()),
        Err(Error::MissingInit { len: 28 })
    ));
}

#[test]
fn splits_video_file() {
    let (file, init_len, lens) = video_file();
    let (track, init, frags) = split_file(&file).unwrap();
    assert_eq!(track, video_track());
    assert_eq!(init, 0..init_len);
    let f1_end = init_len + lens[0];
    assert_eq!(
        frags,
        vec![
            Fragment {
                range: init_len..f1_end,
                sequence_number: 1,
                base_media_decode_time: 0,
                duration: 1024,
                sample_count: 2,
                starts_with_sync: true,
                // min(0 + 1024, 512 - 512) = 0
                earliest_presentation_time: 0,
            },
            Fragment {
                range: f1_end..f1_end + lens[1],
                sequence_number: 2,
                base_media_decode_time: 1024,
                duration: 1024,
                sample_count: 2,
                starts_with_sync: true,
                earliest_presentation_time: 1024 + 512,
            },
        ]
    );
    assert_eq!(frags[1].end(), 2048);
}

#[test]
fn defaults_come_from_tfhd_then_trex() {
    let spec = audio_spec(); // trex: duration 1024, flags 0 (sync)
    let no_fields = |n| vec![Sample::default(); n];
    let a = Frag::new(7, 0, no_fields(3));
    let mut b = Frag::new(8, 3072, no_fields(2));
    b.tfhd_duration = Some(960);
    b.tfhd_flags = Some(0x0001_0000);
    let mut c = Frag::new(9, 4992, no_fields(2));
    c.tfhd_flags = Some(0x0001_0000);
    c.first_sample_flags = Some(0x0200_0000);
    let file = cat(&[&init(&spec), &a.bytes(), &b.bytes(), &c.bytes()]);
    let (_, _, f) = split_file(&file).unwrap();
    let summary: Vec<_> = f
        .iter()
        .map(|f| {
            (
                f.sequence_number,
                f.base_media_decode_time,
                f.duration,
                f.sample_count,
                f.starts_with_sync,
                f.earliest_presentation_time,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (7, 0, 3072, 3, true, 0),
            (8, 3072, 1920, 2, false, 3072),
            (9, 4992, 2048, 2, true, 4992),
        ]
    );
}

#[test]
fn trun_version0_ctos_are_unsigned_and_tfdt_v0() {
    let mut f = Frag::new(1, 90_000, video_samples(3000, &[6000, 0]));
    f.trun_version = 0;
    f.tfdt_v1 = false;
    let mut spec = video_spec();
    spec.timescale = 90_000;
    let file = cat(&[&init(&spec), &f.bytes()]);
    let (_, _, frags) = split_file(&file).unwrap();
    assert_eq!(frags[0].base_media_decode_time, 90_000);
    assert_eq!(frags[0].duration, 6000);
    assert_eq!(frags[0].earliest_presentation_time, 90_000 + 3000);
    // A "negative" cto in a version 0 trun is a huge unsigned offset, not a negative one.
    let mut g = Frag::new(2, 0, video_samples(3000, &[-1]));
    g.trun_version = 0;
    let file = cat(&[&init(&spec), &g.bytes()]);
    assert_eq!(
        split_file(&file).unwrap().2[0].earliest_presentation_time,
        0xffff_ffff
    );
}

#[test]
fn missing_defaults_are_errors() {
    let mut spec = video_spec();
    spec.trex = None;
    let f = Frag::new(1, 0, vec![Sample::default(); 2]);
    let file = cat(&[&init(&spec), &f.bytes()]);
    let err = split_file(&file).unwrap_err();
    assert!(err.to_string().contains("no sample duration"), "{err}");
}

#[test]
fn styp_prft_belong_to_next_fragment_and_large_sizes_work() {
    let spec = video_spec();
    let init = init(&spec);
    let styp = bx(b"styp", b"msdhmsix");
    let prft = full(b"prft", 1, 0, &[0u8; 20]);
    let moof_mdat = Frag::new(1, 0, video_samples(512, &[0])).bytes();
    // Re-encode mdat with a 64-bit size.
    let moof_len = u32::from_be_bytes(moof_mdat[..4].try_into().unwrap()) as usize;
    let mdat64 = bx64(b"mdat", &moof_mdat[moof_len + 8..]);
    let free = bx(b"free", &[0; 3]);
    let mfra = bx(b"mfra", &[0; 8]);
    let file = cat(&[
        &init,
        &free,
        &styp,
        &prft,
        &moof_mdat[..moof_len],
        &mdat64,
        &mfra,
    ]);
    let (_, _, frags) = split_file(&file).unwrap();
    let start = init.len() + free.len();
    assert_eq!(frags.len(), 1);
    assert_eq!(frags[0].range, start..file.len() - mfra.len());
}

#[test]
fn size_zero_box_runs_to_end() {
    let (file, _, lens) = video_file();
    let mut file = file;
    // Rewrite the final mdat's size field to 0.
    let last_moof = file.len() - lens[1];
    let moof_len = u32::from_be_bytes(file[last_moof..last_moof + 4].try_into().unwrap()) as usize;
    file[last_moof + moof_len..last_moof + moof_len + 4].copy_from_slice(&[0, 0, 0, 0]);
    let (_, _, frags) = split_file(&file).unwrap();
    assert_eq!(frags[1].range.end, file.len());
}

#[test]
fn ordering_errors_name_the_offset() {
    let spec = video_spec();
    let frag = Frag::new(1, 0, video_samples(512, &[0])).bytes();
    let err = split_file(&cat(&[&ftyp(), &frag])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unexpected moof box at byte offset 28: moof before moov"
    );
    let mdat = bx(b"mdat", &[0; 4]);
    let init = init(&spec);
    let err = split_file(&cat(&[&init, &mdat])).unwrap_err();
    assert!(matches!(err, Error::UnexpectedBox { offset, .. } if offset == init.len()));
    let moof_len = u32::from_be_bytes(frag[..4].try_into().unwrap()) as usize;
    let err = split_file(&cat(&[&init, &frag[..moof_len]])).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "input ended with {moof_len} unconsumed bytes at byte offset {} (moof without its mdat)",
            init.len()
        )
    );
    let mut wrong_track = Frag::new(1, 0, video_samples(512, &[0]));
    wrong_track.track_id = 2;
    let err = split_file(&cat(&[&init, &wrong_track.bytes()])).unwrap_err();
    assert!(
        err.to_string().contains("track_ID 2 does not match"),
        "{err}"
    );
}

#[test]
fn truncated_file_reports_box_and_offset() {
    let (file, init_len, _) = video_file();
    let cut = &file[..file.len() - 3];
    let err = split_file(cut).unwrap_err();
    assert!(
        matches!(err, Error::Truncated { box_type, .. } if box_type == FourCc(*b"mdat")),
        "{err}"
    );
    let err = split_file(&file[..init_len + 5]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("input ended with 5 unconsumed bytes at byte offset {init_len} (truncated box)")
    );
}

#[test]
fn splitter_matches_split_file_for_any_chunking() {
    let (file, _, _) = video_file();
    let (track, init, frags) = split_file(&file).unwrap();
    for chunk in [1, 2, 7, 64, 1000, file.len()] {
        let mut s = Fmp4Splitter::new();
        let mut events = Vec::new();
        for c in file.chunks(chunk) {
            events.extend(s.push(c).unwrap());
        }
        s.finish().unwrap();
        assert_eq!(events.len(), 1 + frags.len(), "chunk {chunk}");
        assert_eq!(
            events[0],
            SplitEvent::Init {
                bytes: file[init.clone()].to_vec(),
                track: track.clone()
            }
        );
        for (e, f) in events[1..].iter().zip(&frags) {
            let SplitEvent::Fragment { bytes, fragment } = e else {
                panic!("expected fragment");
            };
            assert_eq!(bytes, &file[f.range.clone()]);
            assert_eq!(fragment.range, 0..bytes.len());
            assert_eq!(
                Fragment {
                    range: f.range.clone(),
                    ..fragment.clone()
                },
                *f
            );
        }
    }
}

#[test]
fn splitter_emits_as_soon_as_complete_and_bounds_memory() {
    let (file, init_len, lens) = video_file();
    let mut s = Fmp4Splitter::new();
    assert!(s.push(&file[..init_len - 1]).unwrap().is_empty());
    let ev = s.push(&file[init_len - 1..init_len + 1]).unwrap();
    assert!(matches!(&ev[..], [SplitEvent::Init { .. }]));
    // The buffer now holds only the started fragment.
    assert_eq!(s.buf.len(), 1);
    let f1_end = init_len + lens[0];
    assert!(s.push(&file[init_len + 1..f1_end - 1]).unwrap().is_empty());
    assert_eq!(s.push(&file[f1_end - 1..f1_end]).unwrap().len(), 1);
    assert!(s.buf.is_empty());
    assert_eq!(s.stream_offset(), f1_end);
    s.push(&file[f1_end..f1_end + 10]).unwrap();
    let err = s.finish().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("input ended with 10 unconsumed bytes at byte offset {f1_end} (truncated box)")
    );
}

#[test]
fn splitter_rejects_oversized_boxes() {
    let mut s = Fmp4Splitter::new().with_max_box_size(1000);
    let mut junk = 0x7fff_0000u32.to_be_bytes().to_vec();
    junk.extend_from_slice(b"mdat");
    let err = s.push(&junk).unwrap_err();
    assert!(matches!(
        err,
        Error::BoxTooLarge {
            size: 0x7fff_0000,
            max: 1000,
            offset: 0,
            ..
        }
    ));
}

#[test]
fn garbage_never_panics() {
    let (video, _, _) = video_file();
    let audio = cat(&[
        &init(&audio_spec()),
        &Frag::new(1, 0, vec![Sample::default(); 4]).bytes(),
    ]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let exercise = |data: &[u8], rng: &mut Rng| {
        let _ = parse_init(data);
        let _ = split_file(data);
        let mut s = Fmp4Splitter::new().with_max_box_size(1 << 20);
        let mut rest = data;
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len().min(64));
            if s.push(&rest[..n]).is_err() {
                return;
            }
            rest = &rest[n..];
        }
        let _ = s.finish();
    };
    for _ in 0..300 {
        let len = rng.below(300);
        let random: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        exercise(&random, &mut rng);
    }
    for base in [&video, &audio] {
        for cut in 0..base.len() {
            exercise(&base[..cut], &mut rng);
        }
        for _ in 0..2000 {
            let mut m = base.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            exercise(&m, &mut rng);
        }
    }
}
