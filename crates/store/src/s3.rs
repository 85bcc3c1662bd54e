//! The S3 multipart operations behind uploads straight to the bucket: create, presigned part
//! URLs, list parts, complete, abort.
//!
//! `object_store` covers reads and writes of whole objects, and its signer can presign a
//! GET/PUT of an object but not an UploadPart (whose URL must carry `partNumber` and
//! `uploadId` inside the signature), and it exposes no ListParts. `rusty-s3` is a small,
//! maintained, sans-I/O crate for exactly these: it builds and SigV4-signs each request (query
//! auth), takes the signing time from us (our injected clock) and parses the XML answers; the
//! requests themselves go through reqwest here.

use std::time::Duration;

use rusty_s3::actions::{CompleteMultipartUpload, CreateMultipartUpload, ListParts};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::{Error, Result};

/// What it takes to sign requests for one bucket.
#[derive(Clone)]
pub struct S3Settings {
    /// `https://s3.REGION.amazonaws.com` for AWS.
    pub endpoint: url::Url,
    pub path_style: bool,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Temporary credentials (`AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
}

// Hand-written so that the secret never reaches a log line.
impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Settings(s3://{} at {})", self.bucket, self.endpoint)
    }
}

/// A part as the bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPart {
    pub part_number: u32,
    pub size: u64,
    /// As S3 gives it, quoted.
    pub etag: String,
}

/// How a CompleteMultipartUpload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    /// The object now exists.
    Done,
    /// The bucket no longer knows the upload: completed meanwhile (by a concurrent call) or
    /// aborted. The caller checks the object.
    NoSuchUpload,
}

/// Multipart uploads on one bucket.
pub struct S3Multipart {
    bucket: Bucket,
    creds: Credentials,
    http: reqwest::Client,
    /// For error messages: `s3://bucket at endpoint`, never a secret.
    name: String,
}

impl std::fmt::Debug for S3Multipart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// A bound on any one request (the object_store client retries on its own; these calls are
/// made on behalf of a waiting API client, who retries).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl S3Multipart {
    pub fn new(s: &S3Settings) -> Result<Self> {
        let name = format!("s3://{} at {}", s.bucket, s.endpoint);
        let style = if s.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            s.endpoint.clone(),
            style,
            s.bucket.clone(),
            s.region.clone(),
        )
        .map_err(|e| Error::Config(format!("{name}: {e}")))?;
        let creds = match &s.session_token {
            Some(t) => Credentials::new_with_token(
                s.access_key_id.clone(),
                s.secret_access_key.clone(),
                t.clone(),
            ),
            None => Credentials::new(s.access_key_id.clone(), s.secret_access_key.clone()),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::Config(format!("{name}: http client: {e}")))?;
        Ok(Self {
            bucket,
            creds,
            http,
            name,
        })
    }

    /// `s3://bucket at endpoint`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A presigned UploadPart URL valid from `now_ms` (epoch milliseconds) for `ttl`.
    pub fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<url::Url> {
        let n = u16::try_from(part_number)
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| Error::Config(format!("part number {part_number} is not 1..=10000")))?;
        let action = self
            .bucket
            .upload_part(Some(&self.creds), key, n, upload_id);
        Ok(action.sign_with_time(ttl, &timestamp(now_ms)))
    }

    /// Starts a multipart upload of `key`; returns its upload id.
    pub async fn create(&self, key: &str, now_ms: i64) -> Result<String> {
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.creds), key)
            .sign_with_time(SIGN_TTL, &timestamp(now_ms));
        let body = self
            .send(reqwest::Method::POST, url, None, "CreateMultipartUpload")
            .await?;
        let r = CreateMultipartUpload::parse_response(&body)
            .map_err(|e| self.err("CreateMultipartUpload", format!("unreadable answer: {e}")))?;
        Ok(r.upload_id().to_string())
    }

    /// The parts stored so far, by part number; `None` when the bucket does not know the upload
    /// (completed or aborted).
    pub async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
        now_ms: i64,
    ) -> Result<Option<Vec<ListedPart>>> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let mut action = self.bucket.list_parts(Some(&self.creds), key, upload_id);
            if let Some(m) = marker {
                action.set_part_number_marker(m);
            }
            let url = action.sign_with_time(SIGN_TTL, &timestamp(now_ms));
            let body = match self
                .send(reqwest::Method::GET, url, None, "ListParts")
                .await
            {
                Ok(b) => b,
                Err(Error::S3 { code: Some(c), .. }) if c == "NoSuchUpload" => return Ok(None),
                Err(e) => return Err(e),
            };
            let r = ListParts::parse_response(&body)
                .map_err(|e| self.err("ListParts", format!("unreadable answer: {e}")))?;
            out.extend(r.parts.into_iter().map(|p| ListedPart {
                part_number: u32::from(p.number),
                size: p.size,
                etag: p.etag,
            }));
            match r.next_part_number_marker {
                Some(m) if marker != Some(m) => marker = Some(m),
                _ => break,
            }
        }
        out.sort_by_key(|p| p.part_number);
        Ok(Some(out))
    }

    /// Completes the upload from parts `1..=etags.len()` with these ETags, in order.
    pub async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
        now_ms: i64,
    ) -> Result<Completed> {
        let action = self.bucket.complete_multipart_upload(
            Some(&self.creds),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign_with_time(SIGN_TTL, &timestamp(now_ms));
        let body = CompleteMultipartUpload::body(action);
        match self
            .send(
                reqwest::Method::POST,
                url,
                Some(body),
                "CompleteMultipartUpload",
            )
            .await
        {
            // S3 may answer 200 with an error document when completion fails late.
            Ok(text) if text.contains("<Error>") => Err(self.err(
                "CompleteMultipartUpload",
                error_code(&text).unwrap_or_else(|| text.chars().take(300).collect()),
            )),
            Ok(_) => Ok(Completed::Done),
            Err(Error::S3 { code: Some(c), .. }) if c == "NoSuchUpload" => {
                Ok(Completed::NoSuchUpload)
            }
            Err(e) => Err(e),
        }
    }

    /// Abandons the upload and frees its parts; an unknown upload is not an error.
    pub async fn abort(&self, key: &str, upload_id: &str, now_ms: i64) -> Result<()> {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.creds), key, upload_id)
            .sign_with_time(SIGN_TTL, &timestamp(now_ms));
        match self
            .send(reqwest::Method::DELETE, url, None, "AbortMultipartUpload")
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::S3 { code: Some(c), .. }) if c == "NoSuchUpload" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A cheap signed request (HeadBucket) proving the endpoint answers, the bucket exists and
    /// the credentials are accepted; bounded by `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<()> {
        let url = self
            .bucket
            .head_bucket(Some(&self.creds))
            .sign(Duration::from_secs(60));
        let resp = self
            .http
            .head(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.err("HeadBucket", describe_reqwest(&e)))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            403 => Err(self.err(
                "HeadBucket",
                "403: the credentials are refused or lack access to the bucket".into(),
            )),
            404 => Err(self.err("HeadBucket", "404: the bucket does not exist".into())),
            s => Err(self.err("HeadBucket", format!("HTTP {s}"))),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Option<String>,
        op: &'static str,
    ) -> Result<String> {
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.err(op, describe_reqwest(&e)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| self.err(op, describe_reqwest(&e)))?;
        if !status.is_success() {
            return Err(Error::S3 {
                store: self.name.clone(),
                op,
                code: error_code(&text),
                detail: format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    text.chars().take(300).collect::<String>()
                ),
            });
        }
        Ok(text)
    }

    fn err(&self, op: &'static str, detail: String) -> Error {
        Error::S3 {
            store: self.name.clone(),
            op,
            code: None,
            detail,
        }
    }
}

