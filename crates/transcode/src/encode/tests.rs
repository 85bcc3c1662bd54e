//! Command-line tests of the ladder encode: exact filter graphs and arguments, no ffmpeg run.

use super::*;
use oxcast_media::ladder::{build_ladder, LadderSpec, SourceVideo};

fn plan() -> EncodePlan {
    let rungs = build_ladder(
        &SourceVideo {
            width: 1280,
            height: 720,
            rotation: 0,
        },
        &LadderSpec::default(),
    );
    EncodePlan {
        source: Input::File("/work/src".into()),
        out_dir: "/work/out".into(),
        rungs,
        audio: true,
        preset: "veryfast".into(),
        segment_s: 4.0,
        frame_rate: (30, 1),
        deinterlace: false,
        tone_map: None,
        audio_stream: 0,
        audio_bitrate: 128_000,
        duration_s: 20.0,
        video_duration_s: 20.0,
        video_start_s: 0.0,
        poster: None,
        window: None,
    }
}

#[test]
fn a_chunk_seeks_before_its_frames_keeps_the_clock_and_forces_the_same_keyframes() {
    let mut p = plan();
    p.audio = false;
    p.video_start_s = 0.5;
    p.window = Some(Window {
        first_frame: 900,
        end_frame: Some(1800),
        keyframes: vec![120, 240],
    });
    let a = p.args();
    // 900 frames at 30 fps = 30 s; plus the video's 0.5 s start, minus the 2 s lead-in.
    let ss = a.iter().position(|x| x == "-ss").unwrap();
    assert_eq!(a[ss + 1], "28.500000");
    assert!(ss < a.iter().position(|x| x == "-i").unwrap());
    let graph = &a[a.iter().position(|x| x == "-filter_complex").unwrap() + 1];
    assert!(
        graph.starts_with(
            "[0:v:0]setpts=PTS+(28.000000)/TB,fps=30/1:start_time=28.000000,\
             trim=start_pts=900:end_pts=1800,setpts=PTS-STARTPTS,format=yuv420p,split=3"
        ),
        "{graph}"
    );
    let force: Vec<_> = a
        .iter()
        .enumerate()
        .filter(|(_, x)| *x == "-force_key_frames")
        .map(|(i, _)| a[i + 1].as_str())
        .collect();
    assert_eq!(force, ["3.991667,7.991667"; 3]);
    assert!(!a.iter().any(|x| x == "aac"));
}

#[test]
fn the_first_chunk_does_not_seek_and_the_last_runs_to_the_end() {
    let mut p = plan();
    p.window = Some(Window {
        first_frame: 0,
        end_frame: Some(60),
        keyframes: vec![],
    });
    let a = p.args();
    assert!(!a.iter().any(|x| x == "-ss"));
    assert!(!a.iter().any(|x| x == "-force_key_frames"));
    let graph = &a[a.iter().position(|x| x == "-filter_complex").unwrap() + 1];
    assert!(graph.contains("fps=30/1:start_time=0.000000,trim=start_pts=0:end_pts=60,"));
    p.window = Some(Window {
        first_frame: 1800,
        end_frame: None,
        keyframes: vec![120],
    });
    let a = p.args();
    let graph = &a[a.iter().position(|x| x == "-filter_complex").unwrap() + 1];
    assert!(graph.contains("trim=start_pts=1800,setpts"), "{graph}");
}

#[test]
fn an_audio_only_plan_has_no_picture_graph() {
    let mut p = plan();
    p.rungs.clear();
    let a = p.args();
    assert!(!a.iter().any(|x| x == "-filter_complex" || x == "libx264"));
    assert_eq!(a.iter().filter(|x| *x == "aac").count(), 1);
    assert!(a.contains(&"/work/out/audio.mp4".to_string()));
}

#[test]
fn one_decode_split_to_every_rung() {
    let a = plan().args();
    let graph = &a[a.iter().position(|x| x == "-filter_complex").unwrap() + 1];
    assert_eq!(
        graph,
        "[0:v:0]setpts=PTS-STARTPTS,fps=30/1,format=yuv420p,split=3[s0][s1][s2];\
         [s0]scale=1280:720:flags=bicubic:out_color_matrix=bt709:out_range=tv,setsar=1[v0];\
         [s1]scale=854:480:flags=bicubic:out_color_matrix=bt709:out_range=tv,setsar=1[v1];\
         [s2]scale=640:360:flags=bicubic:out_color_matrix=bt709:out_range=tv,setsar=1[v2]"
    );
    assert_eq!(a.iter().filter(|x| *x == "-i").count(), 1);
    assert_eq!(a.iter().filter(|x| *x == "libx264").count(), 3);
    assert_eq!(a.iter().filter(|x| *x == "aac").count(), 1);
    assert!(a.contains(&"/work/out/480p.mp4".to_string()));
    assert!(a.contains(&"/work/out/audio.mp4".to_string()));
}

#[test]
fn frame_rate_policy() {
    assert_eq!(output_frame_rate((120, 1)), (60, 1));
    assert_eq!(output_frame_rate((100, 1)), (50, 1));
    assert_eq!(output_frame_rate((120000, 1001)), (60000, 1001));
    assert_eq!(output_frame_rate((240, 1)), (60, 1));
    assert_eq!(output_frame_rate((24000, 1001)), (24000, 1001));
    assert_eq!(output_frame_rate((60000, 1001)), (60000, 1001));
    assert_eq!(output_frame_rate((25, 1)), (25, 1));
    assert_eq!(output_frame_rate((0, 1)), (30, 1));
    // An odd numerator halves through the denominator; 62.5 is still too fast.
    assert_eq!(output_frame_rate((125, 1)), (125, 4));
}

