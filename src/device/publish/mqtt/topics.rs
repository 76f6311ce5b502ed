//! Topic names under the prefix and the retained messages sent on them:
//! `<prefix>/available`, `<prefix>/<camera>/detections`,
//! `<prefix>/<camera>/events` and `<prefix>/<camera>/<label>`.

use rumqttc::{Publish, QoS, Request};

/// Payloads of the availability topic.
pub(super) const ONLINE: &str = "online";
pub(super) const OFFLINE: &str = "offline";

pub(super) fn availability_topic(prefix: &str) -> String {
    format!("{prefix}/available")
}

pub(super) fn detections_topic(prefix: &str, camera: &str) -> String {
    format!("{prefix}/{}/detections", topic_segment(camera))
}

pub(super) fn events_topic(prefix: &str, camera: &str) -> String {
    format!("{prefix}/{}/events", topic_segment(camera))
}

pub(super) fn count_topic(prefix: &str, camera: &str, label: &str) -> String {
    format!(
        "{prefix}/{}/{}",
        topic_segment(camera),
        topic_segment(label)
    )
}

/// Every topic one level under `camera` (detections, events, counts).
pub(super) fn camera_filter(prefix: &str, camera: &str) -> String {
    format!("{prefix}/{}/+", topic_segment(camera))
}

/// A camera name or label as one topic level: no '/' (would add levels)
/// and no wildcards (a broker refuses those in a publish).
fn topic_segment(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if matches!(c, '/' | '+' | '#' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".to_string()
    } else {
        cleaned
    }
}

/// A retained QoS 1 publish, as the event loop queues it directly.
pub(super) fn retained(topic: &str, payload: &str) -> Request {
    let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload);
    publish.retain = true;
    Request::Publish(publish)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_segments_cannot_add_levels_or_wildcards() {
        assert_eq!(topic_segment("traffic light"), "traffic light");
        assert_eq!(topic_segment("a/b+#"), "a_b__");
        assert_eq!(topic_segment(""), "_");
    }
}
