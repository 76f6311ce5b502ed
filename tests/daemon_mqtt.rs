//! The MQTT publisher against a real mosquitto broker (started per test on
//! a free loopback port with a temporary config) and a real subscriber.
//!
//! Needs `mosquitto` (Debian: `apt-get install mosquitto`). Without it the
//! tests pass with a loud notice, unless IRDISTILL_REQUIRE_MOSQUITTO is set
//! (CI sets it), in which case they fail.
#![cfg(feature = "mqtt")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use irdistill::device::publish::mqtt::{MqttConfig, MqttPublisher};
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};

// Generous: these bound waits for things that happen in milliseconds on a
// healthy machine; they only stop a broken test from hanging CI.
const WAIT: Duration = Duration::from_secs(30);

fn mosquitto() -> Option<PathBuf> {
    let found = [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("IRDISTILL_REQUIRE_MOSQUITTO").is_some() {
            panic!("mosquitto is not installed but IRDISTILL_REQUIRE_MOSQUITTO is set (apt-get install mosquitto)");
        }
        eprintln!(
            "\n!!!!! SKIPPED: mosquitto is not installed; the MQTT tests did NOT run !!!!!\n"
        );
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto process on 127.0.0.1:port; killed on drop.
struct Broker {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Broker {
    fn start(exe: &Path, port: u16) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type all\n"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(exe)
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning mosquitto");
        let broker = Broker { child, dir, port };
        broker.wait_listening();
        broker
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Debug)]
struct Message {
    topic: String,
    payload: String,
    retain: bool,
}

/// A plain rumqttc client subscribed to `filter`, collecting messages.
struct Subscriber {
    rx: mpsc::Receiver<Message>,
    seen: Vec<Message>,
    client: Client,
}

impl Subscriber {
    fn connect(port: u16, filter: &str) -> Subscriber {
        let id = format!("test-sub-{}-{}", std::process::id(), free_port());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(options, 100);
        client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        let (tx, rx) = mpsc::channel();
        let (subscribed_tx, subscribed_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        let _ = subscribed_tx.send(());
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let message = Message {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            retain: p.retain,
                        };
                        if tx.send(message).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        subscribed_rx
            .recv_timeout(WAIT)
            .expect("subscriber got no SUBACK");
        Subscriber {
            rx,
            seen: Vec::new(),
            client,
        }
    }

    /// Waits for a message on `topic` with `payload`; returns it.
    fn expect(&mut self, topic: &str, payload: &str) -> Message {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(m) = self
                .seen
                .iter()
                .find(|m| m.topic == topic && m.payload == payload)
            {
                return m.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) => self.seen.push(m),
                Err(_) => panic!("no {topic} = {payload:?}; received: {:#?}", self.seen),
            }
        }
    }

    /// Messages whose topic starts with `prefix` (`+` matches one level)
    /// received so far.
    fn received_on_prefix(&mut self, prefix: &str) -> Vec<Message> {
        while let Ok(m) = self.rx.try_recv() {
            self.seen.push(m);
        }
        let matches = |topic: &str| {
            let (mut t, mut p) = (topic.split('/'), prefix.split('/').peekable());
            while let Some(level) = p.next() {
                if p.peek().is_none() {
                    // the last (partial) level is a string prefix
                    return t.next().is_some_and(|l| l.starts_with(level));
                }
                match t.next() {
                    Some(l) if level == "+" || l == level => {}
                    _ => return false,
                }
            }
            true
        };
        self.seen
            .iter()
            .filter(|m| matches(&m.topic))
            .cloned()
            .collect()
    }

    /// Messages on `topic` received so far (after draining what arrived).
    fn received_on(&mut self, topic: &str) -> Vec<String> {
        while let Ok(m) = self.rx.try_recv() {
            self.seen.push(m);
        }
        self.seen
            .iter()
            .filter(|m| m.topic == topic)
            .map(|m| m.payload.clone())
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}

fn config(port: u16, prefix: &str) -> MqttConfig {
    let mut cfg = MqttConfig::from_url(&format!("mqtt://127.0.0.1:{port}")).unwrap();
    cfg.topic_prefix = prefix.to_string();
    cfg.keep_alive_s = 5;
    cfg
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A new subscriber gets these as retained messages. Call it only after
/// they were seen live: a message published while a subscriber is already
/// subscribed arrives without the retain flag.
fn expect_retained(port: u16, messages: &[(&str, &str)]) {
    let mut late = Subscriber::connect(port, "#");
    for &(topic, payload) in messages {
        assert!(
            late.expect(topic, payload).retain,
            "{topic} = {payload} is not retained"
        );
    }
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

#[test]
fn publishes_availability_detections_and_counts() {
    let Some(exe) = mosquitto() else { return };
    let broker = Broker::start(&exe, free_port());
    let mut sub = Subscriber::connect(broker.port, "t1/#");
    let publisher = MqttPublisher::start(&config(broker.port, "t1")).unwrap();
    wait_until("the publisher is connected", || publisher.stats().connected);
    sub.expect("t1/available", "online");

    let json = r#"{"camera":"cam0","sequence":7,"detections":[]}"#;
    publisher.publish_detections("cam0", json);
    sub.expect("t1/cam0/detections", json);

    publisher.publish_counts("cam0", &counts(&[("person", 2), ("car", 1)]));
    sub.expect("t1/cam0/person", "2");
    sub.expect("t1/cam0/car", "1");
    // Unchanged counts are not sent again; the marker proves the broker has
    // passed on everything published before it (one connection, in order).
    publisher.publish_counts("cam0", &counts(&[("person", 2), ("car", 1)]));
    publisher.publish_detections("cam0", "marker-1");
    sub.expect("t1/cam0/detections", "marker-1");
    assert_eq!(sub.received_on("t1/cam0/person"), ["2"]);
    // A label that disappears goes back to 0.
    publisher.publish_counts("cam0", &counts(&[("person", 3)]));
    sub.expect("t1/cam0/person", "3");
    sub.expect("t1/cam0/car", "0");
    // Names that would add topic levels or wildcards are flattened.
    publisher.publish_counts("cam/1", &counts(&[("traffic+light", 1)]));
    sub.expect("t1/cam_1/traffic_light", "1");

    // A new subscriber gets the retained state.
    let mut late = Subscriber::connect(broker.port, "t1/#");
    for (topic, payload) in [
        ("t1/available", "online"),
        ("t1/cam0/person", "3"),
        ("t1/cam0/car", "0"),
    ] {
        assert!(
            late.expect(topic, payload).retain,
            "{topic} is not retained"
        );
    }
    assert!(
        late.received_on("t1/cam0/detections").is_empty(),
        "detections must not be retained"
    );

    let stats = publisher.stats();
    assert!(stats.connected);
    assert_eq!((stats.dropped, stats.reconnects), (0, 0), "{stats:?}");
    // online, 1 detection + marker, 2 + 2 + 1 counts
    assert!(stats.published >= 8, "{stats:?}");

    publisher.shutdown(Duration::from_secs(10));
    sub.expect("t1/available", "offline");
    let mut after = Subscriber::connect(broker.port, "t1/available");
    assert!(after.expect("t1/available", "offline").retain);
}

#[test]
fn broker_down_neither_blocks_nor_panics_and_publisher_reconnects() {
    let Some(exe) = mosquitto() else { return };
    let port = free_port();
    // No broker yet: start returns, publishing is dropped and counted.
    let publisher = MqttPublisher::start(&config(port, "t2")).unwrap();
    for i in 0..1000 {
        publisher.publish_detections("cam0", &format!("{{\"sequence\":{i}}}"));
    }
    publisher.publish_counts("cam0", &counts(&[("person", 1)]));
    let stats = publisher.stats();
    assert!(!stats.connected);
    assert_eq!((stats.published, stats.dropped), (0, 1001), "{stats:?}");

    let broker = Broker::start(&exe, port);
    let t0 = Instant::now();
    wait_until("the publisher connects to the late broker", || {
        publisher.stats().connected
    });
    eprintln!("connected {:?} after the broker came up", t0.elapsed());
    let mut sub = Subscriber::connect(port, "t2/#");
    sub.expect("t2/available", "online");
    // The count given while the broker was down went out on connect.
    sub.expect("t2/cam0/person", "1");
    expect_retained(port, &[("t2/available", "online"), ("t2/cam0/person", "1")]);
    publisher.publish_detections("cam0", "after-connect");
    sub.expect("t2/cam0/detections", "after-connect");
    drop(sub);

    // Outage: the broker dies (and forgets its retained messages).
    broker.stop();
    wait_until("the publisher notices the outage", || {
        !publisher.stats().connected
    });
    let dropped_before = publisher.stats().dropped;
    for _ in 0..100 {
        publisher.publish_detections("cam0", "during-outage");
    }
    // A change during the outage, and one that is undone again.
    publisher.publish_counts("cam0", &counts(&[("person", 2), ("car", 1)]));
    publisher.publish_counts("cam0", &counts(&[("person", 2)]));
    assert!(publisher.stats().dropped >= dropped_before + 100);

    let broker = Broker::start(&exe, port);
    let t0 = Instant::now();
    wait_until("the publisher reconnects", || publisher.stats().connected);
    eprintln!("reconnected {:?} after the broker restarted", t0.elapsed());
    assert_eq!(publisher.stats().reconnects, 1);
    let mut sub = Subscriber::connect(port, "t2/#");
    // The new broker instance (which lost every retained message) learns
    // `online` and the current counts from the reconnect alone.
    sub.expect("t2/available", "online");
    sub.expect("t2/cam0/person", "2");
    sub.expect("t2/cam0/car", "0");
    expect_retained(
        port,
        &[
            ("t2/available", "online"),
            ("t2/cam0/person", "2"),
            ("t2/cam0/car", "0"),
        ],
    );
    publisher.publish_detections("cam0", "after-reconnect");
    sub.expect("t2/cam0/detections", "after-reconnect");
    assert!(sub
        .received_on("t2/cam0/detections")
        .iter()
        .all(|p| p != "during-outage"));

    publisher.shutdown(Duration::from_secs(10));
    sub.expect("t2/available", "offline");
    broker.stop();
}

/// A "broker" that accepts the connection, acknowledges it and then never
/// reads again: the socket buffers fill and the event loop stalls.
fn stalled_broker() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut header = [0u8; 2];
        socket.read_exact(&mut header).unwrap();
        let mut connect = vec![0u8; usize::from(header[1])];
        socket.read_exact(&mut connect).unwrap();
        socket.write_all(&[0x20, 0x02, 0x00, 0x00]).unwrap(); // CONNACK, accepted
        std::thread::sleep(Duration::from_secs(60));
    });
    (port, handle)
}

#[test]
fn slow_broker_drops_instead_of_blocking() {
    let (port, _broker) = stalled_broker();
    let mut cfg = config(port, "t3");
    cfg.queue_capacity = 4;
    let publisher = MqttPublisher::start(&cfg).unwrap();
    wait_until("the publisher is connected", || publisher.stats().connected);
    // 2000 × 64 KiB is far more than loopback socket buffers hold.
    let payload = "x".repeat(64 * 1024);
    for _ in 0..2000 {
        publisher.publish_detections("cam0", &payload);
    }
    let stats = publisher.stats();
    assert!(stats.dropped > 0, "{stats:?}");
    assert!(stats.published < 2000, "{stats:?}");
    // Bounded even though the event loop is stuck writing.
    publisher.shutdown(Duration::from_millis(500));
}

#[test]
fn last_will_is_published_when_the_publisher_dies() {
    let Some(exe) = mosquitto() else { return };
    let broker = Broker::start(&exe, free_port());
    let mut sub = Subscriber::connect(broker.port, "t4/#");
    // This test binary again, running only `will_child` below.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "will_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("IRDISTILL_WILL_CHILD_PORT", broker.port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("WILL-CHILD-CONNECTED"));
    assert!(ready, "the child publisher never connected");
    sub.expect("t4/available", "online");
    child.kill().unwrap(); // SIGKILL: no goodbye, the broker sees the socket close
    child.wait().unwrap();
    sub.expect("t4/available", "offline");
    let mut late = Subscriber::connect(broker.port, "t4/available");
    assert!(late.expect("t4/available", "offline").retain);
}

/// Run by `last_will_is_published_when_the_publisher_dies` in a child
/// process; does nothing when run by hand.
#[test]
#[ignore]
fn will_child() {
    let Ok(port) = std::env::var("IRDISTILL_WILL_CHILD_PORT") else {
        return;
    };
    let publisher = MqttPublisher::start(&config(port.parse().unwrap(), "t4")).unwrap();
    wait_until("the child publisher connects", || {
        publisher.stats().connected
    });
    println!("WILL-CHILD-CONNECTED");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(WAIT * 4);
}

/// mosquitto with a TLS listener and a CA made here with openssl.
#[test]
fn tls_connection_with_a_private_ca() {
    let Some(exe) = mosquitto() else { return };
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("\n!!!!! SKIPPED: openssl is missing; the MQTT TLS test did NOT run !!!!!\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=irdistill test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);

    // mosquitto started as root runs as user `mosquitto`: let it read them.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in ["ca.pem", "server.pem", "server.key"] {
        std::fs::set_permissions(d.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let plain_port = free_port();
    let tls_port = free_port();
    let conf = d.join("tls.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             listener {plain_port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
            d.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(&exe)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", tls_port)).is_err()
        || TcpStream::connect(("127.0.0.1", plain_port)).is_err()
    {
        assert!(Instant::now() < deadline, "mosquitto (TLS) did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut sub = Subscriber::connect(plain_port, "t5/#");
    let mut cfg = MqttConfig::from_url(&format!("mqtts://localhost:{tls_port}")).unwrap();
    cfg.topic_prefix = "t5".into();
    cfg.ca_file = Some(d.join("ca.pem"));
    let publisher = MqttPublisher::start(&cfg).unwrap();
    wait_until("the TLS publisher connects", || publisher.stats().connected);
    publisher.publish_detections("cam0", "over-tls");
    sub.expect("t5/cam0/detections", "over-tls");
    publisher.shutdown(Duration::from_secs(10));
    sub.expect("t5/available", "offline");
    let _ = child.kill();
    let _ = child.wait();
}

// --- the daemon end to end ------------------------------------------------------

#[cfg(feature = "trainer")]
mod daemon_common;

/// `irdistill run --source synthetic --mqtt … --camera yard`: per-frame
/// JSON on `irdistill/yard/detections`, retained counts, `online` while it
/// runs and `offline` after it exits.
#[cfg(feature = "trainer")]
#[test]
fn daemon_publishes_detections_and_counts() {
    let Some(exe) = mosquitto() else { return };
    let broker = Broker::start(&exe, free_port());
    let mut sub = Subscriber::connect(broker.port, "irdistill/#");
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let model = daemon_common::model().to_str().unwrap();
    let (ok, _, stderr) = daemon_common::run(&[
        "run",
        "--source",
        "synthetic",
        "--model",
        model,
        "--frames",
        "20",
        "--fps",
        "0",
        "--threads",
        "1",
        "--mqtt",
        &url,
        "--camera",
        "yard",
    ]);
    assert!(ok, "{stderr}");
    sub.expect("irdistill/available", "offline");
    let available = sub.received_on("irdistill/available");
    assert_eq!(
        available,
        ["online", "offline"],
        "{stderr}\n--- broker\n{}",
        broker.log()
    );
    // Frames before the connection was up are dropped, not queued.
    let frames = sub.received_on("irdistill/yard/detections");
    assert!(
        !frames.is_empty() && frames.len() <= 20,
        "{} frames",
        frames.len()
    );
    for payload in &frames {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert_eq!(v["camera"], "yard", "{payload}");
        assert!(v["detections"].is_array(), "{payload}");
    }
    // Every class of the model has a retained count (0 included).
    let mut late = Subscriber::connect(broker.port, "irdistill/yard/+");
    for label in daemon_common::NAMES {
        let topic = format!("irdistill/yard/{label}");
        let deadline = Instant::now() + WAIT;
        let count = loop {
            if let Some(m) = late.received_on(&topic).pop() {
                break m;
            }
            assert!(Instant::now() < deadline, "no retained {topic}");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(count.parse::<usize>().is_ok(), "{topic} = {count}");
    }
}

/// With the broker unreachable the daemon still processes every frame and
/// exits cleanly; it says why MQTT is not connected.
#[cfg(feature = "trainer")]
#[test]
fn daemon_runs_with_the_broker_down() {
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let model = daemon_common::model().to_str().unwrap();
    let summary = tempfile::NamedTempFile::new().unwrap();
    let (ok, _, stderr) = daemon_common::run(&[
        "run",
        "--source",
        "synthetic",
        "--model",
        model,
        "--frames",
        "20",
        "--fps",
        "0",
        "--threads",
        "1",
        "--mqtt",
        &url,
        "--summary",
        summary.path().to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(summary.path()).unwrap()).unwrap();
    assert_eq!(s["frames"], 20, "{s}");
    assert!(
        stderr.contains("cannot connect to the MQTT broker"),
        "{stderr}"
    );
}

/// The fields Home Assistant documents for each MQTT discovery component
/// we use (home-assistant.io/integrations/{sensor,binary_sensor,event}.mqtt
/// and the MQTT discovery page's `device` and `origin` maps): a config
/// with any other key is refused or ignored by Home Assistant.
fn documented_fields(component: &str) -> (&'static [&'static str], &'static [&'static str]) {
    const COMMON: [&str; 10] = [
        "name",
        "unique_id",
        "availability_topic",
        "payload_available",
        "payload_not_available",
        "device",
        "origin",
        "icon",
        "entity_category",
        "value_template",
    ];
    let (extra, required): (&[&str], &[&str]) = match component {
        "sensor" => (
            &[
                "state_topic",
                "state_class",
                "unit_of_measurement",
                "device_class",
            ],
            &["state_topic"],
        ),
        "binary_sensor" => (
            &["state_topic", "device_class", "payload_on", "payload_off"],
            &["state_topic"],
        ),
        "event" => (
            &["state_topic", "event_types", "device_class"],
            &["state_topic", "event_types"],
        ),
        other => panic!("unexpected discovery component {other}"),
    };
    let all: Vec<&'static str> = COMMON.iter().chain(extra).copied().collect();
    (Box::leak(all.into_boxed_slice()), required)
}

/// Checks one discovery config against Home Assistant's schema fields;
/// returns its component and state topic.
fn check_discovery_config(topic: &str, payload: &str) -> (String, String) {
    let levels: Vec<&str> = topic.split('/').collect();
    assert_eq!(levels.len(), 5, "{topic}");
    assert_eq!(
        (levels[0], levels[2], levels[4]),
        ("homeassistant", "irdistill_yard", "config")
    );
    let id_ok = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
    };
    assert!(id_ok(levels[2]) && id_ok(levels[3]), "{topic}");
    let v: serde_json::Value = serde_json::from_str(payload).unwrap();
    let (allowed, required) = documented_fields(levels[1]);
    for key in v.as_object().unwrap().keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{topic}: undocumented field {key}"
        );
    }
    for key in required {
        assert!(v.get(*key).is_some(), "{topic}: no {key}");
    }
    let device = &v["device"];
    assert_eq!(device["identifiers"][0], "irdistill_yard", "{topic}");
    for key in device.as_object().unwrap().keys() {
        let documented = [
            "identifiers",
            "name",
            "manufacturer",
            "model",
            "sw_version",
            "hw_version",
            "connections",
            "configuration_url",
            "suggested_area",
            "via_device",
        ];
        assert!(documented.contains(&key.as_str()), "{topic}: device.{key}");
    }
    assert!(v["unique_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("irdistill_yard_")));
    (
        levels[1].to_string(),
        v["state_topic"].as_str().unwrap().to_string(),
    )
}

/// Milliseconds of an RFC 3339 UTC time's day (the test runs for seconds).
fn ms_of_day(t: &str) -> i64 {
    let time = &t[11..23]; // HH:MM:SS.mmm
    let n = |a: usize, b: usize| time[a..b].parse::<i64>().unwrap();
    ((n(0, 2) * 60 + n(3, 5)) * 60 + n(6, 8)) * 1000 + n(9, 12)
}

/// A daemon config for camera `yard` on the synthetic camera, panning so
/// that objects move from a left zone into a right one.
#[cfg(feature = "trainer")]
fn events_config(dir: &Path, port: u16, model: &Path, frames: u64) -> PathBuf {
    let path = dir.join("yard.toml");
    let text = format!(
        r#"[camera]
name = "yard"
[source]
spec = "synthetic"
width_px = 320
height_px = 240
fps = 15
[source.synthetic]
seed = 3
conditions = ["day"]
hold_frames = 1000
pan_px_per_frame = 2.0
[model]
path = {model:?}
threads = 1
[[zones]]
name = "left"
mode = "include"
points = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]
[[zones]]
name = "right"
mode = "include"
points = [[0.5, 0], [1, 0], [1, 1], [0.5, 1]]
[output]
jsonl = {jsonl:?}
[pipeline]
max_frames = {frames}
[mqtt]
url = "mqtt://127.0.0.1:{port}"
keep_alive_s = 5
"#,
        model = model.to_str().unwrap(),
        jsonl = dir.join("out.jsonl").to_str().unwrap(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Home Assistant discovery (each config checked against the documented
/// fields) and object events: `new` → `update`s → `end` per track, at most
/// one update a second, the same events in the JSON lines output.
#[cfg(feature = "trainer")]
#[test]
fn daemon_announces_to_home_assistant_and_publishes_object_events() {
    let Some(exe) = mosquitto() else { return };
    let broker = Broker::start(&exe, free_port());
    let mut events_sub = Subscriber::connect(broker.port, "irdistill/yard/events");
    let dir = tempfile::tempdir().unwrap();
    let config = events_config(dir.path(), broker.port, daemon_common::model(), 90);
    let (ok, _, stderr) = daemon_common::run(&["run", "--config", config.to_str().unwrap()]);
    assert!(ok, "{stderr}");

    // discovery: retained, one sensor and one binary_sensor per label,
    // the event entity and the status entity
    let mut late = Subscriber::connect(broker.port, "homeassistant/#");
    let n_configs = 2 * daemon_common::NAMES.len() + 2;
    wait_until("every discovery config arrived", || {
        late.received_on_prefix("homeassistant/").len() >= n_configs
    });
    let configs = late.received_on_prefix("homeassistant/");
    assert_eq!(configs.len(), n_configs, "{configs:#?}");
    let mut components = Vec::new();
    for m in &configs {
        assert!(m.retain, "{} is not retained", m.topic);
        let (component, state_topic) = check_discovery_config(&m.topic, &m.payload);
        components.push(component.clone());
        let label_topic = daemon_common::NAMES
            .iter()
            .any(|l| state_topic == format!("irdistill/yard/{l}"));
        match component.as_str() {
            "event" => assert_eq!(state_topic, "irdistill/yard/events"),
            _ if m.topic.ends_with("/status/config") => {
                assert_eq!(state_topic, "irdistill/available")
            }
            _ => assert!(label_topic, "{}: {state_topic}", m.topic),
        }
    }
    components.sort();
    let mut expected = vec!["binary_sensor"; daemon_common::NAMES.len() + 1];
    expected.extend(vec!["event"]);
    expected.extend(vec!["sensor"; daemon_common::NAMES.len()]);
    assert_eq!(components, expected);

    // events: every one is in the JSON lines output (after its frame's
    // line); MQTT has them too, less any from before it connected
    let published: Vec<serde_json::Value> = events_sub
        .received_on("irdistill/yard/events")
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("type").is_some()).collect();
    assert_eq!(lines.len() - events.len(), 90, "frame lines");
    assert!(!published.is_empty(), "no events on MQTT:\n{stderr}");
    for e in &published {
        assert!(events.contains(&e), "{e} not in the JSON lines");
    }
    // by object (a track ended and seen again later is a new object)
    let mut tracks: BTreeMap<String, Vec<&serde_json::Value>> = BTreeMap::new();
    for e in &events {
        tracks
            .entry(e["id"].as_str().unwrap().to_string())
            .or_default()
            .push(e);
    }
    let mut walked = 0;
    for (id, events) in &tracks {
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds[0], "new", "track {id}: {kinds:?}");
        assert_eq!(*kinds.last().unwrap(), "end", "track {id}: {kinds:?}");
        assert!(
            kinds[1..kinds.len() - 1].iter().all(|k| *k == "update"),
            "track {id}: {kinds:?}"
        );
        let end = events.last().unwrap();
        assert_eq!(end["end_time"], end["last_seen"], "{end}");
        // at most one event per second per track before its end
        let times: Vec<i64> = events[..events.len() - 1]
            .iter()
            .map(|e| ms_of_day(e["last_seen"].as_str().unwrap()))
            .collect();
        for w in times.windows(2) {
            assert!(
                w[1] - w[0] >= 1000,
                "track {id}: events {} ms apart",
                w[1] - w[0]
            );
        }
        if kinds.len() >= 3 {
            walked += 1;
        }
    }
    assert!(walked >= 1, "no track got new → update → end: {tracks:#?}");
    // moving right, something entered the right zone
    assert!(
        events.iter().any(|e| e["entered_zones"]
            .as_array()
            .is_some_and(|z| z.iter().any(|n| n == "right"))),
        "{events:#?}"
    );
}

/// A retained config of a label the model does not have (an earlier
/// model's) is cleared when the daemon connects; `mqtt-forget` then
/// clears everything the camera left retained.
#[cfg(feature = "trainer")]
#[test]
fn stale_discovery_is_cleared_and_mqtt_forget_clears_a_camera() {
    let Some(exe) = mosquitto() else { return };
    let broker = Broker::start(&exe, free_port());
    let stale = "homeassistant/sensor/irdistill_yard/zebra_count/config";
    let other = "homeassistant/sensor/irdistill_door/person_count/config";
    {
        let mut options = MqttOptions::new("test-stale", "127.0.0.1", broker.port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(options, 10);
        for t in [stale, other] {
            client
                .publish(t, QoS::AtLeastOnce, true, "{\"name\":\"old\"}")
                .unwrap();
        }
        let mut acks = 0;
        for event in connection.iter() {
            if let Ok(Event::Incoming(Incoming::PubAck(_))) = event {
                acks += 1;
                if acks == 2 {
                    break;
                }
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = events_config(dir.path(), broker.port, daemon_common::model(), 30);
    let (ok, _, stderr) = daemon_common::run(&["run", "--config", config.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let mut late = Subscriber::connect(broker.port, "homeassistant/#");
    late.expect(other, "{\"name\":\"old\"}");
    let n = 2 * daemon_common::NAMES.len() + 2;
    wait_until("the daemon's configs", || {
        late.received_on_prefix("homeassistant/sensor/irdistill_yard/")
            .len()
            >= daemon_common::NAMES.len()
    });
    let yard = late.received_on_prefix("homeassistant/+/irdistill_yard/");
    assert!(
        yard.iter().all(|m| m.topic != stale),
        "stale config kept: {yard:#?}"
    );
    assert!(stderr.contains("no longer announces"), "{stderr}");

    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let (ok, out, err) = daemon_common::run(&["mqtt-forget", "--camera", "yard", "--mqtt", &url]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "{} retained message(s) cleared",
            n + daemon_common::NAMES.len()
        )),
        "{out}"
    );
    let mut after = Subscriber::connect(broker.port, "#");
    after.expect(other, "{\"name\":\"old\"}");
    std::thread::sleep(Duration::from_millis(300));
    let left: Vec<Message> = after
        .received_on_prefix("")
        .into_iter()
        .filter(|m| m.topic.contains("yard"))
        .collect();
    assert!(left.is_empty(), "left retained: {left:#?}");
}

/// Two cameras at once (two daemons, as the `irdistill@.service` template
/// runs them), each with its own topic prefix: two Home Assistant devices,
/// and each daemon's availability is its own.
#[cfg(feature = "trainer")]
#[test]
fn two_cameras_are_two_devices_with_their_own_availability() {
    let Some(exe) = mosquitto() else { return };
    let broker = Broker::start(&exe, free_port());
    let dir = tempfile::tempdir().unwrap();
    let model = daemon_common::model().to_str().unwrap();
    let config = |camera: &str, frames: u64| {
        let path = dir.path().join(format!("{camera}.toml"));
        let text = format!(
            "[camera]\nname = \"{camera}\"\n[source]\nfps = 15\nwidth_px = 320\nheight_px = 240\n\
             [model]\npath = {model:?}\nthreads = 1\n[pipeline]\nmax_frames = {frames}\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\ntopic_prefix = \"irdistill/{camera}\"\n",
            broker.port
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let (yard, door) = (config("yard", 15), config("door", 120));
    let mut sub = Subscriber::connect(broker.port, "irdistill/#");
    let mut door_child = daemon_common::irdistill()
        .args(["run", "--config", door.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (ok, _, stderr) = daemon_common::run(&["run", "--config", yard.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    // yard has finished (offline) while door still runs (online)
    sub.expect("irdistill/yard/available", "offline");
    let door_state = sub.received_on("irdistill/door/available");
    assert_eq!(
        door_state.last().map(String::as_str),
        Some("online"),
        "{door_state:?}"
    );
    assert!(door_child.wait().unwrap().success());
    sub.expect("irdistill/door/available", "offline");
    let mut ha = Subscriber::connect(broker.port, "homeassistant/#");
    for camera in ["yard", "door"] {
        let topic = format!("homeassistant/binary_sensor/irdistill_{camera}/status/config");
        wait_until(&topic, || !ha.received_on(&topic).is_empty());
        let config: serde_json::Value = serde_json::from_str(&ha.received_on(&topic)[0]).unwrap();
        assert_eq!(
            config["state_topic"],
            format!("irdistill/{camera}/available")
        );
        assert_eq!(config["device"]["name"], format!("irdistill {camera}"));
    }
}
