//! `trainer`: the workstation half (generator, evaluation, training).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "trainer", version, about = "irdistill workstation tools: synthetic data, evaluation, training")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
