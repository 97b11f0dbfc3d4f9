//! Request authentication: Standard Webhooks signing and bearer tokens.
//!
//! Standard Webhooks (<https://www.standardwebhooks.com>): the sender adds `webhook-id`,
//! `webhook-timestamp` (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256>` computed
//! over `"{id}.{timestamp}.{body}"`. The receiver checks the signature and rejects stale
//! timestamps; the id is an idempotency key, identical when the same delivery is sent again.
//!
//! Invariants: secrets never appear in `Debug` output (every secret type redacts itself), and
//! header values built from them are marked sensitive so HTTP-level logging hides them too. This
//! module is pure: the caller passes the timestamp.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use sha2::{Digest, Sha256};

/// Header carrying the delivery id.
pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
/// Header carrying the signing time in Unix seconds.
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// Header carrying `v1,<signature>`.
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The prefix Standard Webhooks puts before a base64-encoded secret.
const SECRET_PREFIX: &str = "whsec_";

/// Why a secret or token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignError {
    /// A secret that is not base64 after its optional `whsec_` prefix. The secret itself is
    /// not included.
    #[error("signing secret must be `whsec_` followed by base64 (Standard Webhooks)")]
    SecretNotBase64,
    /// An empty secret would sign with a publicly known key.
    #[error("signing secret is empty")]
    EmptySecret,
    /// A bearer token that cannot be sent in an HTTP header (control characters, non-ASCII).
    #[error("bearer token contains characters not allowed in an HTTP header")]
    InvalidToken,
}

/// The key bytes of a configured secret: `whsec_<base64>`, the prefix optional, as the Standard
/// Webhooks reference libraries read it (they strip the prefix if present and always decode).
/// A secret pasted without its prefix is the same key, not its text.
///
/// # Errors
/// [`SignError::SecretNotBase64`] when the rest is not base64, [`SignError::EmptySecret`] when
/// no key bytes remain.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SignError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = BASE64
        .decode(encoded.trim())
        .map_err(|_| SignError::SecretNotBase64)?;
    if key.is_empty() {
        return Err(SignError::EmptySecret);
    }
    Ok(key)
}

/// The HMAC key of Standard Webhooks signing, decoded once.
#[derive(Clone)]
pub struct SigningSecret {
    /// The keyed HMAC state; cloning it per request avoids re-deriving the key block.
    mac: Hmac<Sha256>,
}

impl SigningSecret {
    /// Parses a secret as configured (see [`decode_secret`]). For a raw key, use
    /// [`Self::from_bytes`].
    ///
    /// # Errors
    /// As [`decode_secret`].
    pub fn parse(secret: &str) -> Result<Self, SignError> {
        Self::from_bytes(&decode_secret(secret)?)
    }

    /// Uses `key` as the raw HMAC key.
    ///
    /// # Errors
    /// [`SignError::EmptySecret`] when `key` is empty.
    pub fn from_bytes(key: &[u8]) -> Result<Self, SignError> {
        if key.is_empty() {
            return Err(SignError::EmptySecret);
        }
        // HMAC accepts keys of any length, so this only fails for an empty-key policy we
        // enforce above; map it anyway rather than panic.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| SignError::EmptySecret)?;
        Ok(Self { mac })
    }

    /// The `webhook-signature` value for one request: `v1,<base64(HMAC-SHA256(key,
    /// "{id}.{timestamp}.{body}"))>`.
    pub fn signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }

    /// Adds the three Standard Webhooks headers to `headers`.
    pub fn sign(&self, headers: &mut HeaderMap, id: &str, timestamp: u64, body: &[u8]) {
        // `id` comes from message ids (hex, but any text a producer put in UNIQ_KEY) or our own
        // batch ids. One that is not plain visible ASCII is replaced by its hash: a control
        // character cannot go into a header, and receivers trim surrounding spaces. So is one
        // longer than `MAX_PLAIN_ID`: it would push the request past the header size servers
        // accept. The signature covers the id as sent, or no verifier could check it.
        let plain =
            (1..=MAX_PLAIN_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic());
        let id_value = if plain {
            HeaderValue::from_str(id).unwrap_or_else(|_| hashed_header(id))
        } else {
            hashed_header(id)
        };
        let signature = self.signature(id_value.to_str().unwrap_or_default(), timestamp, body);
        let mut signature_value =
            HeaderValue::from_str(&signature).unwrap_or_else(|_| HeaderValue::from_static("v1,"));
        signature_value.set_sensitive(true);
        headers.insert(WEBHOOK_ID, id_value);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        headers.insert(WEBHOOK_SIGNATURE, signature_value);
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// A bearer token sent as `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct BearerToken {
    /// The complete, sensitive-marked header value.
    value: HeaderValue,
}

impl BearerToken {
    /// Wraps `token`.
    ///
    /// # Errors
    /// [`SignError::InvalidToken`] when the token cannot be an HTTP header value.
    pub fn new(token: &str) -> Result<Self, SignError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| SignError::InvalidToken)?;
        value.set_sensitive(true);
        Ok(Self { value })
    }

    /// Sets the `Authorization` header.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(AUTHORIZATION, self.value.clone());
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// The longest `webhook-id` sent as it is; 32 characters is the usual msgId.
const MAX_PLAIN_ID: usize = 256;