#[test]
fn interlaced_hdr_source_is_deinterlaced_tone_mapped_and_8bit() {
    let mut p = plan();
    p.deinterlace = true;
    p.tone_map = Some("smpte2084".into());
    p.frame_rate = (60000, 1001);
    let a = p.args();
    let graph = &a[a.iter().position(|x| x == "-filter_complex").unwrap() + 1];
    let prelude = graph.split(",split=").next().unwrap();
    assert_eq!(
        prelude,
        "[0:v:0]bwdif=mode=send_frame:parity=auto:deint=all,\
         zscale=tin=smpte2084:min=bt2020nc:pin=bt2020:rin=tv:t=linear:npl=100,\
         format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0,\
         zscale=t=bt709:m=bt709:r=tv,setpts=PTS-STARTPTS,fps=60000/1001,format=yuv420p"
    );
    // Every rung is tagged BT.709.
    let after = |flag: &str| a.windows(2).filter(|w| w[0] == flag).count();
    assert_eq!(after("-color_trc"), 3);
    assert_eq!(after("-color_primaries"), 3);
}

#[test]
fn fragments_use_positive_offsets_and_an_edit_list() {
    let a = plan().args();
    assert!(
        !a.iter().any(|x| x.contains("cmaf")),
        "signed offsets: {a:?}"
    );
    let movflags: Vec<_> = a
        .windows(2)
        .filter(|w| w[0] == "-movflags")
        .map(|w| &w[1])
        .collect();
    assert_eq!(movflags.len(), 4);
    assert!(
        movflags.iter().all(|m| m.contains("delay_moov")),
        "{movflags:?}"
    );
    assert_eq!(
        a.windows(2)
            .filter(|w| w[0] == "-use_editlist" && w[1] == "1")
            .count(),
        4
    );
}

#[test]
fn default_audio_track_is_aligned_with_the_picture() {
    let mut p = plan();
    p.audio_stream = 1;
    p.video_start_s = 0.023;
    p.video_duration_s = 2.0;
    let a = p.args();
    let map: Vec<_> = a
        .windows(2)
        .filter(|w| w[0] == "-map")
        .map(|w| w[1].as_str())
        .collect();
    assert!(map.contains(&"0:a:1"), "{map:?}");
    let af = &a[a.iter().position(|x| x == "-af").unwrap() + 1];
    assert_eq!(
        af,
        "asetpts=PTS-0.023000/TB,aresample=async=1:first_pts=0,\
         apad=whole_dur=2.000000,atrim=end=2.000000"
    );
}

#[test]
fn gop_is_fixed_closed_and_scene_cut_free() {
    let a = plan().args();
    let after = |flag: &str| -> Vec<&String> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| &w[1])
            .collect()
    };
    assert!(after("-g").iter().all(|v| *v == "120"));
    assert!(after("-keyint_min").iter().all(|v| *v == "120"));
    assert!(after("-sc_threshold").iter().all(|v| *v == "0"));
    assert!(after("-flags").iter().all(|v| *v == "+cgop"));
    assert!(after("-force_key_frames")
        .iter()
        .all(|v| *v == "expr:gte(t,n_forced*4)"));
}

#[test]
fn input_is_sandboxed() {
    let a = plan().args();
    let i = a.iter().position(|x| x == "-i").unwrap();
    assert_eq!(a[i + 1], "file:/work/src");
    let before = &a[..i];
    let pw = before
        .iter()
        .position(|x| x == "-protocol_whitelist")
        .unwrap();
    assert_eq!(before[pw + 1], "file");
    let fw = before
        .iter()
        .position(|x| x == "-format_whitelist")
        .unwrap();
    assert!(!before[fw + 1]
        .split(',')
        .any(|f| f == "hls" || f == "concat"));
}

#[test]
fn parts_are_read_in_place_with_the_concat_protocol() {
    let input = Input::parts(vec!["/d/part-00001".into(), "/d/part-00002".into()]).unwrap();
    let a = input.args();
    assert_eq!(a[1], "concat,file");
    assert_eq!(a[5], "concat:/d/part-00001|/d/part-00002");
    assert!(
        Input::parts(vec!["/d/a|b".into()]).is_none(),
        "| would split the URL"
    );
    assert!(Input::parts(vec![]).is_none());
}

#[test]
fn poster_comes_from_the_same_decode() {
    let mut p = plan();
    p.poster = Some(Poster {
        at_s: 2.0,
        max_width: 1280,
        path: "/work/poster.jpg".into(),
    });
    let a = p.args();
    assert_eq!(a.iter().filter(|x| *x == "-i").count(), 1);
    let graph = &a[a.iter().position(|x| x == "-filter_complex").unwrap() + 1];
    assert!(
        graph.starts_with(
            "[0:v:0]setpts=PTS-STARTPTS,fps=30/1,format=yuv420p,split=4[s0][s1][s2][s3]"
        ),
        "{graph}"
    );
    assert!(
        graph.ends_with(";[s3]select='eq(n\\,60)',scale='min(1280,iw)':-2,setsar=1[poster]"),
        "{graph}"
    );
    assert_eq!(a.last().unwrap(), "/work/poster.jpg");
}
