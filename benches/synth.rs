//! Generator speed: `cargo bench --bench synth [-- PAIRS]`.
//!
//! Prints pairs/s for in-memory generation (all cores), generation plus the
//! on-disk write of `trainer synth`, and one core's time per pair. The
//! target: 1000 pairs at 320x256 in at most 10 s on the 2-core dev machine.

use irdistill::shared::synth::{writer, Generator, SynthConfig};
use rayon::prelude::*;
use std::time::Instant;

fn main() {
    let pairs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let gen = Generator::new(SynthConfig::default(), 1).expect("default config");
    // warm-up (lookup tables, page faults)
    (0..8).into_par_iter().for_each(|i| drop(gen.pair(i)));

    let start = Instant::now();
    let objects: usize = (0..pairs)
        .into_par_iter()
        .map(|i| gen.pair(i).pair.labels.len())
        .sum();
    let in_memory_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    for i in 0..50 {
        drop(gen.pair(i));
    }
    let one_core_ms = start.elapsed().as_secs_f64() * 1000.0 / 50.0;

    let dir = tempfile::tempdir().expect("temp dir");
    let start = Instant::now();
    writer::write_dataset(&gen, dir.path(), pairs, false).expect("write");
    let write_s = start.elapsed().as_secs_f64();

    println!("threads: {}", rayon::current_num_threads());
    println!("in memory : {pairs} pairs 320x256 in {in_memory_s:.2} s ({:.0} pairs/s, {objects} objects)", pairs as f64 / in_memory_s);
    println!(
        "to disk   : {pairs} pairs 320x256 in {write_s:.2} s ({:.0} pairs/s)",
        pairs as f64 / write_s
    );
    println!("one core  : {one_core_ms:.2} ms per pair");
    println!(
        "{}",
        serde_json::json!({"pairs": pairs, "in_memory_s": in_memory_s, "write_s": write_s, "one_core_ms_per_pair": one_core_ms})
    );
}
