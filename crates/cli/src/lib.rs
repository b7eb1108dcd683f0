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

use anyhow::{Result, bail};
use clap::Parser;

pub use backend::{backend_name, default_shards, device, tune_allocator};

use crate::args::Cli;

/// Parses `args` (the first is the program name) and runs the command.
pub fn run_args<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
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
        Err(e) => bail!("{}", e.to_string().trim_end()),
    };
    commands::run(cli)
}

/// The binary's entry point: runs the process arguments, prints any error with its causes,
/// and returns a non-zero exit code on failure.
pub fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
