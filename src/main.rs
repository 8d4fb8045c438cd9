//! `vault-csi-provider`: parse flags into a typed configuration, set up
//! logging, serve until SIGTERM or SIGINT, map the outcome to an exit code.
//! The wiring is in the library's `app` module; the `mount` and `check`
//! subcommands in its `cli` module.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use vault_csi_provider::app::{self, ProviderConfig, RunError};
use vault_csi_provider::cli::{self, usage, usage_error, EXIT_USAGE};
use vault_csi_provider::config::{Env, Flags};
use vault_csi_provider::logging;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = cli::run_subcommand(&args) {
        return code;
    }
    let flags = match Flags::parse_args(args) {
        Ok(f) => f,
        Err(e) => return usage_error(e, None),
    };
    // The environment is read once, here; everything after uses this snapshot.
    let env = Env::from_process();
    let config = match ProviderConfig::from_flags(&flags, &env) {
        Ok(c) => c,
        Err(e) => return usage(None, &e.to_string()),
    };
    let logs = match logging::init(flags.effective_log_level(), flags.log_format) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vault-csi-provider: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One thread serves every socket, Vault connection and background job:
    // a mount is a few socket reads and writes around a Vault request, and
    // handing it between worker threads cost more CPU than the mount itself
    // (docs/architecture.md, "Threads"). Disk writes go to the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vault-csi-provider: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(config, logs, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("vault-csi-provider: {e}");
            match e {
                RunError::Kube(_) | RunError::Bind { .. } => ExitCode::from(EXIT_USAGE),
                RunError::Serve(_) => ExitCode::FAILURE,
            }
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining in-flight mounts"),
        _ = int.recv() => tracing::info!("SIGINT: draining in-flight mounts"),
    }
}
