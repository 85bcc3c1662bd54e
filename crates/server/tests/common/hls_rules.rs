//! RFC 8216bis (with its Low-Latency HLS additions) written as assertions, applied to every live
//! media playlist the end-to-end tests fetch. Written from the specification, independently of
//! the playlist writer in `oxcast-media`, so that a mistake there is not repeated here.
//!
//! Checked: the header tags and their order, `EXT-X-VERSION` high enough for what is used,
//! `EXTINF` durations within `TARGETDURATION`, parts within `PART-TARGET`, `PART-HOLD-BACK` and
//! `CAN-SKIP-UNTIL` minimums, a URI after every `EXTINF` and none elsewhere, `EXT-X-MAP` before
//! the first segment, parts only for the segments ending in the last three target durations
//! (and the one in progress), one preload hint after the last part, rendition reports last,
//! `EXT-X-SKIP` only in a delta update right after the header, and attribute lists that parse.

use std::collections::HashMap;

/// The attributes of `NAME=value,…` (quoted strings keep their commas).
pub fn attributes(list: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut rest = list;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("attribute without '=' in {list:?}"))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!("bad attribute name {name:?} in {list:?}"));
        }
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q
                .find('"')
                .ok_or_else(|| format!("unterminated string in {list:?}"))?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        if out.insert(name.to_string(), value).is_some() {
            return Err(format!("attribute {name} twice in {list:?}"));
        }
        rest = match next.strip_prefix(',') {
            Some(r) => r,
            None if next.is_empty() => "",
            None => return Err(format!("junk after {name} in {list:?}")),
        };
    }
    Ok(out)
}

fn number(attrs: &HashMap<String, String>, key: &str, line: &str) -> Result<f64, String> {
    attrs
        .get(key)
        .ok_or_else(|| format!("{key} missing: {line}"))?
        .parse::<f64>()
        .map_err(|_| format!("{key} is not a number: {line}"))
}

