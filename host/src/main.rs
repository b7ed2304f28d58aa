//! The `backendenc` command line: parses arguments, reads passphrases and
//! streams, and calls the library. Errors are one line on stderr and a
//! non-zero exit status.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backendenc: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
