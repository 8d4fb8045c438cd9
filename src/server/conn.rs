//! One accepted driver connection, as tonic sees it.
//!
//! The server side of HTTP/2 speaks first: tonic writes its SETTINGS as soon
//! as it has the connection, and grpc-go and gRPC C-core (every real driver)
//! wait for them before sending any request. So nothing may stand between
//! tonic and the socket's write half, and nothing may wait for the client
//! before tonic starts: writes go straight to the socket, and reads pass
//! through the [`RequestFilter`] inline, in `poll_read`, which fixes the
//! `:authority` of old drivers' requests (see [`authority`](super::authority))
//! and otherwise hands tonic the client's bytes as they came. No task, pipe or
//! extra hop per connection.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

use authority_filter::{self as authority, RequestFilter};

/// How long a client may take to send the HTTP/2 connection preface before
/// the connection is dropped, so a stuck client cannot hold a connection
/// forever. Every HTTP/2 client sends it right after connecting.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read from the socket per `poll_read` while filtering: one frame
/// header and the largest payload HTTP/2 allows by default.
const READ_CHUNK: usize = 9 + 16_384;

/// A driver connection: the socket, with the client's bytes filtered on their
/// way to the server.
pub struct DriverConn {
    socket: UnixStream,
    filter: RequestFilter,
    /// Scratch space for reads from the socket.
    chunk: Box<[u8]>,
    /// Filtered bytes the server has not read yet, from `ready_at` on.
    ready: Vec<u8>,
    ready_at: usize,
    /// Running until the preface has arrived.
    preface_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    preface_timeout: Duration,
    /// The client closed its write side.
    eof: bool,
}

impl DriverConn {
    /// Wraps an accepted connection; nothing is read or written yet.
    pub fn new(socket: UnixStream) -> DriverConn {
        DriverConn::with_preface_timeout(socket, PREFACE_TIMEOUT)
    }

    /// The same, with another bound on the wait for the client's preface.
    pub fn with_preface_timeout(socket: UnixStream, timeout: Duration) -> DriverConn {
        DriverConn {
            socket,
            filter: RequestFilter::new(authority::to_localhost),
            chunk: vec![0u8; READ_CHUNK].into_boxed_slice(),
            ready: Vec::new(),
            ready_at: 0,
            preface_deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            preface_timeout: timeout,
            eof: false,
        }
    }
}

impl tonic::transport::server::Connected for DriverConn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for DriverConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_at < this.ready.len() {
                let n = (this.ready.len() - this.ready_at).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if let Some(deadline) = this.preface_deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no HTTP/2 connection preface within {:?}", this.preface_timeout),
                    )));
                }
            }
            let mut chunk = ReadBuf::new(&mut this.chunk);
            ready!(Pin::new(&mut this.socket).poll_read(cx, &mut chunk))?;
            let read = chunk.filled();
            if read.is_empty() {
                this.eof = true;
                if let Err(e) = this.filter.finish() {
                    // The server sees a plain end of stream either way; this
                    // only says why the connection ended mid-frame.
                    tracing::debug!(error = %e, "driver connection closed mid-frame");
                }
                continue;
            }
            this.filter.push(read, &mut this.ready)?;
            if this.filter.preface_done() {
                this.preface_deadline = None;
            }
        }
    }
}

impl AsyncWrite for DriverConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_sends_the_preface_is_dropped() {
        let (ours, _client) = UnixStream::pair().unwrap();
        let mut conn = DriverConn::with_preface_timeout(ours, Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        let err = conn.read(&mut [0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test]
    async fn writes_go_out_before_the_client_speaks_and_reads_pass_through() {
        let (ours, mut client) = UnixStream::pair().unwrap();
        let mut conn = DriverConn::new(ours);
        // The server writes first, with nothing read yet.
        conn.write_all(b"server settings").await.unwrap();
        let mut got = [0u8; 15];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"server settings");

        let ping = [0u8, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        client.write_all(&[PREFACE, &ping].concat()).await.unwrap();
        client.shutdown().await.unwrap();
        let mut seen = Vec::new();
        conn.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, [PREFACE, &ping].concat());
    }

    #[tokio::test]
    async fn a_client_that_speaks_no_http2_gets_an_error() {
        let (ours, mut client) = UnixStream::pair().unwrap();
        let mut conn = DriverConn::new(ours);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let err = conn.read(&mut [0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
