//! The end of a session: its stored segments become an ordinary video (no re-encoding), with
//! VOD playlists, an MPD and a poster frame.

use std::sync::Arc;

use bytes::Bytes;
use oxcast_db::{Published, Rendition};
use oxcast_store::{keys, Key};

use crate::session::{LiveManager, Session};

impl LiveManager {
    pub(crate) async fn publish_recording(
        &self,
        session: &Arc<Session>,
    ) -> Result<Published, String> {
        let (video, files, published, top) = {
            let st = session.state.lock().expect("state");
            let mut files: Vec<(String, String)> = Vec::new();
            for r in &st.renditions {
                if let Some(pl) = st.playlist(&r.name) {
                    files.push((format!("{}/index.m3u8", r.name), pl.render(false)));
                }
            }
            let master = st.master("").ok_or("no media was received")?;
            files.push(("master.m3u8".into(), master));
            let mpd = st
                .mpd("", "/time", self.clock.now_ms())
                .ok_or("no media was received")?;
            files.push(("manifest.mpd".into(), mpd));
            let top = st
                .renditions
                .iter()
                .find(|r| r.rung.is_some())
                .ok_or("no video was received")?;
            let duration_s: f64 = top.segments.iter().map(|s| s.duration_s).sum();
            if top.segments.is_empty() {
                return Err("no complete segment was received".into());
            }
            let audio = st.renditions.iter().find(|r| r.rung.is_none());
            let audio_bw = audio.map_or(0, |a| a.bandwidth());
            let published = Published {
                duration_s,
                width: top.track.as_ref().and_then(|t| t.width).unwrap_or(0),
                height: top.track.as_ref().and_then(|t| t.height).unwrap_or(0),
                renditions: st
                    .renditions
                    .iter()
                    .filter_map(|r| {
                        let t = r.track.as_ref()?;
                        let rung = r.rung.as_ref()?;
                        Some(Rendition {
                            name: r.name.clone(),
                            width: t.width.unwrap_or(rung.width),
                            height: t.height.unwrap_or(rung.height),
                            bandwidth: r.bandwidth() + audio_bw,
                            codecs: match audio.and_then(|a| a.track.as_ref()) {
                                Some(a) => format!("{},{}", t.codec, a.codec),
                                None => t.codec.clone(),
                            },
                        })
                    })
                    .collect(),
            };
            let first = top.segments.first().expect("checked");
            let top = (top.name.clone(), first.epoch, first.number);
            (st.video_id, files, published, top)
        };
        for (name, text) in files {
            let key = keys::video_object(video, &name).map_err(|e| e.to_string())?;
            self.store
                .put(&key, Bytes::from(text))
                .await
                .map_err(|e| e.to_string())?;
        }
        // Parts duplicate the segments' bytes; the recording needs only segments.
        if let Ok(objects) = self.store.list(&keys::video_prefix(video)).await {
            for o in objects.iter().filter(|o| o.key.contains("/part-")) {
                let _ = self.store.delete(&Key::from(o.key.clone())).await;
            }
        }
        if let Err(e) = self.poster(video, &top.0, top.1, top.2).await {
            tracing::warn!(error = %e, "no poster for the recording");
        }
        Ok(published)
    }

    /// A poster from the first segment of the top rendition.
    async fn poster(
        &self,
        video: oxcast_base::VideoId,
        rendition: &str,
        epoch: u32,
        number: u64,
    ) -> Result<(), String> {
        let init = self
            .store
            .get_bytes(
                &keys::video_object(video, &format!("{rendition}/init-{epoch}.mp4"))
                    .map_err(|e| e.to_string())?,
            )
            .await
            .map_err(|e| e.to_string())?;
        let seg = self
            .store
            .get_bytes(
                &keys::video_object(video, &format!("{rendition}/seg-{number}.m4s"))
                    .map_err(|e| e.to_string())?,
            )
            .await
            .map_err(|e| e.to_string())?;
        let dir = self.scratch.join(format!("poster-{video}"));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| e.to_string())?;
        let src = dir.join("first.mp4");
        tokio::fs::write(&src, [&init[..], &seg[..]].concat())
            .await
            .map_err(|e| e.to_string())?;
        let out = dir.join("poster.jpg");
        let mut args: Vec<String> = ["-hide_banner", "-nostdin", "-y", "-v", "error"]
            .map(String::from)
            .to_vec();
        args.extend(oxcast_transcode::Input::File(src).args());
        args.extend(["-frames:v", "1", "-q:v", "3", "-f", "image2"].map(String::from));
        args.push(out.display().to_string());
        // Through the transcode crate's builder: killed with us, even by SIGKILL.
        let status = oxcast_transcode::command(&self.config.transcode.ffmpeg)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| e.to_string())?;
        if status.success() {
            self.store
                .put_file(
                    &keys::video_object(video, "poster.jpg").map_err(|e| e.to_string())?,
                    &out,
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(())
    }
}
