//! Body compression (rocketmq-remoting.md section 6.6): zlib, zstd and LZ4 *frame* format.
//!
//! Decompression is bounded ([`MAX_DECOMPRESSED_LEN`]) so a small hostile body cannot make us
//! allocate gigabytes: zlib alone reaches ratios above 1000:1.

use std::io::{Read, Write};

use crate::remoting::RemotingError;

/// Upper bound on a decompressed body. Brokers cap stored messages at 4 MiB by default and Java
/// producers check the size *before* compressing, so real bodies are far below this.
pub const MAX_DECOMPRESSED_LEN: usize = 64 * 1024 * 1024;

/// The largest zstd window accepted, as a power of two: zstd's own default limit, which Java's
/// `ZstdInputStream` applies too. RocketMQ's Java producer compresses through `ZstdOutputStream`,
/// which does not record the content size, so its frames declare the window of their level for
/// content of unknown size: 2^27 at level 22 (`-Drocketmq.message.compressLevel=22`), however
/// small the body. A lower limit sent such messages to the DLQ. The decoder allocates the
/// declared window, but writes it in order, and reading stops past [`MAX_DECOMPRESSED_LEN`], so
/// a frame that declares more than it holds costs address space, not memory.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// A compression algorithm, as encoded in sysFlag bits 8-10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// zlib stream (RFC 1950), the Java default; type 0 (pre-4.9.4 producers) or 3.
    Zlib,
    /// Standard zstd frame; type 2.
    Zstd,
    /// LZ4 frame format (not a raw block); type 1.
    Lz4,
}

impl Compression {
    /// The algorithm named by the compression-type bits of `sys_flag`.
    ///
    /// # Errors
    /// [`RemotingError::Decompress`] for an unknown type (4..=7).
    pub fn from_sys_flag(sys_flag: i32) -> Result<Self, RemotingError> {
        match (sys_flag & super::sys_flag::COMPRESSION_TYPE_MASK) >> 8 {
            0 | 3 => Ok(Self::Zlib),
            1 => Ok(Self::Lz4),
            2 => Ok(Self::Zstd),
            other => Err(RemotingError::Decompress {
                algorithm: "unknown",
                reason: format!("compression type {other}"),
            }),
        }
    }

    /// The sysFlag bits (compressed flag plus type) announcing a body compressed with `self`.
    pub fn sys_flag_bits(self) -> i32 {
        let kind = match self {
            Self::Lz4 => 1,
            Self::Zstd => 2,
            Self::Zlib => 3,
        };
        super::sys_flag::COMPRESSED | (kind << 8)
    }

    /// Lower-case algorithm name, used in errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Zlib => "zlib",
            Self::Zstd => "zstd",
            Self::Lz4 => "lz4",
        }
    }
}

/// Decompresses `data`, refusing output longer than [`MAX_DECOMPRESSED_LEN`].
///
/// # Errors
/// [`RemotingError::Decompress`] if the data is corrupt or the output too large.
pub fn decompress(algorithm: Compression, data: &[u8]) -> Result<Vec<u8>, RemotingError> {
    decompress_within(algorithm, data, MAX_DECOMPRESSED_LEN)
}

/// How a [`decompress_within`] error that met its output limit begins.
const OUTPUT_LIMIT: &str = "output exceeds";

/// Whether `error` is [`decompress_within`] stopping at its output limit, not a fault of the
/// data seen so far.
pub fn hit_output_limit(error: &RemotingError) -> bool {
    matches!(error, RemotingError::Decompress { reason, .. } if reason.starts_with(OUTPUT_LIMIT))
}

/// [`decompress`], refusing output longer than `max_len`.
///
/// # Errors
/// [`RemotingError::Decompress`] if the data is corrupt or the output longer than `max_len`.
pub fn decompress_within(
    algorithm: Compression,
    data: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, RemotingError> {
    let fail = |reason: String| RemotingError::Decompress {
        algorithm: algorithm.name(),
        reason,
    };
    let reader: Box<dyn Read + '_> = match algorithm {
        Compression::Zlib => Box::new(flate2::read::ZlibDecoder::new(data)),
        Compression::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|e| fail(e.to_string()))?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| fail(e.to_string()))?;
            Box::new(decoder)
        }
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(data)),
    };
    let limit = max_len as u64 + 1;
    let mut out = Vec::new();
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| fail(e.to_string()))?;
    if out.len() > max_len {
        return Err(fail(format!("{OUTPUT_LIMIT} {max_len} bytes")));
    }
    // `read_to_end` grows by doubling, and the body keeps the whole allocation while the
    // message waits, where the cache budget counts its length: up to twice what was counted.
    if out.capacity() - out.len() > out.len() / 4 {
        out.shrink_to_fit();
    }
    Ok(out)
}

