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

/// `edgeforge inspect --tensors | head`: once the reader closes the pipe, `println!` panics with "failed
/// printing to stdout: Broken pipe" (Rust ignores SIGPIPE). The output nobody reads is not an error: exit 0
/// quietly, as a SIGPIPE-killed Unix tool would stop, instead of printing a panic and exiting 101. Every
/// other panic keeps the default report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied()).unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() -> std::process::ExitCode {
    quiet_on_closed_stdout();
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
