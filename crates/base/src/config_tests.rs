use super::*;
use figment::Jail;

/// `OXCAST_*` variables are filtered by this list: a section missing from it would ignore
/// its environment silently.
#[test]
fn every_top_level_key_is_read_from_the_environment() {
    let v = serde_json::to_value(Config::default()).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut listed = TOP_LEVEL_KEYS.to_vec();
    keys.sort_unstable();
    listed.sort_unstable();
    assert_eq!(keys, listed);
    Jail::expect_with(|jail| {
        jail.set_env("OXCAST_ORIGIN__MAX_BLOCKING_PER_ADDR", "7");
        assert_eq!(Config::load(None).unwrap().origin.max_blocking_per_addr, 7);
        Ok(())
    });
}

#[test]
fn roles_parse_from_flags_env_and_lists_and_name_mistakes() {
    Jail::expect_with(|jail| {
        assert!(Config::load(None).unwrap().roles.is_all());
        jail.set_env("OXCAST_ROLES", "worker, api");
        let c = Config::load(None).unwrap();
        assert!(c.roles.has(Role::Api) && c.roles.has(Role::Worker));
        assert!(!c.roles.has(Role::Live));
        assert_eq!(c.roles.to_string(), "api,worker");
        jail.set_env("OXCAST_ROLES", "api,transcoder");
        let e = Config::load(None).unwrap_err().to_string();
        assert!(e.contains("unknown role \"transcoder\""), "{e}");
        jail.set_env("OXCAST_ROLES", "api");
        jail.create_file("o.toml", "roles = [\"live\", \"ingest\"]\n")?;
        // The environment wins over the file.
        let c = Config::load(Some(Path::new("o.toml"))).unwrap();
        assert_eq!(c.roles.to_string(), "api");
        Ok(())
    });
    assert!("".parse::<Roles>().is_err());
}

#[test]
fn split_roles_and_shared_databases_need_a_signing_key() {
    let mut c = Config::default();
    assert!(c.validate().is_ok());
    c.roles = "api".parse().unwrap();
    assert!(c.validate().unwrap_err().contains("signing_key"));
    c.signing_key = Some("k".into());
    assert!(c.validate().is_ok());
    let mut c = Config {
        database_url: Some("postgres://db/oxcast".into()),
        ..Config::default()
    };
    assert!(c.validate().unwrap_err().contains("PostgreSQL"));
    c.upload.signing_key = Some("old".into());
    assert!(c.validate().is_ok());
    assert_eq!(c.signing_key(), Some("old"));
    // Ingest and live may run in separate processes: the ingest relays to the encoders.
    c.roles = "ingest".parse().unwrap();
    assert!(c.validate().is_ok());
    c.roles = "live".parse().unwrap();
    assert!(c.validate().is_ok());
}

#[test]
fn the_relay_listener_is_configurable_and_its_advertised_address_checked() {
    Jail::expect_with(|jail| {
        assert_eq!(Config::load(None).unwrap().live.relay_listen, None);
        jail.set_env("OXCAST_LIVE__RELAY_LISTEN", "0.0.0.0:1940");
        jail.set_env("OXCAST_LIVE__RELAY_ADVERTISE", "encoder-1.internal:1940");
        let c = Config::load(None).unwrap();
        assert_eq!(
            c.live.relay_listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 1940)))
        );
        assert_eq!(
            c.live.relay_advertise.as_deref(),
            Some("encoder-1.internal:1940")
        );
        Ok(())
    });
    let mut c = Config::default();
    c.live.relay_advertise = Some("10.0.0.5:1940".into());
    assert!(c.validate().unwrap_err().contains("live.relay_listen"));
    c.live.relay_listen = Some(SocketAddr::from(([0, 0, 0, 0], 1940)));
    assert!(c.validate().is_ok());
    c.live.relay_advertise = Some("[::1]:1940".into());
    assert!(c.validate().is_ok());
    for bad in ["10.0.0.5", "10.0.0.5:", ":1940", "host:0", "host:99999"] {
        c.live.relay_advertise = Some(bad.into());
        let e = c.validate().unwrap_err();
        assert!(e.contains("live.relay_advertise"), "{bad}: {e}");
    }
}

#[test]
fn chunks_are_at_least_one_segment_long() {
    let mut c = Config::default();
    c.transcode.chunk_s = 2.0;
    assert!(c.validate().unwrap_err().contains("transcode.chunk_s"));
    c.transcode.chunk_s = f64::NAN;
    assert!(c.validate().unwrap_err().contains("transcode.chunk_s"));
    c.transcode.chunk_s = 4.0;
    assert!(c.validate().is_ok());
    c.transcode.segment_s = 0.0;
    assert!(c.validate().unwrap_err().contains("transcode.segment_s"));
}

#[test]
fn the_dvr_window_and_origin_limits_are_checked() {
    let mut c = Config::default();
    c.live.dvr_window_s = Some(10.0);
    let e = c.validate().unwrap_err();
    assert!(e.contains("live.dvr_window_s") && e.contains("16 s"), "{e}");
    c.live.dvr_window_s = Some(f64::INFINITY);
    assert!(c.validate().unwrap_err().contains("live.dvr_window_s"));
    c.live.dvr_window_s = Some(600.0);
    assert!(c.validate().is_ok());
    c.origin.max_blocking = 0;
    assert!(c.validate().unwrap_err().contains("origin.max_blocking"));
    c.origin.max_blocking = 10;
    c.origin.small_object_kb = 1 << 30;
    assert!(c.validate().unwrap_err().contains("origin.small_object_kb"));
}

