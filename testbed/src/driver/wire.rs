//! What a gRPC client puts on the wire: a one-connection HTTP/2 listener
//! that answers the client's preface with its SETTINGS at once (clients such
//! as grpc-go and C-core send nothing before they see it), decodes the first
//! request's header block, and answers that request with a trailers-only
//! `UNIMPLEMENTED`, so the client returns promptly.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Enough for any request header block a gRPC client sends.
const MAX_BLOCK: usize = 64 * 1024;
/// The message the captured request is answered with.
pub const CAPTURED: &str = "captured by the test bed's wire listener";

/// The first request of a connection, as its client encoded it.
#[derive(Debug, Clone)]
pub struct FirstRequest {
    /// Every header field in order, pseudo-headers first.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl FirstRequest {
    /// The first value of header `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

/// Accepts one connection on `listener` and returns its first request's
/// headers, or fails after `within`.
pub async fn first_request(listener: &UnixListener, within: Duration) -> anyhow::Result<FirstRequest> {
    tokio::time::timeout(within, async {
        let (mut conn, _) = listener.accept().await.context("accepting the client's connection")?;
        serve_one(&mut conn).await
    })
    .await
    .map_err(|_| anyhow!("no request within {within:?}"))?
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame(conn: &mut UnixStream) -> anyhow::Result<Frame> {
    let mut head = [0u8; 9];
    conn.read_exact(&mut head).await.context("reading a frame header")?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    if len > MAX_BLOCK {
        bail!("a {len}-byte frame is larger than any request header block");
    }
    let mut payload = vec![0u8; len];
    conn.read_exact(&mut payload).await.context("reading a frame")?;
    Ok(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]),
        payload,
    })
}

async fn write_frame(conn: &mut UnixStream, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> anyhow::Result<()> {
    let len = u32::try_from(payload.len()).context("frame too large")?;
    let mut frame = Vec::with_capacity(9 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes()[1..]);
    frame.push(kind);
    frame.push(flags);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    conn.write_all(&frame).await.context("writing a frame")?;
    Ok(())
}

/// The header block fragment of a HEADERS frame, without padding and priority.
fn fragment(frame: &Frame) -> anyhow::Result<&[u8]> {
    let mut body = frame.payload.as_slice();
    let mut pad = 0;
    if frame.flags & FLAG_PADDED != 0 {
        let (&n, rest) = body
            .split_first()
            .ok_or_else(|| anyhow!("PADDED HEADERS frame without a pad length"))?;
        pad = usize::from(n);
        body = rest;
    }
    if frame.flags & FLAG_PRIORITY != 0 {
        body = body
            .get(5..)
            .ok_or_else(|| anyhow!("PRIORITY HEADERS frame too short"))?;
    }
    let keep = body
        .len()
        .checked_sub(pad)
        .ok_or_else(|| anyhow!("HEADERS padding longer than the frame"))?;
    Ok(&body[..keep])
}

async fn serve_one(conn: &mut UnixStream) -> anyhow::Result<FirstRequest> {
    let mut preface = [0u8; PREFACE.len()];
    conn.read_exact(&mut preface)
        .await
        .context("reading the connection preface")?;
    if preface != PREFACE {
        bail!("the client did not send the HTTP/2 connection preface");
    }
    // The server's preface: an empty SETTINGS frame, sent without waiting.
    write_frame(conn, SETTINGS, 0, 0, &[]).await?;
    let (stream, block) = loop {
        let frame = read_frame(conn).await?;
        match frame.kind {
            SETTINGS if frame.flags & FLAG_ACK == 0 => write_frame(conn, SETTINGS, FLAG_ACK, 0, &[]).await?,
            HEADERS => {
                let mut block = fragment(&frame)?.to_vec();
                let mut end = frame.flags & FLAG_END_HEADERS != 0;
                while !end {
                    let next = read_frame(conn).await?;
                    if next.kind != CONTINUATION || next.stream != frame.stream {
                        bail!("a header block interrupted by a frame of type {}", next.kind);
                    }
                    if block.len() + next.payload.len() > MAX_BLOCK {
                        bail!("request header block larger than {MAX_BLOCK} bytes");
                    }
                    block.extend_from_slice(&next.payload);
                    end = next.flags & FLAG_END_HEADERS != 0;
                }
                break (frame.stream, block);
            }
            _ => {}
        }
    };
    let headers = Decoder::new()
        .decode(&block)
        .map_err(|e| anyhow!("the client's header block is not valid HPACK: {e:?}"))?
        .into_iter()
        .map(|(n, v)| (String::from_utf8_lossy(&n).into_owned(), v))
        .collect();
    // Trailers-only answer: the client sees UNIMPLEMENTED and returns.
    let mut answer = Vec::new();
    Encoder::new()
        .encode_into(
            [
                (&b":status"[..], &b"200"[..]),
                (b"content-type", b"application/grpc"),
                (b"grpc-status", b"12"),
                (b"grpc-message", CAPTURED.as_bytes()),
            ],
            &mut answer,
        )
        .context("encoding the answer")?;
    write_frame(conn, HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, stream, &answer).await?;
    // Let the client read the answer before the connection closes.
    let mut rest = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(conn.read(&mut rest).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(FirstRequest { headers })
}
