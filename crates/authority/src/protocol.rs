//! HTTP/2 framing and HPACK as the filter needs them: frame headers, header
//! blocks split over HEADERS and CONTINUATION frames (padding and priority
//! removed), re-emitting a rewritten block, and encoding header fields
//! without touching the server's dynamic table.

use std::io;
use std::sync::OnceLock;

use loona_hpack::encoder::encode_integer_into;
use loona_hpack::Decoder;

use crate::*;

pub(crate) struct FrameHeader {
    pub(crate) len: usize,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
}

impl FrameHeader {
    pub(crate) fn parse(raw: &[u8; FRAME_HEADER_LEN]) -> Self {
        let len = usize::from(raw[0]) << 16 | usize::from(raw[1]) << 8 | usize::from(raw[2]);
        // The top bit is reserved and must be ignored on receipt.
        let stream = u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]) & 0x7fff_ffff;
        FrameHeader {
            len,
            kind: raw[3],
            flags: raw[4],
            stream,
        }
    }
}

/// A complete header block with the HEADERS framing details we must re-emit.
pub(crate) struct HeaderBlock {
    pub(crate) stream: u32,
    pub(crate) end_stream: bool,
    /// Kept so the server sees the same prioritisation the client asked for;
    /// dropping it would be harmless too (RFC 9113 deprecates it and h2 does
    /// not schedule by it), but keeping costs nothing.
    pub(crate) priority: Option<[u8; PRIORITY_LEN]>,
    pub(crate) fragment: Vec<u8>,
}

/// Parses a header block (a HEADERS frame and its CONTINUATIONs) at the start
/// of `bytes`: `None` while it is incomplete, else the block and the number of
/// bytes its frames take. Caps apply as soon as a frame header is seen, so a
/// client cannot make us hold more than [`MAX_HEADER_BLOCK`] of fragment.
pub(crate) fn parse_header_block(bytes: &[u8]) -> io::Result<Option<(HeaderBlock, usize)>> {
    let Some(raw) = bytes.first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let first = FrameHeader::parse(raw);
    if first.stream == 0 {
        return Err(protocol_error("HEADERS frame on stream 0"));
    }
    if first.len > MAX_HEADER_BLOCK {
        return Err(header_block_too_large());
    }
    let Some(payload) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + first.len) else {
        return Ok(None);
    };

    let mut start = 0;
    let mut end = payload.len();
    if first.flags & FLAG_PADDED != 0 {
        let pad = usize::from(*payload.first().ok_or_else(bad_padding)?);
        start = 1;
        end = end.checked_sub(pad).ok_or_else(bad_padding)?;
    }
    let priority = if first.flags & FLAG_PRIORITY != 0 {
        let fields = payload
            .get(start..start + PRIORITY_LEN)
            .and_then(|slice| <[u8; PRIORITY_LEN]>::try_from(slice).ok())
            .ok_or_else(|| protocol_error("HEADERS frame too short for its priority fields"))?;
        start += PRIORITY_LEN;
        Some(fields)
    } else {
        None
    };
    if start > end {
        return Err(bad_padding());
    }
    // Padding is dropped on purpose when a block is re-encoded: it only hides
    // the block's size from observers of the wire, and the next hop is local.
    let mut fragment = payload[start..end].to_vec();

    let mut flags = first.flags;
    let mut at = FRAME_HEADER_LEN + first.len;
    while flags & FLAG_END_HEADERS == 0 {
        let Some(raw) = bytes.get(at..).and_then(|rest| rest.first_chunk::<FRAME_HEADER_LEN>()) else {
            return Ok(None);
        };
        let next = FrameHeader::parse(raw);
        // RFC 9113 §6.10: nothing may interleave with a header block.
        if next.kind != FRAME_CONTINUATION || next.stream != first.stream {
            return Err(protocol_error(
                "header block interrupted by a frame other than its CONTINUATION",
            ));
        }
        if next.len > MAX_HEADER_BLOCK - fragment.len() {
            return Err(header_block_too_large());
        }
        let Some(piece) = bytes.get(at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + next.len) else {
            return Ok(None);
        };
        fragment.extend_from_slice(piece);
        at += FRAME_HEADER_LEN + next.len;
        flags = next.flags;
    }

    let block = HeaderBlock {
        stream: first.stream,
        end_stream: first.flags & FLAG_END_STREAM != 0,
        priority,
        fragment,
    };
    Ok(Some((block, at)))
}

pub(crate) fn bad_padding() -> io::Error {
    protocol_error("HEADERS frame padding exceeds its payload")
}

pub(crate) fn header_block_too_large() -> io::Error {
    protocol_error(format!("header block larger than {MAX_HEADER_BLOCK} bytes"))
}