/// The `webhook-id` of a request.
///
/// One message: its msgId, so a redelivery of the same message carries the same id. Several:
/// `batch_` and a hash of all msgIds in order, so the same batch sent again has the same id while
/// different batches (even ones starting with the same message) do not collide.
pub fn delivery_id<'a>(msg_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut ids = msg_ids.into_iter();
    let Some(first) = ids.next() else {
        return "batch_empty".to_owned();
    };
    let Some(second) = ids.next() else {
        return first.to_owned();
    };
    let mut hasher = Sha256::new();
    for id in [first, second].into_iter().chain(ids) {
        hasher.update(id.as_bytes());
        hasher.update(b"\n");
    }
    let digest = hasher.finalize();
    format!("batch_{}", hex::encode(&digest[..16]))
}

/// A short stand-in for an id that cannot go into a header as it is: its truncated SHA-256 in
/// hex (32 characters). The same id always gives the same digest, so a redelivery carries the
/// same stand-in.
pub(crate) fn id_digest(id: &str) -> String {
    hex::encode(&Sha256::digest(id.as_bytes())[..16])
}

/// A header value derived from a string that is not one: [`id_digest`].
fn hashed_header(s: &str) -> HeaderValue {
    HeaderValue::from_str(&id_digest(s)).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_vector() {
        // Expected value computed independently with Python's hmac module.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.signature(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        // The same key pasted without its prefix signs the same.
        let bare = SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            bare.signature(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#,
            ),
            sig
        );
    }

    #[test]
    fn raw_secret_vector_and_headers() {
        // Expected value computed independently with Python's hmac module.
        let secret = SigningSecret::from_bytes(b"raw-secret").unwrap();
        let mut headers = HeaderMap::new();
        secret.sign(&mut headers, "7F000001ABCD", 1_700_000_000, b"hello");
        assert_eq!(headers[WEBHOOK_ID], "7F000001ABCD");
        assert_eq!(headers[WEBHOOK_TIMESTAMP], "1700000000");
        assert_eq!(
            headers[WEBHOOK_SIGNATURE],
            "v1,03D7ze7hKuUqLZgyVjxHdQZrvYH3hH+3z9U6ST80AKI="
        );
        assert!(headers[WEBHOOK_SIGNATURE].is_sensitive());
    }

    #[test]
    fn an_id_that_cannot_be_a_header_or_is_too_long_is_hashed_and_signed_as_sent() {
        let secret = SigningSecret::from_bytes(b"raw-secret").unwrap();
        let huge = "u".repeat(MAX_PLAIN_ID + 1);
        for id in ["bad\nid", " padded ", "tab\tid", "", "caf\u{e9}", &huge] {
            let mut headers = HeaderMap::new();
            secret.sign(&mut headers, id, 1_700_000_000, b"hello");
            let sent = headers[WEBHOOK_ID].to_str().unwrap();
            assert_eq!(sent.len(), 32, "{id:?} -> {sent:?}");
            assert!(sent.bytes().all(|b| b.is_ascii_hexdigit()), "{sent:?}");
            // What a verifier computes from the headers it received.
            assert_eq!(
                headers[WEBHOOK_SIGNATURE],
                secret.signature(sent, 1_700_000_000, b"hello").as_str(),
                "{id:?}"
            );
        }
        // The longest id still sent as it is.
        let longest = "u".repeat(MAX_PLAIN_ID);
        let mut headers = HeaderMap::new();
        secret.sign(&mut headers, &longest, 1_700_000_000, b"hello");
        assert_eq!(headers[WEBHOOK_ID], longest.as_str());
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert_eq!(
            SigningSecret::parse("whsec_!!!").unwrap_err(),
            SignError::SecretNotBase64
        );
        // Without the prefix a secret is still base64, as the reference libraries read it.
        assert_eq!(
            SigningSecret::parse("raw-secret").unwrap_err(),
            SignError::SecretNotBase64
        );
        assert_eq!(
            SigningSecret::parse("").unwrap_err(),
            SignError::EmptySecret
        );
        assert_eq!(
            SigningSecret::parse("whsec_").unwrap_err(),
            SignError::EmptySecret
        );
        assert_eq!(
            BearerToken::new("a\nb").unwrap_err(),
            SignError::InvalidToken
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let token = BearerToken::new("s3cr3t-token").unwrap();
        let shown = format!("{secret:?} {token:?}");
        assert!(!shown.contains("MfKQ9r8G"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let mut headers = HeaderMap::new();
        token.apply(&mut headers);
        assert_eq!(headers[AUTHORIZATION], "Bearer s3cr3t-token");
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert!(!format!("{headers:?}").contains("s3cr3t"));
    }

    #[test]
    fn delivery_ids() {
        assert_eq!(delivery_id(["A"]), "A");
        let ab = delivery_id(["A", "B"]);
        // Expected value computed with Python: sha256(b"A\nB\n")[:16].
        assert_eq!(ab, "batch_daee1cd25194ae952d046ad9b9c81d3c");
        assert_eq!(ab, delivery_id(["A", "B"]));
        assert_ne!(ab, delivery_id(["A", "B", "C"]));
        assert_ne!(ab, delivery_id(["B", "A"]));
        assert_eq!(delivery_id(std::iter::empty()), "batch_empty");
    }
}
