//! The HTTP/2 `:authority` relay in front of the gRPC server: arbitrary
//! bytes from a "driver" must make it finish (with an error or not), never
//! panic or hang, and whatever it passes on must start with the client
//! preface when the input did.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use authority_filter as authority;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

thread_local! {
    static RUNTIME: Option<tokio::runtime::Runtime> =
        tokio::runtime::Builder::new_current_thread().enable_time().build().ok();
}

fuzz_target!(|data: &[u8]| {
    RUNTIME.with(|rt| {
        let Some(rt) = rt else { return };
        rt.block_on(async {
            let (mut driver, relay_client_end) = tokio::io::duplex(1 << 16);
            let (relay_server_end, mut server) = tokio::io::duplex(1 << 16);
            let relay = authority::relay(relay_client_end, relay_server_end, authority::to_localhost);
            let feed = async {
                let _ = driver.write_all(data).await;
                let _ = driver.shutdown().await;
                let mut answers = Vec::new();
                let _ = driver.read_to_end(&mut answers).await;
            };
            let drain = async {
                let mut forwarded = Vec::new();
                let _ = server.read_to_end(&mut forwarded).await;
                let _ = server.shutdown().await;
                forwarded
            };
            let outcome =
                tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(relay, feed, drain) }).await;
            let Ok((result, (), forwarded)) = outcome else {
                panic!("the relay did not finish within 10 s");
            };
            if result.is_ok() && data.starts_with(PREFACE) {
                assert!(forwarded.starts_with(PREFACE), "the preface was not passed on");
            }
        });
    });
});