#[test]
fn the_vod_ladder_is_configurable_from_the_file_or_env_and_checked() {
    Jail::expect_with(|jail| {
        assert_eq!(Config::load(None).unwrap().transcode.ladder.len(), 5);
        jail.create_file(
            "o.toml",
            "[[transcode.ladder]]\nshort_side = 720\nkbps = 3000\n\n\
             [[transcode.ladder]]\nshort_side = 360\nkbps = 700\n",
        )?;
        let c = Config::load(Some(Path::new("o.toml"))).unwrap();
        let rung = |short_side, kbps| LadderRung { short_side, kbps };
        assert_eq!(c.transcode.ladder, vec![rung(720, 3000), rung(360, 700)]);
        jail.set_env(
            "OXCAST_TRANSCODE__LADDER",
            "[{short_side=1080, kbps=4500}, {short_side=240, kbps=300}]",
        );
        let c = Config::load(Some(Path::new("o.toml"))).unwrap();
        assert_eq!(c.transcode.ladder, vec![rung(1080, 4500), rung(240, 300)]);
        jail.set_env("OXCAST_TRANSCODE__LADDER", "[{short_side=1080, mbps=4}]");
        let e = Config::load(None).unwrap_err().to_string();
        assert!(e.contains("mbps"), "{e}");
        Ok(())
    });
    let mut c = Config::default();
    let rung = |short_side, kbps| LadderRung { short_side, kbps };
    for (ladder, want) in [
        (vec![], "at least one rung"),
        (vec![rung(0, 800)], "short_side 0"),
        (vec![rung(720, 0)], "720p rung's kbps 0"),
        (
            vec![rung(720, 2800), rung(720, 1000)],
            "720p is listed twice",
        ),
    ] {
        c.transcode.ladder = ladder;
        let e = c.validate().unwrap_err();
        assert!(e.contains("transcode.ladder") && e.contains(want), "{e}");
    }
}

#[test]
fn the_readmes_example_configuration_is_the_default_one() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("```toml\n").expect("a toml block") + 8;
    let block = &readme[start..];
    let block = &block[..block.find("```").unwrap()];
    Jail::expect_with(|jail| {
        jail.create_file("readme.toml", block)?;
        let c = Config::load(Some(Path::new("readme.toml"))).unwrap();
        assert_eq!(c, Config::default(), "README.md's example is the defaults");
        Ok(())
    });
}

#[test]
fn defaults_work_with_no_file_and_no_env() {
    Jail::expect_with(|_| {
        let c = Config::load(None).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.upload.part_size, 8 << 20);
        Ok(())
    });
}

#[test]
fn env_overrides_file_and_nests_with_double_underscore() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "oxcast.toml",
            "listen = \"127.0.0.1:9000\"\n[worker]\nconcurrency = 3\nlease_s = 5\n",
        )?;
        jail.set_env("OXCAST_WORKER__CONCURRENCY", "7");
        jail.set_env("OXCAST_DATA_DIR", "/srv/ox");
        jail.set_env("OXCAST_SERVER", "http://elsewhere");
        let c = Config::load(Some(Path::new("oxcast.toml"))).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.worker.concurrency, 7);
        assert_eq!(c.worker.lease_s, 5);
        assert_eq!(c.data_dir, PathBuf::from("/srv/ox"));
        Ok(())
    });
}

#[test]
fn unknown_keys_are_errors() {
    Jail::expect_with(|jail| {
        jail.create_file("oxcast.toml", "[worker]\nconcurency = 3\n")?;
        let e = Config::load(Some(Path::new("oxcast.toml"))).unwrap_err();
        assert!(e.to_string().contains("concurency"), "{e}");
        Ok(())
    });
}

#[test]
fn missing_explicit_file_is_an_error() {
    Jail::expect_with(|_| {
        assert!(Config::load(Some(Path::new("nope.toml"))).is_err());
        Ok(())
    });
}

#[test]
fn storage_from_env_and_its_targets() {
    Jail::expect_with(|jail| {
        jail.set_env("OXCAST_STORAGE__URL", "s3://oxcast-media");
        jail.set_env("OXCAST_STORAGE__ENDPOINT", "http://127.0.0.1:8333");
        jail.set_env("OXCAST_STORAGE__PATH_STYLE", "true");
        jail.set_env("OXCAST_STORAGE__SECRET_ACCESS_KEY", "hunter2");
        jail.set_env("OXCAST_PUBLIC_BASE_URL", "https://cdn.example.com/m");
        let c = Config::load(None).unwrap();
        assert_eq!(c.storage.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert!(c.storage.path_style);
        assert_eq!(
            c.public_base_url.as_deref(),
            Some("https://cdn.example.com/m")
        );
        assert_eq!(
            c.storage.target(&c.data_dir).unwrap(),
            StorageTarget::S3 {
                bucket: "oxcast-media".into()
            }
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
        Ok(())
    });
    let mut s = StorageConfig::default();
    assert_eq!(
        s.target(Path::new("/d")).unwrap(),
        StorageTarget::Local(PathBuf::from("/d/objects"))
    );
    s.url = Some("file:///srv/objects".into());
    assert_eq!(
        s.target(Path::new("/d")).unwrap(),
        StorageTarget::Local(PathBuf::from("/srv/objects"))
    );
    for bad in [
        "s3://",
        "s3://Bad_Name",
        "s3://b/prefix",
        "gs://b",
        "s3://-ab",
    ] {
        s.url = Some(bad.into());
        let e = s.target(Path::new("/d")).unwrap_err();
        assert!(e.contains(bad), "{e}");
    }
}

#[test]
fn default_database_is_sqlite_in_data_dir() {
    let c = Config::default();
    assert_eq!(c.database_url(), "sqlite://oxcast-data/oxcast.db?mode=rwc");
}
