//! Length-prefixed framing (rocketmq-remoting.md section 1.2).
//!
//! A frame on the wire is `total_len: i32` followed by `total_len` bytes of *content*:
//! `header_len_and_type: i32`, the header, then the body. [`FrameDecoder`] splits a byte stream
//! into frame contents; [`crate::remoting::command::RemotingCommand::decode`] parses one content.
//!
//! Invariants:
//! - A length prefix is validated (non-negative, at least 4, at most `max_frame_len`) *before* any
//!   buffer space is reserved for the frame, so a hostile peer cannot make us allocate 2 GiB.
//! - Once 8 bytes are buffered, the header length is checked against the frame length, so a
//!   frame whose header cannot fit is rejected without waiting for its body.
//! - After an error the stream is out of sync; the caller must drop the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::command::SerializeType;
use super::error::RemotingError;

/// The largest frame the Java peers accept by default (`com.rocketmq.remoting.frameMaxLength`):
/// the value of the 4-byte length field, i.e. the content after the prefix.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Bytes taken by the `total_len` prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Bytes taken by the `header_len_and_type` word at the start of every frame content.
pub const HEADER_WORD_LEN: usize = 4;

/// The largest header the 24-bit header-length field can describe.
pub const MAX_HEADER_LEN: usize = 0x00FF_FFFF;

/// Splits a byte stream into frame contents (everything after the 4-byte length prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    /// Largest accepted value of the length prefix.
    pub max_frame_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

impl FrameDecoder {
    /// A decoder accepting frames whose length prefix is at most `max_frame_len`.
    pub fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len }
    }

    /// Takes one complete frame off the front of `buf` and returns its content (the
    /// `header_len_and_type` word, the header and the body), or `None` if more bytes are needed.
    ///
    /// # Errors
    /// [`RemotingError::InvalidFrameLength`] for a negative or too-small prefix,
    /// [`RemotingError::FrameTooLarge`] above `max_frame_len`, and
    /// [`RemotingError::HeaderTooLong`] when the announced header does not fit the frame. The
    /// stream cannot be resynchronised after any of them.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, RemotingError> {
        if buf.len() < LENGTH_PREFIX_LEN {
            return Ok(None);
        }
        let raw = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let frame_len = usize::try_from(raw)
            .ok()
            .filter(|len| *len >= HEADER_WORD_LEN)
            .ok_or(RemotingError::InvalidFrameLength { value: raw })?;
        if frame_len > self.max_frame_len {
            return Err(RemotingError::FrameTooLarge {
                limit: self.max_frame_len,
                actual: frame_len,
            });
        }
        if buf.len() >= LENGTH_PREFIX_LEN + HEADER_WORD_LEN {
            let word = [buf[4], buf[5], buf[6], buf[7]];
            let header_len = header_len_of(u32::from_be_bytes(word));
            check_header_fits(header_len, frame_len)?;
        }
        let needed = LENGTH_PREFIX_LEN + frame_len;
        if buf.len() < needed {
            // Safe to reserve now: `frame_len` is bounded by `max_frame_len`.
            buf.reserve(needed - buf.len());
            return Ok(None);
        }
        buf.advance(LENGTH_PREFIX_LEN);
        Ok(Some(buf.split_to(frame_len).freeze()))
    }
}

/// The header length encoded in the low 24 bits of a `header_len_and_type` word.
pub(crate) fn header_len_of(word: u32) -> usize {
    (word & 0x00FF_FFFF) as usize
}

/// Checks that a header of `header_len` bytes fits a frame content of `frame_len` bytes.
pub(crate) fn check_header_fits(header_len: usize, frame_len: usize) -> Result<(), RemotingError> {
    let available = frame_len.saturating_sub(HEADER_WORD_LEN);
    if header_len > available {
        return Err(RemotingError::HeaderTooLong {
            header_len,
            frame_len: available,
        });
    }
    Ok(())
}

