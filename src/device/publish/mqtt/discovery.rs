//! Home Assistant MQTT discovery: retained config messages under
//! `<discovery_prefix>/<component>/irdistill_<camera>/<object>/config`
//! that make each camera appear in Home Assistant as a device with, per
//! label of the model:
//! - a `sensor` `<label> count` (the retained count topic),
//! - a `binary_sensor` `<label> occupancy` (on while the count is > 0),
//!
//! and per camera an `event` entity (`new` / `update` / `end` from
//! `<prefix>/<camera>/events`) and a `binary_sensor` connectivity entity
//! for the daemon's availability. Every entity but the last one is
//! unavailable while the daemon is `offline`.
//!
//! The configs are sent again on every (re)connect. On connect the daemon
//! also subscribes to its camera's discovery topics and clears (empty
//! retained payload) any config it no longer announces, e.g. the labels
//! of an earlier model. A camera taken out of service altogether is
//! cleared with `irdistill mqtt-forget --camera NAME`.

use serde_json::{json, Value};

use super::topics::{availability_topic, count_topic, events_topic, OFFLINE, ONLINE};

/// One retained discovery message.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryMessage {
    pub topic: String,
    pub payload: String,
}

/// What a camera's device says about itself.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The model (file stem, e.g. `student-p`).
    pub model: String,
    /// The board, e.g. `Raspberry Pi 4 Model B Rev 1.4` (device tree), or
    /// the CPU architecture.
    pub board: String,
}

impl DeviceInfo {
    /// `model_path`'s stem and this machine's board.
    pub fn detect(model_path: &std::path::Path) -> DeviceInfo {
        let model = model_path
            .file_stem()
            .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
        DeviceInfo {
            model,
            board: board_name(),
        }
    }
}

/// The device tree's model string (Raspberry Pi, Jetson), else the CPU
/// architecture.
fn board_name() -> String {
    [
        "/proc/device-tree/model",
        "/sys/firmware/devicetree/base/model",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| s.trim_end_matches(['\0', '\n']).trim().to_string())
    .filter(|s| !s.is_empty())
    .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// A name as a discovery topic level and ID: Home Assistant allows only
/// `[a-zA-Z0-9_-]` there.
pub fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// The node ID of `camera`'s device: `irdistill_<camera>`.
pub fn node_id(camera: &str) -> String {
    format!("irdistill_{}", slug(camera))
}

/// The topic filter matching every discovery config of `camera`.
pub fn camera_filter(discovery_prefix: &str, camera: &str) -> String {
    format!("{discovery_prefix}/+/{}/+/config", node_id(camera))
}

/// Whether `topic` is one of `camera`'s discovery config topics.
pub fn is_camera_config(discovery_prefix: &str, camera: &str, topic: &str) -> bool {
    let node = node_id(camera);
    let Some(rest) = topic.strip_prefix(discovery_prefix) else {
        return false;
    };
    let levels: Vec<&str> = rest.split('/').collect();
    matches!(levels.as_slice(), ["", _, n, _, "config"] if *n == node)
}

/// Every discovery message of `camera` with the model's `labels`.
pub fn messages(
    discovery_prefix: &str,
    prefix: &str,
    camera: &str,
    labels: &[String],
    device: &DeviceInfo,
) -> Vec<DiscoveryMessage> {
    let node = node_id(camera);
    let device_json = json!({
        "identifiers": [node],
        "name": format!("irdistill {camera}"),
        "manufacturer": "irdistill",
        "model": device.model,
        "sw_version": env!("CARGO_PKG_VERSION"),
        "hw_version": device.board,
    });
    let origin = json!({
        "name": "irdistill",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let availability = availability_topic(prefix);
    // the fields every entity of the device shares
    let common = |name: String, object: &str| {
        json!({
            "name": name,
            "unique_id": format!("{node}_{object}"),
            "availability_topic": availability,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": device_json,
            "origin": origin,
        })
    };
    let mut out = Vec::new();
    let mut push = |component: &str, object: &str, payload: Value| {
        out.push(DiscoveryMessage {
            topic: format!("{discovery_prefix}/{component}/{node}/{object}/config"),
            payload: payload.to_string(),
        });
    };
    for label in labels {
        let state_topic = count_topic(prefix, camera, label);
        let object = format!("{}_count", slug(label));
        let mut count = common(format!("{label} count"), &object);
        extend(
            &mut count,
            json!({
                "state_topic": state_topic,
                "state_class": "measurement",
                "icon": "mdi:counter",
            }),
        );
        push("sensor", &object, count);
        let object = format!("{}_occupancy", slug(label));
        let mut occupancy = common(format!("{label} occupancy"), &object);
        extend(
            &mut occupancy,
            json!({
                "state_topic": state_topic,
                "device_class": "occupancy",
                "value_template": "{{ 'ON' if (value | int(0)) > 0 else 'OFF' }}",
                "payload_on": "ON",
                "payload_off": "OFF",
            }),
        );
        push("binary_sensor", &object, occupancy);
    }
    let mut events = common("object event".into(), "object_event");
    extend(
        &mut events,
        json!({
            "state_topic": events_topic(prefix, camera),
            "event_types": ["new", "update", "end"],
            "value_template": "{{ {'event_type': value_json.type, 'label': value_json.label, 'track_id': value_json.track_id, 'score': value_json.score, 'zones': value_json.zones, 'snapshot': value_json.snapshot} | to_json }}",
        }),
    );
    push("event", "object_event", events);
    // the daemon's availability itself: never "unavailable"
    push(
        "binary_sensor",
        "status",
        json!({
            "name": "status",
            "unique_id": format!("{node}_status"),
            "state_topic": availability,
            "payload_on": ONLINE,
            "payload_off": OFFLINE,
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "device": device_json,
            "origin": origin,
        }),
    );
    out
}

fn extend(into: &mut Value, more: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), more) {
        a.extend(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_ids_and_payloads() {
        let device = DeviceInfo {
            model: "student-p".into(),
            board: "x86_64".into(),
        };
        let labels = ["person".to_string(), "traffic light".to_string()];
        let m = messages("homeassistant", "irdistill", "yard", &labels, &device);
        let topics: Vec<&str> = m.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/sensor/irdistill_yard/person_count/config",
                "homeassistant/binary_sensor/irdistill_yard/person_occupancy/config",
                "homeassistant/sensor/irdistill_yard/traffic_light_count/config",
                "homeassistant/binary_sensor/irdistill_yard/traffic_light_occupancy/config",
                "homeassistant/event/irdistill_yard/object_event/config",
                "homeassistant/binary_sensor/irdistill_yard/status/config",
            ]
        );
        let count: Value = serde_json::from_str(&m[2].payload).unwrap();
        assert_eq!(count["state_topic"], "irdistill/yard/traffic light");
        assert_eq!(count["unique_id"], "irdistill_yard_traffic_light_count");
        assert_eq!(count["device"]["identifiers"][0], "irdistill_yard");
        assert_eq!(count["availability_topic"], "irdistill/available");
        for t in &topics {
            assert!(is_camera_config("homeassistant", "yard", t), "{t}");
        }
        assert!(!is_camera_config(
            "homeassistant",
            "yard",
            "homeassistant/sensor/irdistill_yard2/a/config"
        ));
        assert!(!is_camera_config(
            "homeassistant",
            "yard",
            "homeassistant/sensor/irdistill_yard/a/state"
        ));
        assert_eq!(
            camera_filter("ha", "front door"),
            "ha/+/irdistill_front_door/+/config"
        );
    }
}
