use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use loona_hpack::encoder::encode_integer_into;
use loona_hpack::Decoder;

use super::*;

const SOCKET: &str = "/etc/kubernetes/secrets-store-csi-providers/vault.sock";
const METHOD_PATH: &str = "/v1alpha1.CSIDriverProvider/Version";
const FRAME_DATA: u8 = 0x0;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_SETTINGS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;
const PIPE: usize = 256 * 1024;
const PATIENCE: Duration = Duration::from_secs(10);

/// What the h2 server saw of one request.
#[derive(Debug)]
struct Seen {
    authority: Option<String>,
    path: String,
    headers: HeaderMap,
    body_len: usize,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Completed,
    Reset(u32),
}

fn socket_path(_: &[u8]) -> Option<Vec<u8>> {
    Some(SOCKET.as_bytes().to_vec())
}

// --- HPACK and frame builders for the hand-made client -------------------

fn indexed(index: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_integer_into(index, 7, 0x80, &mut out).unwrap();
    out
}

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_integer_into(bytes.len(), 7, 0, out).unwrap();
    out.extend_from_slice(bytes);
}

/// Literal with incremental indexing and a literal name: lands in the
/// dynamic table of both sides.
fn incremental(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x40];
    string(&mut out, name.as_bytes());
    string(&mut out, value);
    out
}

/// Literal without indexing whose name comes from the static table.
fn literal_indexed_name(index: usize, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_integer_into(index, 4, 0x00, &mut out).unwrap();
    string(&mut out, value);
    out
}

fn literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    string(&mut out, name.as_bytes());
    string(&mut out, value);
    out
}

fn size_update(size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_integer_into(size, 5, 0x20, &mut out).unwrap();
    out
}

/// The gRPC request fields other than `:authority`, as grpc-go sends them.
fn grpc_fields() -> Vec<u8> {
    [
        indexed(3), // :method POST
        indexed(6), // :scheme http
        literal_indexed_name(4, METHOD_PATH.as_bytes()),
        literal_indexed_name(31, b"application/grpc"),
        literal("te", b"trailers"),
    ]
    .concat()
}

fn request_block(authority: &[u8]) -> Vec<u8> {
    [literal_indexed_name(1, authority), grpc_fields()].concat()
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_frame_header(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn headers(stream: u32, block: &[u8]) -> Vec<u8> {
    frame(FRAME_HEADERS, FLAG_END_HEADERS, stream, block)
}

/// An empty gRPC message (5-byte prefix) that ends the request.
fn grpc_body(stream: u32) -> Vec<u8> {
    frame(FRAME_DATA, FLAG_END_STREAM, stream, &[0, 0, 0, 0, 0])
}

fn connection_start() -> Vec<u8> {
    [PREFACE.as_slice(), &frame(FRAME_SETTINGS, 0, 0, &[])].concat()
}

/// A connection's start and one unary gRPC request per header block, on
/// streams 1, 3, 5, …: the bytes and the stream ids.
fn unary_requests(blocks: &[&[u8]]) -> (Vec<u8>, Vec<u32>) {
    let streams: Vec<u32> = (0..blocks.len() as u32).map(|i| 2 * i + 1).collect();
    let mut bytes = connection_start();
    for (block, &stream) in blocks.iter().zip(&streams) {
        bytes.extend(headers(stream, block));
        bytes.extend(grpc_body(stream));
    }
    (bytes, streams)
}

// --- peers ---------------------------------------------------------------

/// A raw h2 server answering every request like a unary gRPC method.
fn spawn_h2_server(io: DuplexStream) -> JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut conn = h2::server::handshake(io).await.unwrap();
        let mut handlers = Vec::new();
        while let Some(Ok((request, respond))) = conn.accept().await {
            handlers.push(tokio::spawn(handle(request, respond)));
        }
        let mut seen = Vec::new();
        for handler in handlers {
            seen.push(handler.await.unwrap());
        }
        seen
    })
}

async fn handle(request: Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) -> Seen {
    let (parts, mut body) = request.into_parts();
    let mut body_len = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body_len += chunk.len();
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    let response = Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let mut send = respond.send_response(response, false).unwrap();
    send.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), false).unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    send.send_trailers(trailers).unwrap();
    Seen {
        authority: parts.uri.authority().map(|a| a.to_string()),
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body_len,
    }
}

