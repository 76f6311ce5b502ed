//! MQTT publishing (being written).
