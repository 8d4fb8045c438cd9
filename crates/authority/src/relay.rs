//! [`relay`]: a [`RequestFilter`](crate::RequestFilter) between two
//! streams, for clients that impersonate an old driver and for fuzzing.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{AuthorityRewrite, RequestFilter, FRAME_HEADER_LEN, MAX_EMITTED_PAYLOAD};

/// Relays one HTTP/2 connection from `client` to `server`, rewriting
/// `:authority` with `rewrite` (through a [`RequestFilter`]).
///
/// Used in front of a client that impersonates an old driver (with a rewrite
/// that forces a socket path) and by the fuzz target. Returns `Ok(())` when
/// the connection ends normally (either peer closing it, at any time), and an
/// error when the client sends something that is not valid HTTP/2 framing or
/// HPACK, or a transport fails. Both write directions are shut down before
/// returning.
pub async fn relay<C, S>(client: C, server: S, rewrite: AuthorityRewrite) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (client_rx, mut client_tx) = tokio::io::split(client);
    let (mut server_rx, mut server_tx) = tokio::io::split(server);

    let outcome = {
        let upstream = async {
            forward_requests(client_rx, &mut server_tx, rewrite).await?;
            // The client is done sending; let the server see EOF so it winds
            // the connection down, while its last responses keep flowing.
            server_tx.shutdown().await.map_err(Failure::ServerWrite)
        };
        let downstream = forward_responses(&mut server_rx, &mut client_tx);
        tokio::pin!(upstream);
        tokio::pin!(downstream);

        let first = tokio::select! {
            up = &mut upstream => Finished::Upstream(up),
            down = &mut downstream => Finished::Downstream(down),
        };
        match first {
            Finished::Upstream(Ok(())) => downstream.await,
            // The server stopped reading, which means it is closing; whatever
            // it already wrote (a GOAWAY, final responses) still belongs to
            // the client, so drain it instead of cutting it off.
            Finished::Upstream(Err(Failure::ServerWrite(err))) => {
                tracing::debug!(error = %err, "HTTP/2 server stopped reading; draining its output");
                downstream.await
            }
            Finished::Upstream(Err(failure)) => Err(failure),
            // An HTTP/2 server that closed its side is gone for good, so
            // nothing the client still sends could be delivered.
            Finished::Downstream(result) => result,
        }
    };

    // Best effort: a peer that already vanished makes these fail, and the
    // outcome of the relay is already decided.
    let _ = server_tx.shutdown().await;
    let _ = client_tx.shutdown().await;

    match outcome {
        Ok(()) => Ok(()),
        // A client may close an HTTP/2 connection whenever it likes; output
        // the server had in flight at that moment has nowhere to go, and
        // that is not a fault of either side.
        Err(Failure::ClientWrite(err)) if is_hang_up(&err) => {
            tracing::debug!(error = %err, "HTTP/2 client hung up");
            Ok(())
        }
        Err(failure) => Err(failure.into_inner()),
    }
}

enum Finished {
    Upstream(Result<(), Failure>),
    Downstream(Result<(), Failure>),
}

/// Where a direction failed; the side decides whether the failure is just a
/// peer closing or a real error.
enum Failure {
    /// Reading from the client failed, or what it sent is not valid HTTP/2.
    Client(io::Error),
    ServerWrite(io::Error),
    ServerRead(io::Error),
    ClientWrite(io::Error),
}

impl Failure {
    fn into_inner(self) -> io::Error {
        match self {
            Failure::Client(err) | Failure::ServerWrite(err) | Failure::ServerRead(err) | Failure::ClientWrite(err) => {
                err
            }
        }
    }
}

fn is_hang_up(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

/// Server-to-client direction: bytes are copied untouched.
async fn forward_responses<R, W>(server: &mut R, client: &mut W) -> Result<(), Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; FRAME_HEADER_LEN + MAX_EMITTED_PAYLOAD];
    loop {
        let n = server.read(&mut buf).await.map_err(Failure::ServerRead)?;
        if n == 0 {
            return client.shutdown().await.map_err(Failure::ClientWrite);
        }
        let written = client.write_all(&buf[..n]).await;
        written.map_err(Failure::ClientWrite)?;
        client.flush().await.map_err(Failure::ClientWrite)?;
    }
}

/// Client-to-server direction: what the client sends, through a
/// [`RequestFilter`], until the client closes.
async fn forward_requests<R, W>(mut client: R, server: &mut W, rewrite: AuthorityRewrite) -> Result<(), Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut filter = RequestFilter::new(rewrite);
    let mut buf = vec![0u8; FRAME_HEADER_LEN + MAX_EMITTED_PAYLOAD];
    let mut out = Vec::with_capacity(buf.len());
    loop {
        let n = client.read(&mut buf).await.map_err(Failure::Client)?;
        if n == 0 {
            return filter.finish().map_err(Failure::Client);
        }
        filter.push(&buf[..n], &mut out).map_err(Failure::Client)?;
        if !out.is_empty() {
            server.write_all(&out).await.map_err(Failure::ServerWrite)?;
            server.flush().await.map_err(Failure::ServerWrite)?;
            out.clear();
        }
    }
}