async fn read_frame(io: &mut DuplexStream) -> Option<(FrameHeader, Vec<u8>)> {
    let mut raw = [0u8; FRAME_HEADER_LEN];
    io.read_exact(&mut raw).await.ok()?;
    let header = FrameHeader::parse(&raw);
    let mut payload = vec![0u8; header.len];
    io.read_exact(&mut payload).await.ok()?;
    Some((header, payload))
}

/// Plays a hand-built HTTP/2 client: writes `bytes`, answers SETTINGS,
/// and waits until every stream in `streams` completed or was reset; then
/// closes gracefully and reads until the peer hangs up.
async fn exchange(mut io: DuplexStream, bytes: &[u8], streams: &[u32]) -> HashMap<u32, Outcome> {
    io.write_all(bytes).await.unwrap();
    let mut outcomes = HashMap::new();
    while outcomes.len() < streams.len() {
        let Some((header, payload)) = read_frame(&mut io).await else {
            panic!("server hung up early; outcomes so far: {outcomes:?}");
        };
        match header.kind {
            FRAME_SETTINGS if header.flags & FLAG_ACK == 0 => {
                io.write_all(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[])).await.unwrap();
            }
            FRAME_HEADERS | FRAME_DATA if header.flags & FLAG_END_STREAM != 0 => {
                outcomes.insert(header.stream, Outcome::Completed);
            }
            FRAME_RST_STREAM => {
                let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                outcomes.insert(header.stream, Outcome::Reset(code));
            }
            _ => {}
        }
    }
    io.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = io.read_to_end(&mut rest).await;
    outcomes
}

/// Client bytes → relay(to_localhost) → h2 server; returns what the
/// client saw, what the server saw and how the relay ended.
async fn through_relay(bytes: &[u8], streams: &[u32]) -> (HashMap<u32, Outcome>, Vec<Seen>, io::Result<()>) {
    let (client, client_wire) = duplex(PIPE);
    let (server_wire, server) = duplex(PIPE);
    let relay = tokio::spawn(relay(client_wire, server_wire, to_localhost));
    let server = spawn_h2_server(server);
    let outcomes = tokio::time::timeout(PATIENCE, exchange(client, bytes, streams))
        .await
        .unwrap();
    let seen = tokio::time::timeout(PATIENCE, server).await.unwrap().unwrap();
    let relayed = tokio::time::timeout(PATIENCE, relay).await.unwrap().unwrap();
    (outcomes, seen, relayed)
}

fn all_completed(streams: &[u32]) -> HashMap<u32, Outcome> {
    streams.iter().map(|s| (*s, Outcome::Completed)).collect()
}

// --- 1. the v1.5 driver's request is repaired ----------------------------

#[tokio::test]
async fn socket_path_authority_becomes_localhost() {
    let (bytes, _) = unary_requests(&[&request_block(SOCKET.as_bytes())]);
    let (outcomes, seen, relayed) = through_relay(&bytes, &[1]).await;
    relayed.unwrap();
    assert_eq!(outcomes, all_completed(&[1]));
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authority.as_deref(), Some("localhost"));
    assert_eq!(seen[0].path, METHOD_PATH);
    assert_eq!(seen[0].headers["content-type"], "application/grpc");
    assert_eq!(seen[0].headers["te"], "trailers");
    assert_eq!(seen[0].body_len, 5);
}

// --- 2. without the relay h2 refuses it ----------------------------------

#[tokio::test]
async fn h2_rejects_socket_path_authority_without_relay() {
    let (client, server) = duplex(PIPE);
    let server = spawn_h2_server(server);
    let (bytes, _) = unary_requests(&[&request_block(SOCKET.as_bytes())]);
    let outcomes = tokio::time::timeout(PATIENCE, exchange(client, &bytes, &[1]))
        .await
        .unwrap();
    // 0x1 is PROTOCOL_ERROR.
    assert_eq!(outcomes[&1], Outcome::Reset(0x1));
    let seen = tokio::time::timeout(PATIENCE, server).await.unwrap().unwrap();
    assert!(seen.is_empty(), "h2 accepted the request: {seen:?}");
}

