//! Shared by the daemon tests: a student exported in-process with seeded
//! random weights (informative scores, so detections, tracks and NMS all
//! have work to do), and the `irdistill` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use irdistill::trainer::export::{export_onnx, ExportOptions};
use irdistill::trainer::model::{ModelConfig, YoloV8};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const NAMES: [&str; 2] = ["person", "car"];

/// A student-p whose every weight is drawn from a seeded generator (as in
/// tests/export_parity.rs), BatchNorm statistics included.
pub fn seeded_model(imgsz: usize, seed: u64) -> YoloV8 {
    let cfg = ModelConfig::new("student-p", &NAMES, imgsz);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = YoloV8::load(vb, &cfg).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = varmap.data().lock().unwrap();
    let mut keys: Vec<&String> = data.keys().collect();
    keys.sort();
    for name in keys {
        let var = &data[name];
        let t = var.as_tensor();
        let n = t.elem_count();
        let (lo, hi) = if name.ends_with("running_mean") || name.ends_with("bn.bias") {
            (-0.3, 0.3)
        } else if name.ends_with("running_var") {
            (0.5, 2.0)
        } else if name.ends_with("bn.weight") {
            (0.5, 1.5)
        } else if t.rank() == 4 {
            let fan_in = (n / t.dim(0).unwrap()) as f64;
            let b = (6.0 / fan_in).sqrt();
            (-b, b)
        } else {
            (-1.0, 1.0)
        };
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi) as f32).collect();
        var.set(&Tensor::from_vec(values, t.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    drop(data);
    model
}

/// `dir/model.onnx`: a seeded student-p at `imgsz`, exported by the trainer.
pub fn export_to(dir: &Path, imgsz: usize, dynamic_batch: bool) -> PathBuf {
    let model = seeded_model(imgsz, 7);
    let path = dir.join(format!(
        "student-p-{imgsz}{}.onnx",
        if dynamic_batch { "-dyn" } else { "" }
    ));
    let opts = ExportOptions {
        imgsz,
        dynamic_batch,
        extra_metadata: vec![],
    };
    export_onnx(&model, &opts, &path).unwrap();
    path
}

/// One exported model per test binary (imgsz 128), kept for its lifetime.
pub fn model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = export_to(dir.path(), 128, false);
        (dir, path)
    });
    path
}

pub fn irdistill() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_irdistill"));
    // Tests run in parallel on 2 cores: one inference thread each.
    c.env_remove("RUST_LOG").env_remove("NOTIFY_SOCKET");
    c
}

/// Runs `irdistill ARGS`; returns (success, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = irdistill().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from 127.0.0.1:`port`; (status code, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    http_get_with(port, path, "")
}

/// GET with extra header lines (each ending in `\r\n`).
pub fn http_get_with(port: u16, path: &str, headers: &str) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((code, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}
