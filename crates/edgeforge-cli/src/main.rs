//! The `edgeforge` binary: parse arguments, call the libraries, print, map errors to exit codes
//! (0 ok, 1 a gate or check failed, 2 bad input, 3 internal or environment error).

mod cli;
mod commands;
mod exit;
mod progress;
mod recipe_cmds;
mod sensitivity_cmd;
mod sweep_cmd;
mod verify_cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    progress::install_download_bar();
    match commands::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            for line in failure.message().lines() {
                eprintln!("edgeforge: error: {line}");
            }
            std::process::ExitCode::from(failure.code())
        }
    }
}