/// Compresses `data` (zlib at Java's default level 5, zstd at level 5, LZ4 frame).
///
/// # Errors
/// [`RemotingError::Encode`] if the compressor fails (it does not for in-memory output, but the
/// libraries' signatures allow it).
pub fn compress(algorithm: Compression, data: &[u8]) -> Result<Vec<u8>, RemotingError> {
    let fail = |e: std::io::Error| RemotingError::Encode {
        reason: format!("{} compression failed: {e}", algorithm.name()),
    };
    match algorithm {
        Compression::Zlib => {
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(5));
            enc.write_all(data).map_err(fail)?;
            enc.finish().map_err(fail)
        }
        Compression::Zstd => zstd::stream::encode_all(data, 5).map_err(fail),
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(data).map_err(fail)?;
            enc.finish()
                .map_err(|e| fail(std::io::Error::other(e.to_string())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Compression; 3] = [Compression::Zlib, Compression::Zstd, Compression::Lz4];

    #[test]
    fn type_bits() {
        assert_eq!(
            Compression::from_sys_flag(0x1).ok(),
            Some(Compression::Zlib)
        );
        assert_eq!(
            Compression::from_sys_flag(0x301).ok(),
            Some(Compression::Zlib)
        );
        assert_eq!(
            Compression::from_sys_flag(0x101).ok(),
            Some(Compression::Lz4)
        );
        assert_eq!(
            Compression::from_sys_flag(0x201).ok(),
            Some(Compression::Zstd)
        );
        assert!(Compression::from_sys_flag(0x401).is_err());
        for c in ALL {
            assert_eq!(Compression::from_sys_flag(c.sys_flag_bits()).ok(), Some(c));
        }
    }

    #[test]
    fn zlib_header_is_a_zlib_stream() {
        // Java's InflaterInputStream needs the RFC 1950 header (0x78 ..), not raw deflate.
        let out = compress(Compression::Zlib, b"hello").unwrap();
        assert_eq!(out.first(), Some(&0x78));
        // LZ4 frame magic 0x184D2204, little endian.
        let out = compress(Compression::Lz4, b"hello").unwrap();
        assert_eq!(out.get(..4), Some(&[0x04, 0x22, 0x4d, 0x18][..]));
    }

    #[test]
    fn corrupt_input_is_an_error() {
        for c in ALL {
            assert!(
                decompress(c, b"definitely not compressed").is_err(),
                "{c:?}"
            );
        }
    }

    /// A zstd frame without a content size declaring a `2^window_log`-byte window, holding
    /// `hello` in one raw block (RFC 8878 section 3.1.1).
    fn zstd_frame_with_window(window_log: u32) -> Vec<u8> {
        // Magic number, little endian; frame header descriptor 0: no content size, not single
        // segment (so the window descriptor follows), no checksum, no dictionary.
        let mut frame = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00];
        // Window descriptor: exponent `window_log - 10`, mantissa 0.
        frame.push(u8::try_from((window_log - 10) << 3).unwrap());
        // Block header: last block, raw, 5 bytes ((5 << 3) | 1, 24 bits little endian).
        frame.extend_from_slice(&[0x29, 0x00, 0x00]);
        frame.extend_from_slice(b"hello");
        frame
    }

    #[test]
    fn zstd_accepts_the_window_of_java_level_22_and_no_larger() {
        assert_eq!(
            decompress(
                Compression::Zstd,
                &zstd_frame_with_window(ZSTD_WINDOW_LOG_MAX)
            )
            .unwrap(),
            b"hello"
        );
        match decompress(
            Compression::Zstd,
            &zstd_frame_with_window(ZSTD_WINDOW_LOG_MAX + 1),
        ) {
            Err(RemotingError::Decompress {
                algorithm: "zstd", ..
            }) => {}
            other => panic!("a 2^28-byte window was accepted: {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn round_trip(data in prop::collection::vec(any::<u8>(), 0..2048), which in 0usize..3) {
            let c = ALL[which];
            let packed = compress(c, &data).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decompress(c, &packed).map_err(|e| TestCaseError::fail(e.to_string()))?, data);
        }

        #[test]
        fn decompress_never_panics(data in prop::collection::vec(any::<u8>(), 0..256), which in 0usize..3) {
            let _ = decompress(ALL[which], &data);
        }
    }
}
