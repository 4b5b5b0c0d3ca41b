//! The `ferroclone` binary: parse, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use ferroclone::cli::{self, Cli, Exit, UsageError};
use ferroclone::engine::progress::request_cancel;
use ferroclone::engine::verify::Mismatch;
use ferroclone::engine::Interrupted;
use ferroclone::image::ImageError;
use ferroclone::import::ImportError;

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

fn exit_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if cause.downcast_ref::<Interrupted>().is_some() {
            return Exit::Interrupted;
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return Exit::Usage;
        }
        if cause.downcast_ref::<Mismatch>().is_some() {
            return Exit::Mismatch;
        }
        if let Some(e) = cause.downcast_ref::<ImageError>() {
            if e.is_damage() {
                return Exit::Mismatch;
            }
        }
        if let Some(e) = cause.downcast_ref::<ImportError>() {
            if e.is_damage() {
                return Exit::Mismatch;
            }
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Exit::Ok;
            }
        }
    }
    Exit::Failed
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_sigint();
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let code = exit_for(&err);
            if code != Exit::Ok {
                eprintln!("ferroclone: error: {err:#}");
            }
            code
        }
    };
    ExitCode::from(code as u8)
}
