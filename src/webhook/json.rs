//! A small JSON text writer for the delivery envelope: strings, integers and socket addresses
//! appended to a byte buffer.
//!
//! Why not serde: with batched delivery most of the encoding time went into escaping message
//! bodies byte by byte, plus formatting through `core::fmt`. Bodies are mostly plain text, so
//! [`string`] copies clean runs whole and checks 64 bytes at a time for the few bytes JSON
//! must escape (`"`, `\` and control characters below 0x20).
//!
//! Invariant: the output is exactly what `serde_json` writes for the same value (tested), so
//! consumers see the same bytes either way.

use std::net::SocketAddr;

/// Bytes checked per step of the clean-run scan: four SSE2 registers' worth, so the compiler turns
/// the per-byte test in [`dirty`] into a few vector compares per chunk. In bench/harness's
/// encode-cost, 16 and 32 bytes cost about 450 more instructions per 1 KiB message than 64.
const CHUNK: usize = 64;

/// Whether `b` must be escaped in a JSON string: `"`, `\` or a control character below 0x20.
/// Written out rather than as `escape(b).is_some()`, which the compiler does not vectorise
/// (about 700 more instructions per message in encode-cost); a test keeps the two in step.
const fn must_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Appends `s` as a quoted JSON string.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut clean_from = 0;
    let mut i = 0;
    while i < bytes.len() {
        i += clean_chunks(&bytes[i..]);
        // The next chunk (or the tail) may hold a byte to escape: look at each, unless one
        // branch-free pass says the tail is clean (most keys, ids and values are shorter than
        // a chunk).
        let end = (i + CHUNK).min(bytes.len());
        if !dirty(&bytes[i..end]) {
            i = end;
            continue;
        }
        // Byte by byte through this chunk into a buffer on the stack: text such as JSON has an
        // escape every few bytes, where growing `out` per run or per byte cost twice as much.
        out.extend_from_slice(&bytes[clean_from..i]);
        let mut buf = [0_u8; CHUNK * 6];
        let mut n = 0;
        for &b in &bytes[i..end] {
            match escape(b) {
                None => {
                    buf[n] = b;
                    n += 1;
                }
                Some(Escape::Short(c)) => {
                    buf[n..n + 2].copy_from_slice(&[b'\\', c]);
                    n += 2;
                }
                Some(Escape::Unicode) => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    buf[n..n + 6].copy_from_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0x0f)],
                    ]);
                    n += 6;
                }
            }
        }
        out.extend_from_slice(&buf[..n]);
        i = end;
        clean_from = end;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

/// How many leading bytes of `bytes` are whole chunks with nothing to escape. The fold has no
/// early exit inside a chunk, which is what lets it vectorise: in bench/harness's encode-cost
/// (1 KiB plain-text bodies) a message took 11,776 instructions with an eight-byte word test
/// and 9,706 with this.
fn clean_chunks(bytes: &[u8]) -> usize {
    let mut clean = 0;
    for chunk in bytes.chunks_exact(CHUNK) {
        if dirty(chunk) {
            break;
        }
        clean += CHUNK;
    }
    clean
}

/// Whether any byte of `bytes` must be escaped, without an early exit.
fn dirty(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |dirty, &b| dirty | must_escape(b))
}

enum Escape {
    /// `\` followed by this character.
    Short(u8),
    /// `\u00XX`.
    Unicode,
}

/// How `b` is escaped in a JSON string, if at all (the forms `serde_json` uses).
const fn escape(b: u8) -> Option<Escape> {
    Some(match b {
        b'"' => Escape::Short(b'"'),
        b'\\' => Escape::Short(b'\\'),
        b'\n' => Escape::Short(b'n'),
        b'\r' => Escape::Short(b'r'),
        b'\t' => Escape::Short(b't'),
        0x08 => Escape::Short(b'b'),
        0x0c => Escape::Short(b'f'),
        0x00..=0x1f => Escape::Unicode,
        _ => return None,
    })
}

/// Appends an integer.
pub(crate) fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `addr` as a JSON string (`"1.2.3.4:5"`, `"[::1]:5"`).
pub(crate) fn socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    out.push(b'"');
    socket_addr_text(out, addr);
    out.push(b'"');
}

/// Appends `addr` as `Display` writes it (no character needs escaping in JSON): IPv4 through
/// itoa, since `core::fmt` cost about 2,300 instructions per address in encode-cost.
pub(crate) fn socket_addr_text(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            let mut buf = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(buf.format(octet).as_bytes());
            }
            out.push(b':');
            out.extend_from_slice(buf.format(v4.port()).as_bytes());
        }
        // Rare in practice; the standard formatting handles the IPv6 forms.
        SocketAddr::V6(_) => out.extend_from_slice(addr.to_string().as_bytes()),
    }
}

/// Appends `"key":` (the key escaped).
pub(crate) fn key(out: &mut Vec<u8>, key: &str) {
    string(out, key);
    out.push(b':');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_serde_json() {
        for s in [
            "",
            "plain",
            "quote \" and backslash \\",
            "tab\there\nnewline\r\u{8}\u{c}",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "exactly8",
            "seven!\"",
            "grüße 日本語 😀 and a long tail after the multibyte characters",
        ] {
            assert_eq!(
                written(|o| string(o, s)),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn the_scan_and_the_escaper_agree_on_every_byte() {
        // `must_escape` drives the vectorised scan, `escape` the writing: a byte only one of
        // them knew would be copied unescaped.
        for b in 0..=u8::MAX {
            assert_eq!(must_escape(b), escape(b).is_some(), "{b:#04x}");
        }
    }

    #[test]
    fn a_special_byte_anywhere_in_a_long_string_is_escaped() {
        // Every position relative to the scan's chunks: first, last, either side of a boundary.
        for len in [31, 32, 33, 64, 100] {
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1}'] {
                    let mut s: String = "x".repeat(len);
                    s.replace_range(at..=at, &special.to_string());
                    assert_eq!(
                        written(|o| string(o, &s)),
                        serde_json::to_string(&s).unwrap(),
                        "{len} {at} {special:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn numbers_and_addresses() {
        assert_eq!(written(|o| int(o, -42_i64)), "-42");
        assert_eq!(written(|o| int(o, i64::MIN)), i64::MIN.to_string());
        let v4: SocketAddr = "10.0.0.255:10911".parse().unwrap();
        assert_eq!(written(|o| socket_addr(o, v4)), "\"10.0.0.255:10911\"");
        let v6: SocketAddr = "[fe80::1]:9876".parse().unwrap();
        assert_eq!(written(|o| socket_addr(o, v6)), "\"[fe80::1]:9876\"");
        assert_eq!(written(|o| key(o, "k\"")), "\"k\\\"\":");
    }

    proptest! {
        #[test]
        fn any_string_matches_serde_json(s in any::<String>()) {
            prop_assert_eq!(written(|o| string(o, &s)), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn ascii_with_specials_matches_serde_json(s in "[ -~\\x00-\\x1f\"\\\\]{0,80}") {
            prop_assert_eq!(written(|o| string(o, &s)), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn any_v4_address_matches_display(ip in any::<[u8; 4]>(), port in any::<u16>()) {
            let addr = SocketAddr::from((ip, port));
            prop_assert_eq!(written(|o| socket_addr(o, addr)), format!("\"{addr}\""));
        }
    }
}
