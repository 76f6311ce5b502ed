//! JSON lines to stdout or a file: one line per processed frame, flushed
//! per line so a reader (or a crash) sees whole frames.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

pub struct JsonlWriter {
    out: Box<dyn Write + Send>,
    target: String,
}

impl JsonlWriter {
    /// `-` is stdout; a path is opened for appending (created if missing).
    pub fn open(target: &str) -> Result<Self> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            let path = Path::new(target);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| {
                    format!("--jsonl {}: cannot open for appending", path.display())
                })?;
            Box::new(BufWriter::new(file))
        };
        Ok(Self {
            out,
            target: target.to_string(),
        })
    }

    pub fn write_line(&mut self, json: &str) -> Result<()> {
        self.out
            .write_all(json.as_bytes())
            .and_then(|_| self.out.write_all(b"\n"))
            .and_then(|_| self.out.flush())
            .with_context(|| format!("writing JSON lines to {}", self.target))
    }
}
