//! ACL request signing with an AccessKey/SecretKey pair (rocketmq-remoting.md section 9.1).
//!
//! Invariants:
//! - Only ext-field values (sorted by key, `Signature` excluded) and the body are signed; code,
//!   opaque, flag, version, language and remark are not, so a re-send with a new opaque keeps a
//!   valid signature, but any change to ext fields or body needs a new [`AclCredentials::sign`].
//! - The secret key and security token never appear in `Debug` output.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::command::RemotingCommand;

/// Ext field carrying the access key.
pub const ACCESS_KEY_FIELD: &str = "AccessKey";
/// Ext field carrying the optional security token.
pub const SECURITY_TOKEN_FIELD: &str = "SecurityToken";
/// Ext field carrying the signature.
pub const SIGNATURE_FIELD: &str = "Signature";

/// Credentials for brokers and name servers with ACL enabled.
#[derive(Clone, PartialEq, Eq)]
pub struct AclCredentials {
    /// The access key (a user name with 5.x ACL 2.0); sent in clear.
    pub access_key: String,
    /// The secret key (a password with ACL 2.0); only used as the HMAC key, never sent.
    pub secret_key: String,
    /// An optional session token; sent in clear as `SecurityToken` and signed.
    pub security_token: Option<String>,
}

impl fmt::Debug for AclCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclCredentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl AclCredentials {
    /// Credentials without a security token.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            security_token: None,
        }
    }

    /// Adds `AccessKey` (and `SecurityToken`) to `cmd`'s ext fields and sets `Signature` over
    /// the result and the body. Call it last, just before the command is written.
    pub fn sign(&self, cmd: &mut RemotingCommand) {
        cmd.ext_fields.insert(ACCESS_KEY_FIELD, &self.access_key);
        if let Some(token) = &self.security_token {
            cmd.ext_fields.insert(SECURITY_TOKEN_FIELD, token);
        }
        let signature = self.signature(cmd);
        cmd.ext_fields.insert(SIGNATURE_FIELD, signature);
    }

    /// The Base64 HMAC-SHA1 signature of `cmd` as it stands.
    fn signature(&self, cmd: &RemotingCommand) -> String {
        let mut fields: Vec<(&str, &str)> = cmd
            .ext_fields
            .iter()
            .filter(|(key, _)| *key != SIGNATURE_FIELD)
            .collect();
        // Java signs in `TreeMap` order, which compares UTF-16 code units; that differs from
        // byte order only for keys mixing supplementary and high-BMP characters, but costs
        // nothing to match exactly.
        fields.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
        // HMAC accepts keys of any length, so construction cannot fail.
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(self.secret_key.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for (_, value) in fields {
            mac.update(value.as_bytes());
        }
        mac.update(&cmd.body);
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::command::ExtFields;
    use crate::remoting::RequestCode;
    use bytes::Bytes;

    fn query_offset() -> RemotingCommand {
        RemotingCommand::request(
            RequestCode::QueryConsumerOffset,
            ExtFields::new()
                .with("consumerGroup", "G1")
                .with("topic", "T1")
                .with("queueId", 0),
            Bytes::new(),
        )
    }

    #[test]
    fn golden_a4_signature() {
        let mut cmd = query_offset();
        AclCredentials::new("ak", "sk").sign(&mut cmd);
        assert_eq!(cmd.ext_fields.get("AccessKey"), Some("ak"));
        assert_eq!(
            cmd.ext_fields.get("Signature"),
            Some("ep8b88+ekf0hlANAZN0XoJAhBWg=")
        );
        assert_eq!(cmd.ext_fields.len(), 5);
    }

    #[test]
    fn resigning_ignores_the_old_signature() {
        let credentials = AclCredentials::new("ak", "sk");
        let mut cmd = query_offset();
        credentials.sign(&mut cmd);
        credentials.sign(&mut cmd);
        assert_eq!(
            cmd.ext_fields.get("Signature"),
            Some("ep8b88+ekf0hlANAZN0XoJAhBWg=")
        );
    }

    #[test]
    fn body_and_token_are_signed() {
        let mut plain = query_offset();
        AclCredentials::new("ak", "sk").sign(&mut plain);
        let mut with_body = query_offset().with_body(Bytes::from_static(b"{}"));
        AclCredentials::new("ak", "sk").sign(&mut with_body);
        assert_ne!(
            plain.ext_fields.get("Signature"),
            with_body.ext_fields.get("Signature")
        );
        let mut with_token = query_offset();
        let credentials = AclCredentials {
            security_token: Some("tok".into()),
            ..AclCredentials::new("ak", "sk")
        };
        credentials.sign(&mut with_token);
        assert_eq!(with_token.ext_fields.get("SecurityToken"), Some("tok"));
        let signature = with_token.ext_fields.get("Signature").unwrap();
        assert_eq!(signature.len(), 28);
        assert_ne!(Some(signature), plain.ext_fields.get("Signature"));
    }

    #[test]
    fn debug_redacts_secrets() {
        let credentials = AclCredentials {
            security_token: Some("token-value".into()),
            ..AclCredentials::new("ak", "secret-value")
        };
        let debug = format!("{credentials:?}");
        assert!(debug.contains("ak"));
        assert!(!debug.contains("secret-value"));
        assert!(!debug.contains("token-value"));
    }
}
