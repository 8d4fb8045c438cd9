//! Makes the `:authority` of incoming HTTP/2 requests acceptable to the `h2`
//! server underneath tonic.
//!
//! Secrets Store CSI drivers before v1.6 dial the provider through grpc-go's
//! "passthrough" resolver with a bare socket path, so every request carries
//! `:authority` = that path (`/etc/kubernetes/.../vault.sock`); grpc C-core
//! clients send a %-encoded path. `h2` only accepts a valid URI authority and
//! resets every other stream with PROTOCOL_ERROR. Rather than patching `h2`, the
//! provider filters what the client sends before tonic reads it: a
//! [`RequestFilter`] parses the client's HTTP/2 frames, decodes header blocks
//! (HEADERS plus CONTINUATION) with a stateful HPACK decoder, passes
//! `:authority` through an [`AuthorityRewrite`], and re-encodes a block that
//! had to change without ever touching the server's dynamic table. Every other
//! frame, and the whole server-to-client direction, is untouched — in
//! particular the server's SETTINGS reach the client at once, whoever speaks
//! first. [`relay`] runs the same filter between two streams.
#![forbid(unsafe_code)]

use std::io;

/// Decides the `:authority` the server sees; `None` keeps the original bytes.
pub type AuthorityRewrite = fn(&[u8]) -> Option<Vec<u8>>;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;

const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;

const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Stream dependency (4 bytes) and weight (1 byte) of a HEADERS frame.
const PRIORITY_LEN: usize = 5;

/// Largest payload we emit: the HTTP/2 minimum SETTINGS_MAX_FRAME_SIZE, which
/// every server accepts whatever it advertised.
const MAX_EMITTED_PAYLOAD: usize = 16_384;

/// Cap on the raw bytes of one header block (HEADERS + CONTINUATION payloads),
/// so a client cannot make us buffer without bound.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Cap on the decoded header list, counted as RFC 7541 §4.1 does (32 bytes
/// per field on top of name and value); it stops HPACK "bombs" where a few
/// bytes index a large dynamic-table entry many times.
const MAX_HEADER_LIST: usize = 64 * 1024;

/// Largest dynamic table size update we honour. The client's encoder is bound
/// by the SETTINGS_HEADER_TABLE_SIZE the server advertises (4096 for h2 and
/// tonic); this cap only bounds our memory if a client ignores that.
const MAX_DYNAMIC_TABLE: usize = 64 * 1024;

const AUTHORITY: &[u8] = b":authority";
const LOCALHOST: &[u8] = b"localhost";

/// The provider's rule: keep an authority that parses as a URI authority
/// (`http::uri::Authority`), replace anything else (a socket path, a
/// %-encoded path, empty) with `localhost`.
pub fn to_localhost(authority: &[u8]) -> Option<Vec<u8>> {
    // h2 validates `:authority` with this very parser, so whatever passes here
    // is accepted by the server and is better left alone.
    match http::uri::Authority::try_from(authority) {
        Ok(_) => None,
        Err(_) => Some(LOCALHOST.to_vec()),
    }
}

/// The client-to-server direction of an HTTP/2 connection as a state machine
/// over bytes: what the client sent goes in through [`push`](Self::push), what
/// the server should read comes out. It does no I/O, so the provider runs it
/// inline in its socket's `poll_read` (see `server::conn`) while the server
/// writes to the socket directly, and [`relay`] drives it from a copy loop.
///
/// Header blocks are held until complete and decoded with the connection's
/// HPACK state. As long as no request has needed a new `:authority`, blocks
/// are forwarded exactly as received, so the server's HPACK decoder stays in
/// step with the client's encoder. The first block whose authority must change
/// is re-encoded statelessly (static-table indices and literals "without
/// indexing" only), and so is every block after it: from then on nothing the
/// server reads refers to its dynamic table, so whatever that table holds no
/// longer matters. Every other frame passes byte for byte.
pub struct RequestFilter {
    rewriter: HeaderRewriter,
    state: FilterState,
    /// Received bytes not yet forwarded: part of the preface, of a frame
    /// header or of a header block. Bounded by [`MAX_HEADER_BLOCK`] plus
    /// framing.
    held: Vec<u8>,
    /// Set by the first block whose authority was replaced.
    reencoding: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FilterState {
    /// Waiting for (the rest of) the 24-byte connection preface.
    Preface,
    /// At a frame boundary.
    Frames,
    /// Forwarding the payload of a frame that is not inspected.
    Payload { remaining: usize },
}

impl RequestFilter {
    /// A filter at the start of a connection, replacing authorities with `rewrite`.
    pub fn new(rewrite: AuthorityRewrite) -> RequestFilter {
        RequestFilter {
            rewriter: HeaderRewriter::new(rewrite),
            state: FilterState::Preface,
            held: Vec::new(),
            reencoding: false,
        }
    }

