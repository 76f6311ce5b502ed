//! The per-frame JSON message (JSONL, MQTT) and `detect`'s per-image line.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::shared::bbox::BBox;

/// One detection as published: box corners in the source frame's pixels
/// (rounded to 1/100 px; scores to 1e-4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionJson {
    pub class_id: usize,
    pub label: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Stable object ID across frames (`run` only; null for a weak
    /// detection matching no track).
    #[serde(skip_serializing_if = "skip_track", default)]
    pub track_id: Option<Option<u64>>,
}

fn skip_track(t: &Option<Option<u64>>) -> bool {
    t.is_none()
}

/// Rounds to `1/per` for compact output (dividing last gives the f32
/// nearest the decimal, so it prints short).
fn round_to(v: f32, per: f32) -> f32 {
    (v * per).round() / per
}

impl DetectionJson {
    pub fn new(class_id: usize, label: &str, score: f32, b: &BBox) -> Self {
        Self {
            class_id,
            label: label.to_string(),
            score: round_to(score, 1e4),
            bbox: [b.x1, b.y1, b.x2, b.y2].map(|v| round_to(v, 100.0)),
            track_id: None,
        }
    }
}

/// One processed frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameMessage {
    pub camera: String,
    /// The source's frame sequence number (gaps: dropped frames).
    pub frame: u64,
    /// Capture time, RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    /// Source frame size, pixels.
    pub width: u32,
    pub height: u32,
    pub detections: Vec<DetectionJson>,
}

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2024-05-01T12:34:56.789Z`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (leap day) 23:59:59.5
        let t = UNIX_EPOCH + Duration::from_millis(951_868_799_500);
        assert_eq!(rfc3339_utc(t), "2000-02-29T23:59:59.500Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_600);
        assert_eq!(rfc3339_utc(t), "2025-01-01T00:00:00.000Z");
    }

    #[test]
    fn detection_json_shape() {
        let mut d = DetectionJson::new(1, "car", 0.876_54, &BBox::new(1.004, 2.0, 3.5, 4.25));
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"class_id":1,"label":"car","score":0.8765,"box":[1.0,2.0,3.5,4.25]}"#
        );
        d.track_id = Some(Some(7));
        assert!(serde_json::to_string(&d)
            .unwrap()
            .ends_with(r#""track_id":7}"#));
        d.track_id = Some(None);
        assert!(serde_json::to_string(&d)
            .unwrap()
            .ends_with(r#""track_id":null}"#));
    }
}