/// The test bed's role: a real h2 client behind a relay that forces the
/// socket path, as a v1.5 driver would send, and optionally the
/// provider's relay in front of the server, joined by unix sockets as in
/// production. h2's encoder uses Huffman coding and its dynamic table.
async fn h2_client_requests(through_provider_relay: bool) -> (Vec<Result<(), h2::Error>>, Vec<Seen>) {
    let (client, driver_wire) = tokio::net::UnixStream::pair().unwrap();
    let (driver_out, provider_in) = tokio::net::UnixStream::pair().unwrap();
    let driver_relay = tokio::spawn(relay(driver_wire, driver_out, socket_path));
    let (server_wire, server) = duplex(PIPE);
    let provider_relay = if through_provider_relay {
        tokio::spawn(relay(provider_in, server_wire, to_localhost))
    } else {
        tokio::spawn(relay(provider_in, server_wire, |_| None))
    };
    let server = spawn_h2_server(server);

    let (send, conn) = h2::client::handshake(client).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut results = Vec::new();
    for i in 0..3 {
        let request = Request::post(format!("http://localhost{METHOD_PATH}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-request", i.to_string())
            .body(())
            .unwrap();
        let mut send = send.clone().ready().await.unwrap();
        let (response, mut body) = send.send_request(request, false).unwrap();
        // Fails if the server already reset the stream; the response
        // below reports that.
        let _ = body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true);
        results.push(response.await.map(drop));
    }
    drop(send);
    tokio::time::timeout(PATIENCE, conn).await.unwrap().unwrap().unwrap();
    let seen = tokio::time::timeout(PATIENCE, server).await.unwrap().unwrap();
    for relay in [driver_relay, provider_relay] {
        tokio::time::timeout(PATIENCE, relay).await.unwrap().unwrap().unwrap();
    }
    (results, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_through_both_relays_reaches_server_as_localhost() {
    let (results, seen) = h2_client_requests(true).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(seen.len(), 3);
    for (i, request) in seen.iter().enumerate() {
        assert_eq!(request.authority.as_deref(), Some("localhost"));
        assert_eq!(request.headers["x-request"], i.to_string().as_str());
        assert_eq!(request.body_len, 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_impersonating_old_driver_is_rejected_without_provider_relay() {
    let (results, seen) = h2_client_requests(false).await;
    assert!(seen.is_empty());
    for result in results {
        let err = result.unwrap_err();
        assert_eq!(err.reason(), Some(h2::Reason::PROTOCOL_ERROR), "{err:?}");
    }
}

// --- 3. framing and HPACK state ------------------------------------------

#[tokio::test]
async fn padded_prioritised_block_split_over_continuations() {
    let block = request_block(SOCKET.as_bytes());
    let (a, rest) = block.split_at(3);
    let (b, c) = rest.split_at(20);
    let pad = 7u8;
    let mut first = vec![pad];
    // Exclusive dependency on stream 0 with weight 16.
    first.extend_from_slice(&[0x80, 0, 0, 0, 15]);
    first.extend_from_slice(a);
    first.extend_from_slice(&[0; 7]);
    let bytes = [
        connection_start(),
        frame(FRAME_HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &first),
        frame(FRAME_CONTINUATION, 0, 1, b),
        frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, c),
        grpc_body(1),
    ]
    .concat();
    let (outcomes, seen, relayed) = through_relay(&bytes, &[1]).await;
    relayed.unwrap();
    assert_eq!(outcomes, all_completed(&[1]));
    assert_eq!(seen[0].authority.as_deref(), Some("localhost"));
    assert_eq!(seen[0].path, METHOD_PATH);
    assert_eq!(seen[0].headers["te"], "trailers");
}

#[tokio::test]
async fn end_stream_on_headers_is_preserved() {
    let bytes = [
        connection_start(),
        frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &request_block(SOCKET.as_bytes()),
        ),
    ]
    .concat();
    let (outcomes, seen, relayed) = through_relay(&bytes, &[1]).await;
    relayed.unwrap();
    assert_eq!(outcomes, all_completed(&[1]));
    assert_eq!(seen[0].authority.as_deref(), Some("localhost"));
    assert_eq!(seen[0].body_len, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_table_entries_from_an_earlier_request_are_resolved() {
    // Request 1 indexes :authority (then at 62) and x-trace (pushing
    // :authority to 63); request 3 refers to both by index only.
    let first = [
        incremental(":authority", SOCKET.as_bytes()),
        grpc_fields(),
        incremental("x-trace", b"abc"),
    ]
    .concat();
    let second = [indexed(63), grpc_fields(), indexed(62)].concat();
    // Request 5 shrinks the table to nothing and grows it back, evicting
    // both entries, then indexes a new authority that request 7 reuses.
    let third = [
        size_update(0),
        size_update(4096),
        incremental(":authority", b"vault.example:8200"),
        grpc_fields(),
    ]
    .concat();
    let fourth = [indexed(62), grpc_fields()].concat();
    let (bytes, streams) = unary_requests(&[&first, &second, &third, &fourth]);
    let (outcomes, seen, relayed) = through_relay(&bytes, &streams).await;
    relayed.unwrap();
    assert_eq!(outcomes, all_completed(&streams), "{seen:?}");
    assert_eq!(seen.len(), 4);
    for request in &seen[..2] {
        assert_eq!(request.authority.as_deref(), Some("localhost"));
        assert_eq!(request.headers["x-trace"], "abc");
    }
    for request in &seen[2..] {
        assert_eq!(request.authority.as_deref(), Some("vault.example:8200"));
        assert!(request.headers.get("x-trace").is_none());
    }
}

#[test]
fn table_size_update_evicts_entries() {
    let mut rewriter = HeaderRewriter::new(to_localhost);
    rewriter.rewrite(&incremental("x-trace", b"abc")).unwrap();
    rewriter.rewrite(&indexed(62)).unwrap();
    let evicted = [size_update(0), size_update(4096), indexed(62)].concat();
    assert!(rewriter.rewrite(&evicted).is_err());
}

#[test]
fn reencoded_blocks_stand_alone() {
    // Output decodable by a fresh decoder proves the server's HPACK state
    // never depends on ours.
    let mut rewriter = HeaderRewriter::new(to_localhost);
    let first = [
        incremental(":authority", SOCKET.as_bytes()),
        grpc_fields(),
        incremental("x-trace", b"abc"),
    ]
    .concat();
    let second = [indexed(63), grpc_fields(), indexed(62)].concat();
    for block in [first, second] {
        let out = rewriter.rewrite(&block).unwrap();
        let fields = Decoder::new().decode(&out).unwrap();
        assert_eq!(fields[0], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(fields[1], (b":method".to_vec(), b"POST".to_vec()));
        assert_eq!(fields[6], (b"x-trace".to_vec(), b"abc".to_vec()));
        assert_eq!(fields.len(), 7);
        // Static indices keep the block compact: :method POST is one byte.
        assert!(out.contains(&0x83));
    }
}

#[tokio::test]
async fn large_block_is_reframed_within_16_kib() {
    let big = vec![b'x'; 40_000];
    let block = [request_block(SOCKET.as_bytes()), literal("x-big", &big)].concat();
    let (a, b) = block.split_at(MAX_EMITTED_PAYLOAD);
    let (b, c) = b.split_at(MAX_EMITTED_PAYLOAD);
    let bytes = [
        connection_start(),
        frame(FRAME_HEADERS, 0, 1, a),
        frame(FRAME_CONTINUATION, 0, 1, b),
        frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, c),
        grpc_body(1),
    ]
    .concat();
    let (outcomes, seen, relayed) = through_relay(&bytes, &[1]).await;
    relayed.unwrap();
    assert_eq!(outcomes, all_completed(&[1]));
    assert_eq!(seen[0].authority.as_deref(), Some("localhost"));
    assert_eq!(seen[0].headers["x-big"].len(), big.len());
}

#[test]
fn emitted_frames_respect_the_minimum_max_frame_size() {
    let encoded = vec![0xab; 2 * MAX_EMITTED_PAYLOAD + 10];
    let block = HeaderBlock {
        stream: 7,
        end_stream: true,
        priority: Some([0, 0, 0, 3, 200]),
        fragment: Vec::new(),
    };
    let mut out = Vec::new();
    emit_header_frames(&mut out, &block, &encoded);

    let mut frames = Vec::new();
    let mut rest = out.as_slice();
    while !rest.is_empty() {
        let raw: [u8; FRAME_HEADER_LEN] = rest[..FRAME_HEADER_LEN].try_into().unwrap();
        let header = FrameHeader::parse(&raw);
        assert!(header.len <= MAX_EMITTED_PAYLOAD);
        assert_eq!(header.stream, 7);
        frames.push((header.kind, header.flags));
        rest = &rest[FRAME_HEADER_LEN + header.len..];
    }
    assert_eq!(
        frames,
        [
            (FRAME_HEADERS, FLAG_END_STREAM | FLAG_PRIORITY),
            (FRAME_CONTINUATION, 0),
            (FRAME_CONTINUATION, FLAG_END_HEADERS),
        ]
    );
    assert_eq!(out.len(), 3 * FRAME_HEADER_LEN + PRIORITY_LEN + encoded.len());
}

// --- 4. the rewrite rule ---------------------------------------------------

#[test]
fn to_localhost_keeps_valid_authorities_only() {
    for valid in ["localhost", "vault.example:8200", "127.0.0.1:8200", "[::1]:8200"] {
        assert_eq!(to_localhost(valid.as_bytes()), None, "{valid}");
    }
    for invalid in [
        SOCKET,
        "%2Fetc%2Fkubernetes%2Fsecrets-store-csi-providers%2Fvault.sock",
        "unix:%2Fvar%2Frun%2Fvault.sock",
        "",
        "local host",
    ] {
        assert_eq!(
            to_localhost(invalid.as_bytes()).as_deref(),
            Some(b"localhost".as_slice()),
            "{invalid}"
        );
    }
}

#[tokio::test]
async fn valid_authorities_pass_unchanged_and_encoded_paths_are_replaced() {
    // www.example.com, Huffman-coded (RFC 7541 C.4.1), name :authority.
    let huffman = [
        &[0x01, 0x80 | 12][..],
        &[0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff],
    ]
    .concat();
    let blocks = [
        request_block(b"localhost"),
        request_block(b"vault.example:8200"),
        request_block(b"%2Fetc%2Fkubernetes%2Fsecrets-store-csi-providers%2Fvault.sock"),
        request_block(b""),
        [huffman, grpc_fields()].concat(),
    ];
    let mut bytes = connection_start();
    let mut streams = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let stream = 2 * i as u32 + 1;
        bytes.extend(headers(stream, block));
        bytes.extend(grpc_body(stream));
        streams.push(stream);
    }
    let (outcomes, seen, relayed) = through_relay(&bytes, &streams).await;
    relayed.unwrap();
    assert_eq!(outcomes, all_completed(&streams));
    let authorities: Vec<_> = seen.iter().map(|s| s.authority.as_deref()).collect();
    assert_eq!(
        authorities,
        [
            Some("localhost"),
            Some("vault.example:8200"),
            Some("localhost"),
            Some("localhost"),
            Some("www.example.com"),
        ]
    );
}

/// Runs `bytes` through a fresh filter, `split` bytes at a time.
fn filtered(bytes: &[u8], split: usize) -> io::Result<Vec<u8>> {
    let mut filter = RequestFilter::new(to_localhost);
    let mut out = Vec::new();
    for piece in bytes.chunks(split.max(1)) {
        filter.push(piece, &mut out)?;
    }
    filter.finish()?;
    Ok(out)
}

#[test]
fn valid_authorities_are_forwarded_byte_for_byte() {
    // Huffman strings, indexing literals and padding all survive: the
    // server decodes exactly what the client encoded.
    let huffman = [
        &[0x41, 0x80 | 12][..],
        &[0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff],
    ]
    .concat();
    let padded = [&[3u8][..], &request_block(b"localhost"), &[0, 0, 0]].concat();
    let bytes = [
        connection_start(),
        headers(1, &[incremental(":authority", b"localhost"), grpc_fields()].concat()),
        grpc_body(1),
        headers(3, &[indexed(62), grpc_fields()].concat()),
        grpc_body(3),
        headers(5, &[huffman, grpc_fields()].concat()),
        frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 7, &padded),
        frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]),
        frame(FRAME_DATA, FLAG_END_STREAM, 7, &[]),
    ]
    .concat();
    for split in [1, 2, 7, 9, 10, 64, bytes.len()] {
        assert_eq!(filtered(&bytes, split).unwrap(), bytes, "split every {split} bytes");
    }
}

#[test]
fn output_does_not_depend_on_how_input_is_split() {
    let bytes = [
        connection_start(),
        headers(1, &request_block(SOCKET.as_bytes())),
        frame(FRAME_DATA, 0, 1, &[7; 40_000][..16_000]),
        frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]),
        grpc_body(1),
        headers(
            3,
            &[incremental(":authority", SOCKET.as_bytes()), grpc_fields()].concat(),
        ),
        headers(5, &[indexed(62), grpc_fields()].concat()),
    ]
    .concat();
    let whole = filtered(&bytes, bytes.len()).unwrap();
    for split in [1, 3, 9, 100, 16_393] {
        assert_eq!(filtered(&bytes, split).unwrap(), whole, "split every {split} bytes");
    }
    // The socket paths were replaced, so the output differs from the input.
    assert_ne!(whole, bytes);
    assert!(!whole.windows(SOCKET.len()).any(|w| w == SOCKET.as_bytes()));
}

