//! The protocol layer's error type.

use super::code::ResponseCode;

/// Everything that can go wrong turning bytes into protocol values (or a response into a typed
/// result). Variants carry the offending values so the caller can log them without re-parsing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemotingError {
    /// The 4-byte length prefix announced a frame larger than the configured limit.
    #[error("frame of {actual} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Configured maximum frame length.
        limit: usize,
        /// Length announced by the peer.
        actual: usize,
    },
    /// The length prefix was negative or too small to hold the header-length field.
    #[error("invalid frame length {value}")]
    InvalidFrameLength {
        /// The raw length prefix.
        value: i32,
    },
    /// The header length does not fit in the frame.
    #[error("header length {header_len} exceeds frame length {frame_len}")]
    HeaderTooLong {
        /// Announced header length.
        header_len: usize,
        /// Bytes available after the header-length field.
        frame_len: usize,
    },
    /// The serialize-type byte is neither JSON (0) nor ROCKETMQ (1).
    #[error("unknown header serialize type {0}")]
    UnknownSerializeType(u8),
    /// The header bytes could not be parsed.
    #[error("malformed {encoding} header: {}", Excerpt(reason))]
    MalformedHeader {
        /// `JSON` or `ROCKETMQ`.
        encoding: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A required ext field is missing from a command.
    #[error("missing header field `{field}`")]
    MissingField {
        /// Java field name.
        field: &'static str,
    },
    /// An ext field is present but its value does not parse.
    #[error("invalid value \"{}\" for header field `{field}`", Excerpt(value))]
    InvalidField {
        /// Java field name.
        field: &'static str,
        /// The raw value.
        value: String,
    },
    /// A JSON (or fastjson-style) body did not parse.
    #[error("malformed {what} body: {}", Excerpt(reason))]
    MalformedBody {
        /// Which body, e.g. `route data`.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A JSON body holds more values than any real one of its kind; it is refused before it is
    /// built, since every value costs memory whatever the body's length.
    #[error("{what} body holds more than {limit} JSON values")]
    BodyTooLarge {
        /// Which body, e.g. `offset table`.
        what: &'static str,
        /// The most values a body may hold.
        limit: usize,
    },
    /// A message record in a pull or consume-directly body is malformed.
    #[error("malformed message record at byte {at}: {}", Excerpt(reason))]
    MalformedMessage {
        /// Byte offset of the record within the body.
        at: usize,
        /// What was wrong.
        reason: String,
    },
    /// A message body could not be decompressed.
    #[error("cannot decompress message body ({algorithm}): {reason}")]
    Decompress {
        /// `zlib`, `zstd` or `lz4`.
        algorithm: &'static str,
        /// What the decompressor said.
        reason: String,
    },
    /// A message cannot be encoded for sending (too large properties, empty batch, ...).
    #[error("cannot encode message: {reason}")]
    Encode {
        /// What was wrong.
        reason: String,
    },
    /// The peer answered with a response code this call does not map to a value.
    #[error("peer answered {code}: {}", Excerpt(remark.as_deref().unwrap_or("")))]
    Status {
        /// The response code.
        code: ResponseCode,
        /// The peer's remark, if any.
        remark: Option<String>,
    },
}

/// Text from a peer in an error message or log line, cut after [`Excerpt::MAX_CHARS`]
/// characters: the peer decides how long it is (a remark carrying a stack trace, a 16 MiB
/// header field), and a log line should not carry megabytes of it. Control characters are
/// shown escaped (`\n`), so a stack trace's lines do not split a plain-text log line.
#[derive(Debug, Clone, Copy)]
pub struct Excerpt<'a>(pub &'a str);

impl<'a> Excerpt<'a> {
    /// Characters shown before the cut.
    pub const MAX_CHARS: usize = 256;

    /// The part shown: all of it, or its first [`Self::MAX_CHARS`] characters.
    pub fn head(self) -> &'a str {
        match self.0.char_indices().nth(Self::MAX_CHARS) {
            Some((at, _)) => &self.0[..at],
            None => self.0,
        }
    }

    /// What follows the shown part when it was cut: `... (N bytes in all)`.
    pub fn write_tail(self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.head().len() < self.0.len() {
            write!(f, "... ({} bytes in all)", self.0.len())?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.head().chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                std::fmt::Write::write_char(f, c)?;
            }
        }
        self.write_tail(f)
    }
}

impl RemotingError {
    /// Whether retrying the same call later may succeed. Malformed input never does; a status
    /// answer depends on its code.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Status { code, .. } => code.is_retriable(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_is_cut_after_its_first_characters() {
        assert_eq!(Excerpt("short remark").to_string(), "short remark");
        let exact = "x".repeat(Excerpt::MAX_CHARS);
        assert_eq!(Excerpt(&exact).to_string(), exact);
        // Multi-byte characters: the cut falls between characters, never inside one.
        let long = "é".repeat(Excerpt::MAX_CHARS + 1);
        let shown = Excerpt(&long).to_string();
        assert_eq!(
            shown,
            format!(
                "{}... ({} bytes in all)",
                "é".repeat(Excerpt::MAX_CHARS),
                long.len()
            )
        );
        let status = RemotingError::Status {
            code: ResponseCode::SystemError,
            remark: Some("at java.lang.Thread.run\n".repeat(100_000)),
        };
        assert!(
            status.to_string().len() < 400,
            "{}",
            status.to_string().len()
        );
        assert!(
            !status.to_string().contains('\n'),
            "a stack trace's lines stay on one log line"
        );
        assert_eq!(Excerpt("a\nb\t\u{7f}").to_string(), "a\\nb\\t\\u{7f}");
        let field = RemotingError::InvalidField {
            field: "queueOffset",
            value: "9".repeat(1 << 20),
        };
        assert!(field.to_string().len() < 400, "{}", field.to_string().len());
        let body = RemotingError::MalformedBody {
            what: "route data",
            reason: format!("invalid type: string \"{}\"", "z".repeat(1 << 20)),
        };
        assert!(body.to_string().len() < 400, "{}", body.to_string().len());
    }
}
