//! Log setup, with a level that can be changed while the provider runs (from
//! the health port), so an operator can turn on debug logs on one node
//! without restarting the pod and losing its caches.

use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer as _, Registry};

use clap::ValueEnum;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Log verbosity, named as the incumbent names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Details for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Problems that do not fail a mount.
    Warn,
    /// Failures only.
    Error,
    /// Nothing.
    Off,
}

impl LogLevel {
    /// The matching `tracing` filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Off => "off",
        }
    }
}

/// Parses a log level name as `-log-level` accepts it.
pub fn parse_log_level(s: &str) -> Result<LogLevel, String> {
    match s.to_ascii_lowercase().as_str() {
        "trace" => Ok(LogLevel::Trace),
        "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" | "warning" => Ok(LogLevel::Warn),
        "error" | "err" => Ok(LogLevel::Error),
        "off" => Ok(LogLevel::Off),
        _ => Err(format!(
            "unknown log level {s:?}: use trace, debug, info, warn, error or off"
        )),
    }
}

/// Changes the log level of the running process.
pub trait LogControl: Send + Sync {
    /// Switches to `level`.
    fn set_level(&self, level: LogLevel) -> Result<(), String>;
    /// The level in force.
    fn level(&self) -> LogLevel;
}

struct Reloadable {
    handle: reload::Handle<EnvFilter, Registry>,
    current: std::sync::Mutex<LogLevel>,
}

impl LogControl for Reloadable {
    fn set_level(&self, level: LogLevel) -> Result<(), String> {
        self.handle
            .reload(EnvFilter::new(level.directive()))
            .map_err(|e| format!("cannot change the log level: {e}"))?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = level;
        Ok(())
    }

    fn level(&self) -> LogLevel {
        *self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Installs the global subscriber writing to stderr and returns the control
/// of its level. Fails if a subscriber is already installed.
pub fn init(level: LogLevel, format: LogFormat) -> Result<Arc<dyn LogControl>, String> {
    let (filter, handle) = reload::Layer::new(EnvFilter::new(level.directive()));
    let output = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => fmt::layer().with_ansi(false).with_writer(std::io::stderr).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(Arc::new(Reloadable {
        handle,
        current: std::sync::Mutex::new(level),
    }))
}
