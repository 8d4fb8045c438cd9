//! The `mount` and `check` subcommands, for people debugging a
//! SecretProviderClass from a laptop: `check` validates files offline with
//! the provider's own parser, `mount` performs a real Mount with the
//! provider's own mount logic and writes the files as the driver would.
//!
//! A first argument of `mount` or `check` selects a subcommand; anything
//! else is the provider's own flags, so existing DaemonSets, which pass only
//! `-flag=value` arguments, keep serving exactly as before.

pub mod check;
pub mod mount;
pub mod spc_file;
pub mod writer;

use std::process::ExitCode;

/// Exit code when a command ran and found problems (a failed mount, an
/// invalid SecretProviderClass).
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit code for unusable arguments (BSD `EX_USAGE`), as for the server.
pub const EXIT_USAGE: u8 = 64;

/// Runs the subcommand `args[1]` names, if it names one; `None` means
/// "serve", the behaviour without a subcommand.
pub fn run_subcommand(args: &[String]) -> Option<ExitCode> {
    let (name, rest) = match args.get(1).map(String::as_str) {
        Some(n @ ("mount" | "check")) => (n, &args[2..]),
        _ => return None,
    };
    // clap names the command after argv[0]; keep the subcommand in it so
    // usage lines read `vault-csi-provider mount ...`.
    let argv = std::iter::once(format!("vault-csi-provider {name}")).chain(rest.iter().cloned());
    let argv = crate::config::go_style_args(argv);
    Some(match name {
        "mount" => mount::main(argv),
        _ => check::main(argv),
    })
}

/// One line on stderr, naming the binary (and `command`, a subcommand),
/// and [`EXIT_USAGE`]: how unusable arguments or configuration end.
pub fn usage(command: Option<&str>, message: &str) -> ExitCode {
    match command {
        Some(c) => eprintln!("vault-csi-provider {c}: {message}"),
        None => eprintln!("vault-csi-provider: {message}"),
    }
    ExitCode::from(EXIT_USAGE)
}

/// Reports a clap parse failure, for the server and the subcommands alike:
/// help and version to stdout with success, an error as one line (with the
/// arguments clap names on the next) and [`EXIT_USAGE`].
pub fn usage_error(e: clap::Error, command: Option<&str>) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = e.to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut first = lines.next().unwrap_or("bad arguments").to_string();
    // "required arguments were not provided:" names them on the next line.
    if first.ends_with(':') {
        if let Some(next) = lines.next() {
            first = format!("{first} {next}");
        }
    }
    usage(command, first.trim_start_matches("error: "))
}
