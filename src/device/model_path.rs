//! Where the daemon's model is found when no path is given: the bundled
//! `models/student-p.onnx`, looked up beside the binary, in its installed
//! share folder, in the source tree it was built from, or in the working
//! directory. Every command that loads a model (`run`, `demo`, `detect`,
//! `bench`, `check-config`) resolves it the same way.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The model to use: the flag, the config, else the bundled
/// `models/student-p.onnx` next to the binary, in its share folder, in
/// the source tree it was built from, or in the working directory.
pub fn resolve_model(flag: Option<&Path>, config: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = flag.or(config) {
        return Ok(p.to_path_buf());
    }
    let name = Path::new("models/student-p.onnx");
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
            candidates.push(dir.join("../share/irdistill").join(name));
            // target/release/irdistill → the repository root
            candidates.push(dir.join("../..").join(name));
        }
    }
    candidates.push(name.to_path_buf());
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        // `target/release/../../models/…` reads better resolved
        return Ok(std::fs::canonicalize(found).unwrap_or_else(|_| found.clone()));
    }
    bail!(
        "no model: pass --model M.onnx (or set [model] path in the config); looked for {}.\n\
         The bundled model is models/student-p.onnx in the repository (installed as \
         /usr/share/irdistill/models/student-p.onnx). To make one, train and export a student:\n    \
         cargo run --release --bin trainer -- train --data synth --model student-p --out runs/student\n    \
         cargo run --release --bin trainer -- export --weights runs/student/best.safetensors --out models/student-p.onnx\n\
         Any ultralytics YOLOv8 detection ONNX works too.",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
