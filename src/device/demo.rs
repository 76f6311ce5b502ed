//! What turns a daemon run into `irdistill demo`: the synthetic camera's
//! day/night/fog scene schedule, about one snapshot per scene, and the
//! files a demo owns in its output folder (replaced by the next demo;
//! nothing else there is touched). The binary keeps the flags and the
//! printing.

use std::path::Path;

use anyhow::{Context, Result};

use crate::device::config::Config;
use crate::shared::condition::Condition;

/// Scenes each condition gets; the frames are split evenly over them.
pub const SCENES_PER_CONDITION: u32 = 4;

/// Frames each scene is held for: the run covers 3 × 4 scenes.
pub fn hold_frames(frames: u64) -> u32 {
    let scenes = 3 * u64::from(SCENES_PER_CONDITION);
    (frames / scenes).clamp(1, u64::from(u32::MAX)) as u32
}

/// Sets the synthetic camera of `cfg` to show every condition in equal
/// parts over `frames` frames (scenes from `seed`), with about one
/// snapshot per scene; validates the result.
pub fn schedule_scenes(cfg: &mut Config, frames: u64, seed: u64) -> Result<()> {
    let hold = hold_frames(frames);
    let syn = &mut cfg.source.synthetic;
    syn.seed = seed;
    syn.conditions = Condition::ALL.iter().map(|c| c.to_string()).collect();
    syn.hold_frames = hold;
    syn.scenes_per_condition = SCENES_PER_CONDITION;
    // About one snapshot per scene, whatever the speed.
    cfg.snapshots.min_interval_ms = 0;
    cfg.snapshots.min_interval_frames = u64::from(hold);
    cfg.validate().context("demo configuration")?;
    Ok(())
}

/// Removes what an earlier demo wrote into `out` (only the demo's files).
pub fn clear_outputs(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {}: cannot create", out.display()))?;
    for name in ["detections.jsonl", "events.jsonl", "summary.json"] {
        let path = out.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    let snaps = out.join("snapshots");
    if let Ok(entries) = std::fs::read_dir(&snaps) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("snap-") && name.ends_with(".jpg") {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    Ok(())
}
