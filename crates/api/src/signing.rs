//! HMAC-signed, expiring part URLs: the embedded server's equivalent of S3 presigned URLs.
//!
//! A URL authorises exactly one (upload, part number) until its expiry; changing any of the
//! three, or the signature, makes it invalid. Verification is constant-time.

use hmac::{Hmac, Mac};
use oxcast_base::UploadId;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the part URL has expired; ask GET /api/v1/uploads/{{id}} for a fresh one")]
    Expired,
    #[error("the part URL's signature is not valid")]
    Invalid,
}

impl Signer {
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into() }
    }

    fn mac(&self, upload: UploadId, part: u32, expires: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("oxcast-part:{upload}:{part}:{expires}").as_bytes());
        mac
    }

    pub fn sign(&self, upload: UploadId, part: u32, expires: i64) -> String {
        hex::encode(self.mac(upload, part, expires).finalize().into_bytes())
    }

    /// The path and query a client PUTs part `part` to; `expires` is in epoch seconds.
    pub fn part_url(&self, upload: UploadId, part: u32, expires: i64) -> String {
        format!(
            "/upload/{upload}/{part}?expires={expires}&sig={}",
            self.sign(upload, part, expires)
        )
    }

    pub fn verify(
        &self,
        upload: UploadId,
        part: u32,
        expires: i64,
        sig: &str,
        now_s: i64,
    ) -> Result<(), SignatureError> {
        let sig = hex::decode(sig).map_err(|_| SignatureError::Invalid)?;
        self.mac(upload, part, expires)
            .verify_slice(&sig)
            .map_err(|_| SignatureError::Invalid)?;
        if now_s > expires {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_binds_upload_part_and_expiry() {
        let s = Signer::new(b"k".to_vec());
        let u = UploadId::new();
        let sig = s.sign(u, 3, 1000);
        assert_eq!(s.verify(u, 3, 1000, &sig, 999), Ok(()));
        assert_eq!(
            s.verify(u, 3, 1000, &sig, 1001),
            Err(SignatureError::Expired)
        );
        assert_eq!(s.verify(u, 4, 1000, &sig, 0), Err(SignatureError::Invalid));
        assert_eq!(s.verify(u, 3, 2000, &sig, 0), Err(SignatureError::Invalid));
        assert_eq!(
            s.verify(UploadId::new(), 3, 1000, &sig, 0),
            Err(SignatureError::Invalid)
        );
        assert_eq!(s.verify(u, 3, 1000, "zz", 0), Err(SignatureError::Invalid));
        let other = Signer::new(b"other".to_vec());
        assert_eq!(
            other.verify(u, 3, 1000, &sig, 0),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn url_shape() {
        let s = Signer::new(b"k".to_vec());
        let u: UploadId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let url = s.part_url(u, 2, 77);
        assert!(url.starts_with("/upload/0123456789abcdef0123456789abcdef/2?expires=77&sig="));
        assert_eq!(
            url.len(),
            "/upload/0123456789abcdef0123456789abcdef/2?expires=77&sig=".len() + 64
        );
    }
}
