//! `irdistill`: the device runtime (camera daemon). Built without candle:
//! `cargo build --release --no-default-features --features runtime --bin irdistill`.

mod bench;
mod demo;
mod detect;
mod run;
mod val;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use irdistill::device::daemon::{StartupError, EXIT_CONFIG};
use irdistill::device::model_path::resolve_model;

#[derive(Parser)]
#[command(
    name = "irdistill",
    version,
    about = "RGB camera daemon running a distilled RGB+IR detector"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace) or a tracing filter;
    /// RUST_LOG wins when set.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: capture, detect, track, publish.
    Run(Box<run::Args>),
    /// The daemon on embedded defaults: synthetic camera (day, night, fog),
    /// bundled model, a few hundred frames; detections, annotated snapshots
    /// and a summary in runs/daemon-demo/.
    Demo(demo::Args),
    /// Detect objects in image files; one JSON line per image.
    Detect(detect::Args),
    /// Score an ONNX model on a labelled dataset folder (COCO mAP on the
    /// RGB images): table, then JSON.
    Val(val::Args),
    /// Validate a configuration file.
    CheckConfig {
        /// The TOML file (see systemd/irdistill.toml).
        file: PathBuf,
    },
    /// List V4L2 devices with their formats, sizes and frame rates.
    Probe {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Devices to probe (default: every /dev/video*).
        devices: Vec<PathBuf>,
    },
    /// Measure model, conversion and pipeline throughput, latency and memory.
    Bench(bench::Args),
    /// Clear what a camera's daemon left retained on the MQTT broker (Home
    /// Assistant discovery configs, per-label counts): for a camera taken
    /// out of service. Stop its daemon first.
    MqttForget {
        /// The camera's name (camera.name / --camera of its daemon).
        #[arg(long)]
        camera: String,
        /// The daemon's config file: its [mqtt] table is used.
        #[arg(long, conflicts_with = "mqtt")]
        config: Option<PathBuf>,
        /// Broker URL, with the default prefixes (instead of --config).
        #[arg(long)]
        mqtt: Option<String>,
        /// Seconds to wait for the broker.
        #[arg(long, default_value_t = 10)]
        timeout_s: u64,
    },
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let stderr = std::io::stderr();
    // Under systemd the journal adds its own timestamps.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(stderr.is_terminal())
        .with_target(false);
    if journald {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn check_config(file: &Path) -> Result<()> {
    let cfg = irdistill::device::config::Config::load(file)?;
    if let Some(model) = &cfg.model.path {
        if !model.is_file() {
            bail!(
                "config {}: model.path {}: no such file",
                file.display(),
                model.display()
            );
        }
    }
    // What `run` checks before it starts: the model loads, and the
    // config's labels are the model's.
    let detector = irdistill::device::daemon::load_model(&cfg)
        .with_context(|| format!("config {}: model", file.display()))?;
    let info = detector.info();
    irdistill::device::pipeline::detect_filter(&cfg, info)
        .with_context(|| format!("config {}", file.display()))?;
    println!("{}: ok", file.display());
    println!(
        "  camera {} from {} ({}x{} at {} fps{})",
        cfg.camera.name,
        cfg.source.spec_redacted(),
        cfg.source.width_px,
        cfg.source.height_px,
        cfg.source.fps,
        cfg.source
            .format
            .as_deref()
            .map_or(String::new(), |f| format!(", {f}"))
    );
    println!(
        "  model {}, conf {}, iou {}, {} zone(s), tracking {}",
        match &cfg.model.path {
            Some(p) => p.display().to_string(),
            None => match resolve_model(None, None) {
                Ok(found) => format!("{} (default)", found.display()),
                Err(_) => "models/student-p.onnx (default; not found here)".into(),
            },
        },
        cfg.detect.conf,
        cfg.detect.iou,
        cfg.zones.len(),
        if cfg.track.enabled { "on" } else { "off" }
    );
    println!(
        "  model input {}x{}, labels: {}; object events {}",
        info.input_w_px,
        info.input_h_px,
        info.names.join(", "),
        if cfg.events.active(cfg.track.enabled) {
            "on"
        } else {
            "off"
        }
    );
    let outputs = [
        cfg.output.jsonl.as_ref().map(|j| format!("jsonl {j}")),
        cfg.mqtt.as_ref().map(|_| "mqtt".to_string()),
        cfg.http.listen.as_ref().map(|l| format!("http {l}")),
        cfg.snapshots
            .dir
            .as_ref()
            .map(|d| format!("snapshots {}", d.display())),
    ];
    let outputs: Vec<String> = outputs.into_iter().flatten().collect();
    println!(
        "  outputs: {}",
        if outputs.is_empty() {
            "none".into()
        } else {
            outputs.join(", ")
        }
    );
    Ok(())
}

#[cfg(feature = "mqtt")]
fn mqtt_forget(
    camera: &str,
    config: Option<&Path>,
    url: Option<&str>,
    timeout_s: u64,
) -> Result<()> {
    use irdistill::device::publish::mqtt::{forget_camera, MqttConfig};
    let cfg = match (config, url) {
        (Some(file), _) => {
            let cfg = irdistill::device::config::Config::load(file)?;
            match cfg.mqtt {
                Some(m) => m,
                None => bail!("config {}: no [mqtt] table", file.display()),
            }
        }
        (None, Some(url)) => MqttConfig::from_url(url)?,
        (None, None) => bail!("mqtt-forget needs --config FILE or --mqtt URL"),
    };
    let cleared = forget_camera(
        &cfg,
        camera,
        std::time::Duration::from_secs(timeout_s.max(1)),
    )?;
    for t in &cleared {
        println!("cleared {t}");
    }
    println!(
        "camera {camera}: {} retained message(s) cleared",
        cleared.len()
    );
    Ok(())
}

#[cfg(not(feature = "mqtt"))]
fn mqtt_forget(_: &str, _: Option<&Path>, _: Option<&str>, _: u64) -> Result<()> {
    bail!("mqtt-forget: this irdistill was built without the mqtt feature")
}

#[cfg(feature = "v4l2")]
fn probe(json: bool, devices: &[PathBuf]) -> Result<()> {
    let found = irdistill::device::capture::v4l2::probe(devices)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else if found.is_empty() {
        println!("no V4L2 capture devices found");
    } else {
        for d in &found {
            println!("{d}");
        }
    }
    Ok(())
}

#[cfg(not(feature = "v4l2"))]
fn probe(_json: bool, _devices: &[PathBuf]) -> Result<()> {
    bail!("probe: this irdistill was built without the v4l2 feature")
}

fn main() {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Demo(args) => demo::demo(args),
        Command::Detect(args) => detect::detect(args),
        Command::Val(args) => val::val(args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Probe { json, devices } => probe(json, &devices),
        Command::Bench(args) => bench::bench(args),
        Command::MqttForget {
            camera,
            config,
            mqtt,
            timeout_s,
        } => mqtt_forget(&camera, config.as_deref(), mqtt.as_deref(), timeout_s),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        let startup = e.downcast_ref::<StartupError>().is_some();
        std::process::exit(if startup { EXIT_CONFIG } else { 1 });
    }
}
