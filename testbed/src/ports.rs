//! Free loopback TCP ports, for whoever wants a port number rather than a
//! listener: programs that bind their own (kube-apiserver and etcd, OpenBao,
//! the provider's health server) and addresses where nothing listens.
//!
//! Each port is one the kernel handed out for `127.0.0.1:0`, whose listener
//! is closed again before the number is returned: free at that moment, so a
//! program started at once gets it unless another process takes it first
//! (which the kernel's round of ephemeral ports makes rare). Where a test
//! needs a listener, it binds `127.0.0.1:0` itself and keeps it.

use std::io;
use std::net::TcpListener;

/// A free loopback port.
pub fn free_port() -> io::Result<u16> {
    let [port] = free_ports()?;
    Ok(port)
}

/// `N` distinct free loopback ports (their listeners are all held until the
/// last port is picked, so no two are the same).
pub fn free_ports<const N: usize>() -> io::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// A free loopback port `p` with `p + 1` free too (OpenBao's dev mode binds
/// its cluster listener on the next port up).
pub fn free_port_pair() -> io::Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free pair of loopback ports found",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_held_together_are_distinct() {
        let ports: [u16; 3] = free_ports().unwrap();
        assert!(
            ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2],
            "{ports:?}"
        );
        assert_ne!(free_port().unwrap(), 0);
        assert!(free_port_pair().unwrap() < u16::MAX);
    }
}
