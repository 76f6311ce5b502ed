//! `meta.json`: the small metadata file of the paired YOLO-txt layout.
//!
//! ```json
//! {
//!   "names": ["person", "car"],
//!   "images": { "000000": { "condition": "night", "split": "train" } }
//! }
//! ```
//! Both parts are optional for user data: without `names` the reader looks
//! for `classes.txt` (one name per line); an image missing from `images` has
//! no known condition and a split derived from a hash of its name.

use crate::shared::condition::{Condition, Split};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const META_FILE: &str = "meta.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    #[serde(default)]
    pub names: Vec<String>,
    /// Written by `trainer synth`: the generator's arguments, for provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<serde_json::Value>,
    #[serde(default)]
    pub images: BTreeMap<String, ImageMeta>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
}

impl DatasetMeta {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))
    }

    /// Writes atomically (temp file + rename) so an interrupted run never
    /// leaves a truncated metadata file behind.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}