/// Checks one live media playlist; `Err` names the first rule it breaks.
pub fn check_live_media_playlist(text: &str) -> Result<(), String> {
    let lines: Vec<&str> = text.lines().collect();
    if lines.first() != Some(&"#EXTM3U") {
        return Err("the first line must be #EXTM3U".into());
    }
    let tag = |name: &str| -> Vec<(usize, &str)> {
        lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':').or((r.is_empty()).then_some("")))
                    .map(|v| (i, v))
            })
            .collect()
    };
    let once = |name: &str| -> Result<(usize, &str), String> {
        match tag(name)[..] {
            [one] => Ok(one),
            [] => Err(format!("{name} missing")),
            _ => Err(format!("{name} more than once")),
        }
    };
    let (_, version) = once("#EXT-X-VERSION")?;
    let version: u32 = version
        .parse()
        .map_err(|_| "bad EXT-X-VERSION".to_string())?;
    let (_, target) = once("#EXT-X-TARGETDURATION")?;
    let target: f64 = target
        .parse()
        .map_err(|_| "bad TARGETDURATION".to_string())?;
    let (sc_at, sc) = once("#EXT-X-SERVER-CONTROL")?;
    let sc_attrs = attributes(sc)?;
    let (_, pinf) = once("#EXT-X-PART-INF")?;
    let part_target = number(&attributes(pinf)?, "PART-TARGET", pinf)?;
    let (seq_at, _) = once("#EXT-X-MEDIA-SEQUENCE")?;

    let hold = number(&sc_attrs, "PART-HOLD-BACK", sc)?;
    if hold < 2.0 * part_target {
        return Err(format!(
            "PART-HOLD-BACK {hold} is under twice PART-TARGET {part_target}"
        ));
    }
    if let Some(skip) = sc_attrs.get("CAN-SKIP-UNTIL") {
        let skip: f64 = skip.parse().map_err(|_| "bad CAN-SKIP-UNTIL".to_string())?;
        if skip < 6.0 * target {
            return Err(format!(
                "CAN-SKIP-UNTIL {skip} is under six target durations"
            ));
        }
    }
    if sc_attrs.get("CAN-BLOCK-RELOAD").map(String::as_str) != Some("YES") {
        return Err("LL-HLS needs CAN-BLOCK-RELOAD=YES".into());
    }

    // Media section: everything after the last header tag.
    let first_media = lines
        .iter()
        .position(|l| {
            l.starts_with("#EXTINF")
                || l.starts_with("#EXT-X-PART:")
                || l.starts_with("#EXT-X-MAP")
                || l.starts_with("#EXT-X-SKIP")
                || l.starts_with("#EXT-X-PRELOAD-HINT")
        })
        .ok_or("no media at all")?;
    if seq_at > first_media || sc_at > first_media {
        return Err("header tags must come before the first media tag".into());
    }
    let skips = tag("#EXT-X-SKIP");
    if let Some((at, v)) = skips.first() {
        if skips.len() > 1 || *at != first_media {
            return Err("EXT-X-SKIP must be the first media tag, once".into());
        }
        if version < 9 {
            return Err("EXT-X-SKIP needs EXT-X-VERSION 9".into());
        }
        number(&attributes(v)?, "SKIPPED-SEGMENTS", v)?;
    } else if !lines[first_media].starts_with("#EXT-X-MAP") {
        return Err("the first segment needs an EXT-X-MAP before it".into());
    }

    let ended = text.contains("\n#EXT-X-ENDLIST");
    let mut segments: Vec<(f64, usize)> = Vec::new(); // (duration, line of its URI)
    let mut pending_extinf: Option<f64> = None;
    let mut parts_since_segment: Vec<(f64, bool)> = Vec::new();
    let mut part_lines: Vec<usize> = Vec::new();
    let mut hints = 0;
    let mut reports_from = None;
    for (i, l) in lines.iter().enumerate().skip(first_media) {
        if reports_from.is_some() && !l.starts_with("#EXT-X-RENDITION-REPORT:") && !l.is_empty() {
            return Err(format!("{l:?} after EXT-X-RENDITION-REPORT"));
        }
        if let Some(v) = l.strip_prefix("#EXTINF:") {
            let d: f64 = v
                .split(',')
                .next()
                .unwrap_or_default()
                .parse()
                .map_err(|_| format!("bad EXTINF {l}"))?;
            if (d.round()) > target {
                return Err(format!("EXTINF {d} rounds above TARGETDURATION {target}"));
            }
            pending_extinf = Some(d);
        } else if let Some(v) = l.strip_prefix("#EXT-X-PART:") {
            if hints > 0 {
                return Err("EXT-X-PART after the preload hint".into());
            }
            let a = attributes(v)?;
            let d = number(&a, "DURATION", l)?;
            if d > part_target + 1e-3 {
                return Err(format!("part of {d} s above PART-TARGET {part_target}"));
            }
            a.get("URI")
                .ok_or_else(|| format!("part without URI: {l}"))?;
            parts_since_segment.push((d, a.get("INDEPENDENT").is_some_and(|v| v == "YES")));
            part_lines.push(i);
        } else if let Some(v) = l.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            let a = attributes(v)?;
            if a.get("TYPE").map(String::as_str) != Some("PART") || !a.contains_key("URI") {
                return Err(format!("preload hint needs TYPE=PART and a URI: {l}"));
            }
            hints += 1;
        } else if let Some(v) = l.strip_prefix("#EXT-X-RENDITION-REPORT:") {
            let a = attributes(v)?;
            for k in ["URI", "LAST-MSN"] {
                a.get(k)
                    .ok_or_else(|| format!("rendition report without {k}: {l}"))?;
            }
            reports_from.get_or_insert(i);
        } else if let Some(v) = l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            let ok =
                v.len() >= 20 && v.as_bytes()[10] == b'T' && (v.ends_with('Z') || v.contains('+'));
            if !ok {
                return Err(format!(
                    "PROGRAM-DATE-TIME is not ISO 8601 with a zone: {v}"
                ));
            }
        } else if !l.starts_with('#') && !l.is_empty() {
            let Some(d) = pending_extinf.take() else {
                return Err(format!("URI {l:?} without an EXTINF"));
            };
            // The parts of a segment add up to it.
            if !parts_since_segment.is_empty() {
                let sum: f64 = parts_since_segment.iter().map(|p| p.0).sum();
                if (sum - d).abs() > 0.01 {
                    return Err(format!("parts of {l} add up to {sum} s, EXTINF says {d} s"));
                }
            }
            parts_since_segment.clear();
            segments.push((d, i));
        } else if let Some(v) = l.strip_prefix("#EXT-X-MAP:") {
            attributes(v)?.get("URI").ok_or("EXT-X-MAP without URI")?;
        }
    }
    if pending_extinf.is_some() {
        return Err("the last EXTINF has no URI".into());
    }
    if ended {
        if hints > 0 {
            return Err("an ended playlist has no preload hint".into());
        }
    } else if hints != 1 {
        return Err(format!(
            "a live LL-HLS playlist needs one preload hint, has {hints}"
        ));
    }
    if version < 9 && text.contains("CAN-SKIP-UNTIL") {
        return Err("CAN-SKIP-UNTIL needs EXT-X-VERSION 9".into());
    }
    // Parts are listed only near the live edge: no part before a segment that ends more than
    // three target durations before the end of the playlist (with slack of one segment).
    if let Some(&first_part) = part_lines.first() {
        let total: f64 = segments.iter().map(|s| s.0).sum();
        let before: f64 = segments
            .iter()
            .filter(|s| s.1 < first_part)
            .map(|s| s.0)
            .sum();
        if total - before > 3.0 * target + target + 1e-3 {
            return Err(format!(
                "parts listed {} s before the live edge (more than three target durations)",
                total - before
            ));
        }
    }
    Ok(())
}

/// Panics with the playlist when it breaks a rule.
pub fn assert_valid_live_playlist(text: &str) {
    if let Err(e) = check_live_media_playlist(text) {
        panic!("live playlist breaks RFC 8216bis: {e}\n{text}");
    }
}
