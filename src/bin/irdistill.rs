//! `irdistill`: the device runtime (camera daemon). Built without candle:
//! `cargo build --release --no-default-features --bin irdistill`.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "irdistill",
    version,
    about = "RGB camera daemon running a distilled RGB+IR detector"
)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "irdistill {}: the camera daemon is not built yet; see `trainer --help`",
        env!("CARGO_PKG_VERSION")
    );
}