#[test]
fn zero_length_frames_do_not_stall_the_filter() {
    let mut filter = RequestFilter::new(to_localhost);
    let mut out = Vec::new();
    filter.push(&connection_start(), &mut out).unwrap();
    filter.push(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]), &mut out).unwrap();
    filter
        .push(&headers(1, &request_block(b"localhost")), &mut out)
        .unwrap();
    filter.finish().unwrap();
    assert_eq!(
        out,
        [
            connection_start(),
            frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]),
            headers(1, &request_block(b"localhost"))
        ]
        .concat()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_reencoding_keeps_earlier_table_entries_resolvable() {
    // Stream 1 passes as it came and leaves two entries in both sides'
    // tables; stream 3 needs a new authority, so it and everything after
    // is re-encoded standalone — yet still refers to stream 1's entries.
    let first = [
        incremental(":authority", b"localhost"),
        grpc_fields(),
        incremental("x-trace", b"abc"),
    ]
    .concat();
    let second = [literal_indexed_name(1, SOCKET.as_bytes()), grpc_fields(), indexed(62)].concat();
    let third = [indexed(63), grpc_fields(), indexed(62)].concat();
    let (bytes, streams) = unary_requests(&[&first, &second, &third]);
    let (outcomes, seen, relayed) = through_relay(&bytes, &streams).await;
    relayed.unwrap();
    assert_eq!(outcomes, all_completed(&streams), "{seen:?}");
    for request in &seen {
        assert_eq!(request.authority.as_deref(), Some("localhost"));
        assert_eq!(request.headers["x-trace"], "abc");
    }
}

