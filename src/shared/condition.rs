//! Imaging condition of a frame and the dataset split it belongs to.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The lighting / weather a frame was taken in. Evaluation reports metrics
/// per condition; `adverse` in reports means night and fog together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    Day,
    Night,
    Fog,
}

impl Condition {
    pub const ALL: [Condition; 3] = [Condition::Day, Condition::Night, Condition::Fog];

    pub fn as_str(&self) -> &'static str {
        match self {
            Condition::Day => "day",
            Condition::Night => "night",
            Condition::Fog => "fog",
        }
    }

    /// Night and fog: the conditions where the thermal image matters most.
    pub fn is_adverse(&self) -> bool {
        !matches!(self, Condition::Day)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Condition {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "day" => Ok(Condition::Day),
            "night" => Ok(Condition::Night),
            "fog" => Ok(Condition::Fog),
            other => anyhow::bail!("unknown condition '{other}' (expected day, night or fog)"),
        }
    }
}

/// Parses a comma-separated list such as `day,night,fog`.
pub fn parse_conditions(list: &str) -> anyhow::Result<Vec<Condition>> {
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.trim().is_empty()) {
        let c: Condition = part.parse()?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    anyhow::ensure!(!out.is_empty(), "empty condition list '{list}'");
    Ok(out)
}

/// Which part of a dataset a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn as_str(&self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Deterministic 80/10/10 split from a 64-bit hash of the sample's
    /// identity, for data that carries no split of its own.
    pub fn from_hash(h: u64) -> Split {
        match h % 10 {
            0 => Split::Val,
            1 => Split::Test,
            _ => Split::Train,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => anyhow::bail!("unknown split '{other}' (expected train, val or test)"),
        }
    }
}

/// A stable 64-bit hash (FNV-1a) of a string: used where a split or seed must
/// not depend on the platform or the Rust version (std's hasher may change).
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_condition_lists() {
        assert_eq!(
            parse_conditions("night, fog,night").unwrap(),
            vec![Condition::Night, Condition::Fog]
        );
        assert!(parse_conditions("dusk")
            .unwrap_err()
            .to_string()
            .contains("dusk"));
        assert!(parse_conditions("").is_err());
    }
}
