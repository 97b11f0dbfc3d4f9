//! A minimal remoting exchange over a raw socket, independent of the crate under test.
//!
//! Used only to decide whether the test servers are ready (and by tests that need to look at the
//! wire without the crate's codec). Requests use the JSON header shape the Rust servers demand
//! (`serializeTypeCurrentRPC` present, string ext-field values); responses are read as JSON
//! headers, which is what those servers always send.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A decoded response: its code and body.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) code: i64,
    pub(crate) remark: Option<String>,
    pub(crate) body: Vec<u8>,
}

/// Sends one request with `code` and `ext_fields` to `addr` and reads one response frame.
///
/// # Errors
/// Any connect, I/O or decode failure, or no answer within `timeout`.
pub(crate) async fn request(
    addr: &str,
    code: i32,
    ext_fields: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<RawResponse> {
    tokio::time::timeout(timeout, exchange(addr, code, ext_fields))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {addr}")))?
}

/// Encodes a request frame with a JSON header and no body.
pub(crate) fn encode_request(code: i32, opaque: i32, ext_fields: &[(&str, &str)]) -> Vec<u8> {
    let ext: serde_json::Map<String, serde_json::Value> = ext_fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
        .collect();
    let header = serde_json::json!({
        "code": code,
        "extFields": ext,
        "flag": 0,
        "language": "JAVA",
        "opaque": opaque,
        "serializeTypeCurrentRPC": "JSON",
        "version": 479,
    })
    .to_string();
    let header = header.as_bytes();
    let header_len = u32::try_from(header.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(8 + header.len());
    frame.extend_from_slice(&(header_len + 4).to_be_bytes());
    frame.extend_from_slice(&header_len.to_be_bytes());
    frame.extend_from_slice(header);
    frame
}

async fn exchange(addr: &str, code: i32, ext_fields: &[(&str, &str)]) -> io::Result<RawResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(&encode_request(code, 1, ext_fields))
        .await?;
    let total = stream.read_u32().await? as usize;
    if !(4..=16 * 1024 * 1024).contains(&total) {
        return Err(invalid(format!("frame length {total}")));
    }
    let mut frame = vec![0u8; total];
    stream.read_exact(&mut frame).await?;
    let len_and_type = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let header_len = (len_and_type & 0x00FF_FFFF) as usize;
    if header_len > total - 4 {
        return Err(invalid(format!(
            "header length {header_len} > frame {total}"
        )));
    }
    let header: serde_json::Value = serde_json::from_slice(&frame[4..4 + header_len])
        .map_err(|e| invalid(format!("response header is not JSON: {e}")))?;
    let code = header
        .get("code")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| invalid("response header has no code".to_owned()))?;
    let remark = header
        .get("remark")
        .and_then(|r| r.as_str())
        .map(str::to_owned);
    Ok(RawResponse {
        code,
        remark,
        body: frame[4 + header_len..].to_vec(),
    })
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