// --- 5. malformed input ---------------------------------------------------

/// Feeds `bytes` to a relay whose server end just drains, then half-closes;
/// returns how the relay ended.
async fn relay_garbage(bytes: Vec<u8>) -> io::Result<()> {
    let (mut client, client_wire) = duplex(PIPE);
    let (server_wire, mut server) = duplex(PIPE);
    let relay = tokio::spawn(relay(client_wire, server_wire, to_localhost));
    let drain = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = server.read_to_end(&mut sink).await;
    });
    // The relay may give up before reading everything.
    let _ = client.write_all(&bytes).await;
    let _ = client.shutdown().await;
    let result = tokio::time::timeout(PATIENCE, relay).await.unwrap();
    tokio::time::timeout(PATIENCE, drain).await.unwrap().unwrap();
    // A panic inside the relay would surface as a JoinError here.
    result.unwrap()
}

fn expect_error(result: io::Result<()>, kind: io::ErrorKind) {
    match result {
        Err(err) => assert_eq!(err.kind(), kind, "{err}"),
        Ok(()) => panic!("relay accepted malformed input"),
    }
}

#[tokio::test]
async fn empty_connection_ends_quietly() {
    relay_garbage(Vec::new()).await.unwrap();
}

#[tokio::test]
async fn wrong_preface_is_rejected() {
    let result = relay_garbage(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()).await;
    expect_error(result, io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn truncated_preface_is_rejected() {
    expect_error(
        relay_garbage(PREFACE[..10].to_vec()).await,
        io::ErrorKind::UnexpectedEof,
    );
}

#[tokio::test]
async fn truncated_frames_are_rejected() {
    let header_cut = [connection_start(), vec![0, 0, 5, 0]].concat();
    expect_error(relay_garbage(header_cut).await, io::ErrorKind::UnexpectedEof);

    let mut data_cut = [connection_start(), frame(FRAME_DATA, 0, 1, &[0; 100])].concat();
    data_cut.truncate(data_cut.len() - 90);
    expect_error(relay_garbage(data_cut).await, io::ErrorKind::UnexpectedEof);

    let mut headers_cut = [connection_start(), headers(1, &request_block(b"x"))].concat();
    headers_cut.pop();
    expect_error(relay_garbage(headers_cut).await, io::ErrorKind::UnexpectedEof);

    let block_cut = [connection_start(), frame(FRAME_HEADERS, 0, 1, &request_block(b"x"))].concat();
    expect_error(relay_garbage(block_cut).await, io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn garbage_after_preface_is_rejected() {
    // Read as frames, HTTP/1 text claims a multi-megabyte payload.
    let text = [PREFACE.as_slice(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"].concat();
    expect_error(relay_garbage(text).await, io::ErrorKind::UnexpectedEof);

    let hpack_garbage = [connection_start(), headers(1, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])].concat();
    expect_error(relay_garbage(hpack_garbage).await, io::ErrorKind::InvalidData);

    let bad_index = [connection_start(), headers(1, &indexed(70))].concat();
    expect_error(relay_garbage(bad_index).await, io::ErrorKind::InvalidData);

    let trailing_size_update = [connection_start(), headers(1, &size_update(100))].concat();
    expect_error(relay_garbage(trailing_size_update).await, io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn bad_headers_framing_is_rejected() {
    let stream_zero = [connection_start(), headers(0, &request_block(b"x"))].concat();
    expect_error(relay_garbage(stream_zero).await, io::ErrorKind::InvalidData);

    let over_padded = [
        connection_start(),
        frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, &[200, 0x83]),
    ]
    .concat();
    expect_error(relay_garbage(over_padded).await, io::ErrorKind::InvalidData);

    let short_priority = [
        connection_start(),
        frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_PRIORITY, 1, &[0, 0]),
    ]
    .concat();
    expect_error(relay_garbage(short_priority).await, io::ErrorKind::InvalidData);

    let interleaved = [
        connection_start(),
        frame(FRAME_HEADERS, 0, 1, &request_block(b"x")),
        grpc_body(1),
    ]
    .concat();
    expect_error(relay_garbage(interleaved).await, io::ErrorKind::InvalidData);

    let other_stream = [
        connection_start(),
        frame(FRAME_HEADERS, 0, 1, &request_block(b"x")),
        frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, &[]),
    ]
    .concat();
    expect_error(relay_garbage(other_stream).await, io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn oversized_blocks_are_rejected() {
    let single = [connection_start(), headers(1, &vec![0; MAX_HEADER_BLOCK + 1])].concat();
    expect_error(relay_garbage(single).await, io::ErrorKind::InvalidData);

    let mut continued = connection_start();
    continued.extend(frame(FRAME_HEADERS, 0, 1, &[0; MAX_EMITTED_PAYLOAD]));
    for _ in 0..4 {
        continued.extend(frame(FRAME_CONTINUATION, 0, 1, &[0; MAX_EMITTED_PAYLOAD]));
    }
    expect_error(relay_garbage(continued).await, io::ErrorKind::InvalidData);

    // A few hundred bytes that decode to ~400 KB through the dynamic table.
    let bomb = [incremental("x-bomb", &[b'b'; 3000]), indexed(62).repeat(128)].concat();
    let bomb = [connection_start(), headers(1, &bomb)].concat();
    expect_error(relay_garbage(bomb).await, io::ErrorKind::InvalidData);

    let huge_table = [
        connection_start(),
        headers(1, &[size_update(1 << 20), indexed(2)].concat()),
    ]
    .concat();
    expect_error(relay_garbage(huge_table).await, io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn unrelated_frames_pass_byte_for_byte() {
    let (mut client, client_wire) = duplex(PIPE);
    let (server_wire, mut server) = duplex(PIPE);
    let relay = tokio::spawn(relay(client_wire, server_wire, to_localhost));
    let bytes = [
        connection_start(),
        frame(0x6, 0, 0, b"pingpong"),               // PING
        frame(0x8, 0, 0, &[0, 1, 0, 0]),             // WINDOW_UPDATE
        frame(0xfa, 0x5a, 9, b"unknown frame type"), // extension frame
        frame(FRAME_DATA, 0x8, 1, &[2, b'h', b'i', 0, 0]),
    ]
    .concat();
    client.write_all(&bytes).await.unwrap();
    client.shutdown().await.unwrap();
    let mut relayed = Vec::new();
    tokio::time::timeout(PATIENCE, server.read_to_end(&mut relayed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(relayed, bytes);
    drop(server);
    tokio::time::timeout(PATIENCE, relay).await.unwrap().unwrap().unwrap();
}
