//! The `sequin` command (library part, so that tests can drive it in-process): fine-tune,
//! evaluate and run Hugging Face sequence classifiers.
//!
//! - `args`: clap's structs (the command line and its help), nothing else;
//! - `commands/`: one module per command;
//! - `backend`: the only place a backend is picked, by Cargo feature: `cpu` (burn's flex, the
//!   default), `wgpu` or `cuda`.
//!
//! Domain rules (defaults, bounds, option merging) live in the libraries; this crate maps
//! flags onto them.

mod args;
mod backend;
mod commands;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};

pub use backend::{backend_name, default_shards, device, tune_allocator};

use crate::args::Cli;

/// Parses `args` (the first is the program name) and runs the command.
pub fn run_args<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let parsed = Cli::command()
        .version(version())
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            print!("{e}");
            return Ok(());
        }
        // (clap's message starts with its own `error: `; ours adds one.)
        // One line: clap's first, which says what is wrong, and a pointer to the help.
        Err(e) => return Err(UsageError(format!("{} (see --help)", clap_line(&e))).into()),
    };
    commands::run(cli)
}

/// The first line of a clap error (what is wrong), without clap's own `error: `.
pub(crate) fn clap_line(e: &clap::Error) -> String {
    let message = e.to_string();
    let first = message.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_string()
}

/// `sequin --version`: the version and the backend of this build.
fn version() -> &'static str {
    let v = format!(
        "{} (backend: {}; int8 kernel: {}; bf16 kernel: {})",
        env!("CARGO_PKG_VERSION"),
        backend_name(),
        sequin_encoders::quant::int8_kernel().name(),
        sequin_encoders::quant::bf16_kernel().name()
    );
    Box::leak(v.into_boxed_str())
}

/// A command line that cannot be parsed: an unknown flag, a missing or malformed value.
/// Exits with [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code of failed work: bad data, a bad model, a file that cannot be read or written.
pub const EXIT_FAILURE: u8 = 1;
/// The exit code of a command line that cannot be parsed ([`UsageError`]).
pub const EXIT_USAGE: u8 = 2;

/// The exit code for an error: [`EXIT_USAGE`] for a [`UsageError`], else [`EXIT_FAILURE`].
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<UsageError>() {
        Some(_) => EXIT_USAGE,
        None => EXIT_FAILURE,
    }
}

/// An error and its causes on one line, each cause once: a library error whose message already
/// quotes its source (`{path}: {source}`) does not get the source repeated after it.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// The binary's entry point: runs the process arguments, prints any error with its causes on
/// one line, and exits with 1 for failed work or 2 for bad usage, as the README documents.
pub fn main() -> ExitCode {
    tune_allocator();
    match run_args(std::env::args_os()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}
