//! Building the [`Store`] the configuration names, and proving it reachable at start.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use oxcast_base::config::{StorageConfig, StorageTarget};
use oxcast_base::Config;

use crate::s3::{S3Multipart, S3Settings};
use crate::{Error, Result, Store};

/// How long `open` waits for the bucket to answer before giving up.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// The store `config.storage` names, checked with one cheap request (for a bucket: a
    /// signed HeadBucket) so an unreachable endpoint, a missing bucket or refused credentials
    /// fail at start, within a few seconds, with an error naming the bucket and endpoint.
    pub async fn open(config: &Config) -> Result<Store> {
        let store = Self::from_config(config)?;
        if let Some(m) = store.multipart() {
            m.check(CHECK_TIMEOUT).await?;
        }
        Ok(store)
    }

    /// The store `config.storage` names, without contacting it.
    pub fn from_config(config: &Config) -> Result<Store> {
        match config
            .storage
            .target(&config.data_dir)
            .map_err(Error::Config)?
        {
            StorageTarget::Local(root) => Store::local(&root),
            StorageTarget::S3 { bucket } => {
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let s = s3_settings(&config.storage, bucket, env)?;
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(&s.bucket)
                    .with_region(&s.region)
                    .with_access_key_id(&s.access_key_id)
                    .with_secret_access_key(&s.secret_access_key)
                    .with_allow_http(s.endpoint.scheme() == "http")
                    .with_virtual_hosted_style_request(!s.path_style)
                    .with_endpoint(object_store_endpoint(&s));
                if let Some(t) = &s.session_token {
                    b = b.with_token(t);
                }
                let inner = b.build().map_err(|e| {
                    Error::Config(format!("s3://{} at {}: {e}", s.bucket, s.endpoint))
                })?;
                let multipart = S3Multipart::new(&s)?;
                Ok(Store {
                    inner: Arc::new(inner),
                    local: None,
                    multipart: Some(Arc::new(multipart)),
                })
            }
        }
    }
}

/// What the S3 clients are built from: the config, else the standard `AWS_*` variables (read
/// through `env`, so the choice is testable).
pub(crate) fn s3_settings(
    c: &StorageConfig,
    bucket: String,
    env: impl Fn(&str) -> Option<String>,
) -> Result<S3Settings> {
    let region = c
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let endpoint = c
        .endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let endpoint: url::Url = endpoint
        .parse()
        .map_err(|e| Error::Config(format!("storage.endpoint {endpoint:?} is not a URL: {e}")))?;
    if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
        return Err(Error::Config(format!(
            "storage.endpoint {endpoint} must be an http:// or https:// URL with a host"
        )));
    }
    if !c.path_style
        && matches!(
            endpoint.host(),
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))
        )
    {
        return Err(Error::Config(format!(
            "s3://{bucket} at {endpoint}: an endpoint given by IP address needs \
             storage.path_style = true (virtual-hosted style puts the bucket in the host name)"
        )));
    }
    let (key, secret, token) = match (&c.access_key_id, &c.secret_access_key) {
        (Some(k), Some(s)) => (k.clone(), s.clone(), None),
        (None, None) => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(k), Some(s)) => (k, s, env("AWS_SESSION_TOKEN")),
            _ => {
                return Err(Error::Config(format!(
                    "s3://{bucket}: no credentials: set storage.access_key_id and \
                     storage.secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                )))
            }
        },
        _ => {
            return Err(Error::Config(
                "storage.access_key_id and storage.secret_access_key must be set together".into(),
            ))
        }
    };
    Ok(S3Settings {
        endpoint,
        path_style: c.path_style,
        bucket,
        region,
        access_key_id: key,
        secret_access_key: secret,
        session_token: token,
    })
}

/// object_store wants the bucket inside a virtual-hosted endpoint's host.
fn object_store_endpoint(s: &S3Settings) -> String {
    let base = s.endpoint.as_str().trim_end_matches('/');
    if s.path_style {
        return base.to_string();
    }
    let mut u = s.endpoint.clone();
    let host = format!("{}.{}", s.bucket, u.host_str().unwrap_or_default());
    let _ = u.set_host(Some(&host));
    u.as_str().trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn settings_from_config_then_aws_environment() {
        let mut c = StorageConfig {
            url: Some("s3://media".into()),
            endpoint: Some("http://127.0.0.1:8333".into()),
            path_style: true,
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            ..Default::default()
        };
        let s = s3_settings(&c, "media".into(), no_env).unwrap();
        assert_eq!(s.region, "us-east-1");
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:8333/");
        assert_eq!(object_store_endpoint(&s), "http://127.0.0.1:8333");

        c.access_key_id = None;
        c.secret_access_key = None;
        c.endpoint = None;
        c.path_style = false;
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("ek".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("es".to_string()),
            "AWS_SESSION_TOKEN" => Some("tok".to_string()),
            "AWS_REGION" => Some("eu-west-3".to_string()),
            _ => None,
        };
        let s = s3_settings(&c, "media".into(), env).unwrap();
        assert_eq!(
            (s.access_key_id.as_str(), s.session_token.as_deref()),
            ("ek", Some("tok"))
        );
        assert_eq!(s.endpoint.as_str(), "https://s3.eu-west-3.amazonaws.com/");
        assert_eq!(
            object_store_endpoint(&s),
            "https://media.s3.eu-west-3.amazonaws.com"
        );

        let e = s3_settings(&c, "media".into(), no_env).unwrap_err();
        assert!(e.to_string().contains("no credentials"), "{e}");
        c.access_key_id = Some("k".into());
        let e = s3_settings(&c, "media".into(), no_env).unwrap_err();
        assert!(e.to_string().contains("set together"), "{e}");
        c.secret_access_key = Some("s".into());
        c.endpoint = Some("http://10.0.0.1:9000".into());
        let e = s3_settings(&c, "media".into(), no_env).unwrap_err();
        assert!(e.to_string().contains("path_style"), "{e}");
        c.endpoint = Some("ftp://x".into());
        assert!(s3_settings(&c, "media".into(), no_env).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_bucket_fails_fast_naming_it_and_not_the_secret() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(); // closed again: nothing listens there
        let config = Config {
            storage: StorageConfig {
                url: Some("s3://nowhere-bucket".into()),
                endpoint: Some(format!("http://127.0.0.1:{port}")),
                path_style: true,
                access_key_id: Some("k".into()),
                secret_access_key: Some("very-secret".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let t = std::time::Instant::now();
        let e = Store::open(&config).await.unwrap_err().to_string();
        assert!(t.elapsed() < Duration::from_secs(6));
        assert!(e.contains("s3://nowhere-bucket"), "{e}");
        assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(!e.contains("very-secret"), "{e}");
    }

    #[tokio::test]
    async fn default_is_the_local_folder_in_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let store = Store::open(&config).await.unwrap();
        assert!(store.multipart().is_none());
        assert!(store
            .local_path(&crate::Key::from("a"))
            .unwrap()
            .starts_with(dir.path().join("objects")));
    }
}