/// Frames `encoded` as HEADERS followed by as many CONTINUATION frames as the
/// 16 KiB payload limit requires.
pub(crate) fn emit_header_frames(out: &mut Vec<u8>, block: &HeaderBlock, encoded: &[u8]) {
    let mut flags = 0;
    if block.end_stream {
        flags |= FLAG_END_STREAM;
    }
    let mut room = MAX_EMITTED_PAYLOAD;
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
        room -= PRIORITY_LEN;
    }
    let (first, mut rest) = encoded.split_at(encoded.len().min(room));
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    let prefix = block.priority.map_or(0, |_| PRIORITY_LEN);
    push_frame_header(out, prefix + first.len(), FRAME_HEADERS, flags, block.stream);
    if let Some(priority) = block.priority {
        out.extend_from_slice(&priority);
    }
    out.extend_from_slice(first);

    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_EMITTED_PAYLOAD));
        let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        push_frame_header(out, chunk.len(), FRAME_CONTINUATION, flags, block.stream);
        out.extend_from_slice(chunk);
        rest = tail;
    }
}

pub(crate) fn push_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    // `len` never exceeds MAX_EMITTED_PAYLOAD, so three bytes always hold it.
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// Decodes client header blocks with the connection's HPACK state and
/// re-encodes them statelessly.
pub(crate) struct HeaderRewriter {
    pub(crate) decoder: Decoder<'static>,
    pub(crate) rewrite: AuthorityRewrite,
}

impl HeaderRewriter {
    pub(crate) fn new(rewrite: AuthorityRewrite) -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(MAX_DYNAMIC_TABLE);
        HeaderRewriter { decoder, rewrite }
    }

    /// Decodes one block with the connection's HPACK state.
    pub(crate) fn decode(&mut self, fragment: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut list_size = 0usize;
        self.decoder
            .decode_with_cb(fragment, |name, value| {
                // The decoder must still see the whole block to keep its
                // dynamic table in step with the client, so an oversized list
                // is only noted here and rejected afterwards.
                list_size = list_size.saturating_add(name.len() + value.len() + 32);
                if list_size <= MAX_HEADER_LIST {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|err| protocol_error(format!("invalid HPACK header block: {err}")))?;
        if list_size > MAX_HEADER_LIST {
            return Err(protocol_error(format!(
                "decoded header list larger than {MAX_HEADER_LIST} bytes"
            )));
        }
        Ok(fields)
    }

    /// Applies the rewrite rule to every `:authority`; whether any changed.
    pub(crate) fn replace_authority(&self, fields: &mut [(Vec<u8>, Vec<u8>)]) -> bool {
        let mut replaced = false;
        for (name, value) in fields.iter_mut() {
            if name.as_slice() != AUTHORITY {
                continue;
            }
            if let Some(replacement) = (self.rewrite)(value) {
                tracing::debug!(
                    from = %String::from_utf8_lossy(value),
                    to = %String::from_utf8_lossy(&replacement),
                    "rewrote HTTP/2 :authority"
                );
                *value = replacement;
                replaced = true;
            }
        }
        replaced
    }

    /// Decodes a block, rewrites its authority and encodes it statelessly.
    #[cfg(test)]
    pub(crate) fn rewrite(&mut self, fragment: &[u8]) -> io::Result<Vec<u8>> {
        let mut fields = self.decode(fragment)?;
        self.replace_authority(&mut fields);
        let mut encoded = Vec::with_capacity(fragment.len() + fields.len() * 4);
        for (name, value) in &fields {
            encode_field(&mut encoded, name, value)?;
        }
        Ok(encoded)
    }
}

/// Encodes one field without adding it to the receiver's dynamic table: an
/// exact static-table match as an index, otherwise a literal "without
/// indexing" with an indexed name where the static table has one.
pub(crate) fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let mut name_index = None;
    for (index, static_name, static_value) in static_table() {
        if static_name.as_slice() != name {
            continue;
        }
        if static_value.as_slice() == value {
            return encode_integer_into(*index, 7, 0x80, out);
        }
        name_index.get_or_insert(*index);
    }
    match name_index {
        Some(index) => encode_integer_into(index, 4, 0x00, out)?,
        None => {
            out.push(0x00);
            encode_string(out, name)?;
        }
    }
    encode_string(out, value)
}

/// Huffman coding is skipped: the next hop is local (a pipe or a unix socket),
/// where a few extra bytes cost less than the encoding.
pub(crate) fn encode_string(out: &mut Vec<u8>, bytes: &[u8]) -> io::Result<()> {
    encode_integer_into(bytes.len(), 7, 0x00, out)?;
    out.extend_from_slice(bytes);
    Ok(())
}

/// One HPACK static table entry: `(index, name, value)`.
type StaticEntry = (usize, Vec<u8>, Vec<u8>);

/// The HPACK static table (RFC 7541 Appendix A).
///
/// loona-hpack keeps its copy private, so it is read back through a fresh
/// decoder, which also guarantees our indices mean what its decoder (and any
/// conforming peer) thinks they mean.
pub(crate) fn static_table() -> &'static [StaticEntry] {
    static TABLE: OnceLock<Vec<StaticEntry>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut decoder = Decoder::new();
        (1u8..=61)
            .filter_map(|index| {
                let mut fields = decoder.decode(&[0x80 | index]).ok()?;
                let (name, value) = fields.pop()?;
                Some((usize::from(index), name, value))
            })
            .collect()
    })
}

pub(crate) fn protocol_error(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

pub(crate) fn truncated(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed in the middle of {what}"),
    )
}