/// Appends one whole frame (length prefix, header word, header, body) to `out`.
///
/// # Errors
/// [`RemotingError::Encode`] if the header exceeds the 24-bit length field or the frame exceeds
/// `i32::MAX` bytes; nothing is written then.
pub fn encode_frame(
    serialize_type: SerializeType,
    header: &[u8],
    body: &[u8],
    out: &mut BytesMut,
) -> Result<(), RemotingError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(RemotingError::Encode {
            reason: format!(
                "header of {} bytes exceeds the {MAX_HEADER_LEN}-byte limit",
                header.len()
            ),
        });
    }
    let total = HEADER_WORD_LEN + header.len() + body.len();
    let total_i32 = i32::try_from(total).map_err(|_| RemotingError::Encode {
        reason: format!("frame of {total} bytes exceeds the i32 length field"),
    })?;
    // The cast cannot truncate: the length was checked against the 24-bit limit above.
    let word = (u32::from(serialize_type.code()) << 24) | header.len() as u32;
    out.reserve(LENGTH_PREFIX_LEN + total);
    out.put_i32(total_i32);
    out.put_u32(word);
    out.put_slice(header);
    out.put_slice(body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(len: i32, rest: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_i32(len);
        buf.put_slice(rest);
        buf
    }

    #[test]
    fn needs_the_whole_frame() {
        let mut decoder = FrameDecoder::default();
        let mut buf = BytesMut::from(&[0u8, 0, 0][..]);
        assert!(decoder.decode(&mut buf).unwrap().is_none());
        let mut buf = frame_bytes(8, &[0, 0, 0, 1, b'x']);
        assert!(decoder.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 9, "an incomplete frame stays buffered");
        buf.put_slice(&[b'a', b'b', b'c', 9]);
        let content = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&content[..], &[0, 0, 0, 1, b'x', b'a', b'b', b'c']);
        assert_eq!(&buf[..], &[9], "bytes of the next frame are left in place");
    }

    #[test]
    fn rejects_negative_and_too_small_lengths() {
        let mut decoder = FrameDecoder::default();
        for value in [-1, i32::MIN, 0, 3] {
            let mut buf = frame_bytes(value, &[]);
            assert!(matches!(
                decoder.decode(&mut buf),
                Err(RemotingError::InvalidFrameLength { value: v }) if v == value
            ));
        }
    }

    #[test]
    fn rejects_oversized_frames_before_reserving() {
        let mut decoder = FrameDecoder::new(1024);
        let mut buf = frame_bytes(1025, &[]);
        let capacity = buf.capacity();
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(RemotingError::FrameTooLarge {
                limit: 1024,
                actual: 1025
            })
        ));
        assert_eq!(buf.capacity(), capacity);
        let mut default = FrameDecoder::default();
        let mut buf = frame_bytes(i32::MAX, &[]);
        assert!(matches!(
            default.decode(&mut buf),
            Err(RemotingError::FrameTooLarge {
                limit: DEFAULT_MAX_FRAME_LEN,
                ..
            })
        ));
    }

    #[test]
    fn rejects_header_longer_than_frame_early() {
        let mut decoder = FrameDecoder::default();
        // Frame of 10 bytes: header word announces 7 header bytes, only 6 fit.
        let mut buf = frame_bytes(10, &[0, 0, 0, 7]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(RemotingError::HeaderTooLong {
                header_len: 7,
                frame_len: 6
            })
        ));
        // Exactly fitting is fine.
        let mut buf = frame_bytes(10, &[1, 0, 0, 6, 1, 2, 3, 4, 5, 6]);
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().len(), 10);
    }

    #[test]
    fn encodes_prefix_and_type_word() {
        let mut out = BytesMut::new();
        encode_frame(SerializeType::RocketMq, b"hdr", b"body", &mut out).unwrap();
        assert_eq!(&out[..8], &[0, 0, 0, 11, 1, 0, 0, 3]);
        assert_eq!(&out[8..], b"hdrbody");
        let mut decoder = FrameDecoder::default();
        let content = decoder.decode(&mut out).unwrap().unwrap();
        assert_eq!(&content[4..], b"hdrbody");
        assert!(out.is_empty());
    }

    #[test]
    fn refuses_oversized_header() {
        let mut out = BytesMut::new();
        let header = vec![b'x'; MAX_HEADER_LEN + 1];
        assert!(matches!(
            encode_frame(SerializeType::Json, &header, b"", &mut out),
            Err(RemotingError::Encode { .. })
        ));
        assert!(out.is_empty());
    }
}
