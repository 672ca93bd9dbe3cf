//! `routeservice`: the server (`serve`) and the command line for people.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    routeservice::cli::run(routeservice::cli::Cli::parse())
}
