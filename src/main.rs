//! The `ferroclone` binary: parse, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use ferroclone::cli::{self, Cli, Exit};
use ferroclone::engine::progress::request_cancel;

/// The static (musl) build uses mimalloc: with musl's own allocator, restore took 36 % and
/// save 6 % longer than the glibc build (docs/ARCHITECTURE.md, "Static binary").
#[cfg(target_env = "musl")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" fn on_sigint(_: libc::c_int) {
    request_cancel();
}

fn install_sigint() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_sigint();
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let code = cli::exit_code(&err);
            if code != Exit::Ok {
                eprintln!("ferroclone: error: {err:#}");
            }
            code
        }
    };
    ExitCode::from(code as u8)
}
