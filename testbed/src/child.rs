//! Child processes that do not outlive the test process: OpenBao servers,
//! providers and real gRPC clients are killed when the test ends normally or
//! panics (`kill_on_drop`), and, through the kernel's parent-death signal,
//! also when the test process is killed outright (a CI timeout, `kill -9`),
//! which runs no destructor. `setpriv --pdeathsig KILL` (util-linux) sets
//! that signal and then executes the program in place, so the child keeps
//! its own pid. The signal follows the thread that started the child: a
//! test's runtime threads live as long as the test. (The shared control
//! plane outlives single tests, so it has a watchdog of its own, see
//! [`crate::kubernetes::control_plane`].)

use std::ffi::OsStr;
use std::path::Path;

/// `setpriv`, where util-linux installed it.
const SETPRIV: &str = "/usr/bin/setpriv";

/// A command for `program` that dies with this process where the machine
/// can arrange it, and is a plain command where it cannot.
pub fn std_command(program: impl AsRef<OsStr>) -> std::process::Command {
    if Path::new(SETPRIV).is_file() {
        let mut cmd = std::process::Command::new(SETPRIV);
        cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
        cmd
    } else {
        std::process::Command::new(program)
    }
}

/// [`std_command`] for tokio.
pub fn command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    std_command(program).into()
}