/// Signature lifetime of requests this process sends at once.
const SIGN_TTL: Duration = Duration::from_secs(300);

fn timestamp(now_ms: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(now_ms).unwrap_or_else(|_| jiff::Timestamp::now())
}

/// The `<Code>` of an S3 error document.
pub(crate) fn error_code(xml: &str) -> Option<String> {
    let start = xml.find("<Code>")? + "<Code>".len();
    let end = xml[start..].find("</Code>")? + start;
    Some(xml[start..end].trim().to_string())
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(path_style: bool) -> S3Settings {
        S3Settings {
            endpoint: "http://127.0.0.1:8333".parse().unwrap(),
            path_style,
            bucket: "media".into(),
            region: "us-east-1".into(),
            access_key_id: "AKID".into(),
            secret_access_key: "SECRET".into(),
            session_token: None,
        }
    }

    #[test]
    fn presigned_part_urls_carry_the_part_and_upload_in_the_signature() {
        let s3 = S3Multipart::new(&settings(true)).unwrap();
        let url = s3
            .presign_part(
                "sources/u1",
                "up-1",
                7,
                1_700_000_000_000,
                Duration::from_secs(600),
            )
            .unwrap();
        assert_eq!(url.path(), "/media/sources/u1");
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["partNumber"], "7");
        assert_eq!(q["uploadId"], "up-1");
        assert_eq!(q["X-Amz-Expires"], "600");
        assert_eq!(q["X-Amz-Date"], "20231114T221320Z");
        assert_eq!(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert!(q["X-Amz-Credential"].starts_with("AKID/20231114/us-east-1/s3/aws4_request"));
        assert_eq!(q["X-Amz-Signature"].len(), 64);
        assert!(!url.as_str().contains("SECRET"));
        // Same inputs, same URL: the clock is the only source of time.
        let again = s3
            .presign_part(
                "sources/u1",
                "up-1",
                7,
                1_700_000_000_000,
                Duration::from_secs(600),
            )
            .unwrap();
        assert_eq!(url, again);
        let other = s3
            .presign_part(
                "sources/u1",
                "up-1",
                8,
                1_700_000_000_000,
                Duration::from_secs(600),
            )
            .unwrap();
        assert_ne!(url.query_pairs().last(), other.query_pairs().last());
        assert!(s3
            .presign_part("k", "u", 0, 0, Duration::from_secs(1))
            .is_err());
        assert!(s3
            .presign_part("k", "u", 10_001, 0, Duration::from_secs(1))
            .is_err());
    }

    #[test]
    fn virtual_hosted_style_puts_the_bucket_in_the_host() {
        let mut s = settings(false);
        s.endpoint = "https://s3.example.com".parse().unwrap();
        let s3 = S3Multipart::new(&s).unwrap();
        let url = s3
            .presign_part("k", "u", 1, 1_700_000_000_000, Duration::from_secs(60))
            .unwrap();
        assert_eq!(url.host_str(), Some("media.s3.example.com"));
        assert_eq!(s3.name(), "s3://media at https://s3.example.com/");
    }

    #[test]
    fn error_codes_are_read_from_s3_error_documents() {
        let doc =
            "<?xml version=\"1.0\"?><Error><Code>NoSuchUpload</Code><Message>x</Message></Error>";
        assert_eq!(error_code(doc).as_deref(), Some("NoSuchUpload"));
        assert_eq!(error_code("<html>"), None);
    }
}