    /// Whether the connection preface has been received in full.
    pub fn preface_done(&self) -> bool {
        self.state != FilterState::Preface
    }

    /// Takes the next bytes from the client and appends to `out` everything
    /// the server can be given so far. An error means the client does not
    /// speak HTTP/2 framing or HPACK; the connection should be closed.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        // Invariant: while `held` has bytes, `input` has been appended to it,
        // so bytes always leave in the order they came.
        loop {
            match self.state {
                FilterState::Payload { remaining: 0 } => self.state = FilterState::Frames,
                FilterState::Payload { remaining } => {
                    // Payloads are streamed, never held whole.
                    let from_held = !self.held.is_empty();
                    let source: &[u8] = if from_held { &self.held } else { input };
                    let n = remaining.min(source.len());
                    if n == 0 {
                        return Ok(());
                    }
                    out.extend_from_slice(&source[..n]);
                    if from_held {
                        self.held.drain(..n);
                    } else {
                        input = &input[n..];
                    }
                    self.state = FilterState::Payload {
                        remaining: remaining - n,
                    };
                }
                FilterState::Preface | FilterState::Frames => {
                    if !input.is_empty() {
                        self.held.extend_from_slice(input);
                        input = &[];
                    }
                    if !self.step(out)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The client closed its side: fine at a frame boundary (or before saying
    /// anything at all), a truncation anywhere else.
    pub fn finish(&self) -> io::Result<()> {
        match self.state {
            FilterState::Preface if self.held.is_empty() => Ok(()),
            FilterState::Preface => Err(truncated("the connection preface")),
            FilterState::Frames if self.held.is_empty() => Ok(()),
            FilterState::Frames if self.held.len() < FRAME_HEADER_LEN => Err(truncated("a frame header")),
            FilterState::Frames => Err(truncated("a header block")),
            FilterState::Payload { .. } => Err(truncated("a frame payload")),
        }
    }

    /// Consumes one unit (the preface, a frame header, a whole header block)
    /// from `held` if it is complete; `false` when more input is needed.
    fn step(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        match self.state {
            FilterState::Preface => {
                let n = self.held.len().min(PREFACE.len());
                if self.held[..n] != PREFACE[..n] {
                    return Err(protocol_error("client did not send the HTTP/2 connection preface"));
                }
                if n < PREFACE.len() {
                    return Ok(false);
                }
                out.extend_from_slice(PREFACE);
                self.held.drain(..PREFACE.len());
                self.state = FilterState::Frames;
                Ok(true)
            }
            FilterState::Frames => {
                let Some(raw) = self.held.first_chunk::<FRAME_HEADER_LEN>() else {
                    return Ok(false);
                };
                let frame = FrameHeader::parse(raw);
                if frame.kind != FRAME_HEADERS {
                    // CONTINUATION outside a header block, PUSH_PROMISE from a
                    // client and unknown types are the server's business to
                    // judge; they travel as they are.
                    out.extend_from_slice(raw);
                    self.held.drain(..FRAME_HEADER_LEN);
                    self.state = FilterState::Payload { remaining: frame.len };
                    return Ok(true);
                }
                let Some((block, consumed)) = parse_header_block(&self.held)? else {
                    return Ok(false);
                };
                self.forward_block(&block, consumed, out)?;
                self.held.drain(..consumed);
                Ok(true)
            }
            FilterState::Payload { .. } => Ok(true),
        }
    }

    /// Forwards one complete header block, the first `consumed` bytes of `held`.
    fn forward_block(&mut self, block: &HeaderBlock, consumed: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let mut fields = self.rewriter.decode(&block.fragment)?;
        let replaced = self.rewriter.replace_authority(&mut fields);
        if replaced || self.reencoding {
            self.reencoding = true;
            let mut encoded = Vec::with_capacity(block.fragment.len() + fields.len() * 4);
            for (name, value) in &fields {
                encode_field(&mut encoded, name, value)?;
            }
            emit_header_frames(out, block, &encoded);
        } else {
            out.extend_from_slice(&self.held[..consumed]);
        }
        Ok(())
    }
}

mod protocol;
mod relay;

use protocol::*;
pub use relay::relay;

#[cfg(test)]
mod tests;
