//! One accepted driver connection, routed by its first request.
//!
//! Most drivers (v1.6+) send `:authority: localhost`, which tonic accepts as
//! it is; only older drivers need the [`authority`](super::authority) relay.
//! So the first header block is read (and kept), and a connection whose
//! authority is already valid goes straight to tonic with those bytes
//! replayed in front of the socket — no relay task, no second copy of every
//! byte, no HPACK work per request. A gRPC channel uses one authority for
//! all its requests, so the first request decides for the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::UnixStream;

use super::authority;

/// How long a client may take to send its first request before the
/// connection is dropped (a stuck or idle client must not hold a task).
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A stream that first yields bytes already read from it.
pub struct Replayed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Replayed<S> {
    /// `inner`, with `prefix` read again before it.
    pub fn new(prefix: Vec<u8>, inner: S) -> Replayed<S> {
        Replayed { prefix, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What tonic serves: the socket itself, or the relay's end of a pipe.
pub enum DriverConn {
    /// The authority was valid: the socket, with the bytes read replayed.
    Direct(Replayed<UnixStream>),
    /// The authority needs rewriting: served through the relay.
    Relayed(DuplexStream),
}

impl tonic::transport::server::Connected for DriverConn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for DriverConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DriverConn::Direct(s) => Pin::new(s).poll_read(cx, buf),
            DriverConn::Relayed(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DriverConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DriverConn::Direct(s) => Pin::new(s).poll_write(cx, buf),
            DriverConn::Relayed(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DriverConn::Direct(s) => Pin::new(s).poll_flush(cx),
            DriverConn::Relayed(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DriverConn::Direct(s) => Pin::new(s).poll_shutdown(cx),
            DriverConn::Relayed(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Reads the start of a connection up to its first request's headers and
/// decides how to serve it. `None`: the client left or spoke no HTTP/2 it
/// could be served with (logged at debug).
pub async fn route(mut stream: UnixStream) -> Option<DriverConn> {
    let peeked = tokio::time::timeout(FIRST_REQUEST_TIMEOUT, authority::first_authority(&mut stream)).await;
    let (seen, authority) = match peeked {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "driver connection closed before its first request");
            return None;
        }
        Err(_) => {
            tracing::debug!("driver connection sent no request within {FIRST_REQUEST_TIMEOUT:?}");
            return None;
        }
    };
    let replayed = Replayed::new(seen, stream);
    match authority {
        Some(a) if authority::to_localhost(&a).is_none() => Some(DriverConn::Direct(replayed)),
        _ => {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                if let Err(e) = authority::relay(replayed, ours, authority::to_localhost).await {
                    tracing::debug!(error = %e, "driver connection ended with an error");
                }
            });
            Some(DriverConn::Relayed(theirs))
        }
    }
}
