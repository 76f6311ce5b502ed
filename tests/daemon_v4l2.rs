//! V4L2 capture against a real kernel driver: `../shared/vivid/run-in-vivid.sh`
//! boots a throw-away VM whose /dev/video0 is the kernel's vivid virtual
//! camera, and runs this test binary's `vivid_guest` test inside it (with
//! v4l2-ctl for vivid's fault-injection controls). The guest prints one
//! `@@CHECK name json` line per scenario; the host-side tests below parse
//! them and judge. One VM boot serves all host-side tests.
//!
//! Needs the harness (qemu-system-x86, busybox-static, xz-utils; it installs
//! them and downloads a kernel on first use) and `v4l2-ctl` (v4l-utils).
//! Without them the VM tests pass with a loud notice, unless
//! IRDISTILL_REQUIRE_VIVID is set (CI sets it), in which case they fail.
//! IRDISTILL_VIVID_HARNESS overrides the harness path.
#![cfg(feature = "v4l2")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use irdistill::device::capture::v4l2::{probe, V4l2Camera, V4l2Request};
use irdistill::device::capture::{CaptureError, Frame, PixelFormat};
use serde_json::{json, Value};

fn request(device: &str, format: Option<PixelFormat>, (w, h): (u32, u32), fps: u32) -> V4l2Request {
    V4l2Request {
        device: PathBuf::from(device),
        format,
        width_px: w,
        height_px: h,
        fps,
        buffer_count: 4,
        timeout_ms: 2000,
    }
}

fn open_error(req: &V4l2Request) -> String {
    match V4l2Camera::open(req) {
        Ok(_) => panic!("{} opened", req.device.display()),
        Err(e) => format!("{e:#}"),
    }
}

// --- host-side, no VM -------------------------------------------------------

#[test]
fn missing_device_is_a_clear_error() {
    let err = open_error(&request(
        "/dev/video-irdistill-missing",
        None,
        (640, 480),
        25,
    ));
    assert!(
        err.contains("/dev/video-irdistill-missing") && err.contains("no such device"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        probe(&[PathBuf::from("/dev/video-irdistill-missing")]).unwrap_err()
    );
    assert!(err.contains("/dev/video-irdistill-missing"), "{err}");
}

#[test]
fn non_v4l2_device_is_refused() {
    let err = open_error(&request("/dev/null", None, (640, 480), 25));
    assert!(
        err.contains("/dev/null") && err.contains("not a V4L2 device"),
        "{err}"
    );
}

#[test]
fn bad_requests_name_the_field() {
    let mut req = request("/dev/null", None, (640, 480), 25);
    req.timeout_ms = 0;
    assert!(open_error(&req).contains("timeout_ms"));
    let mut req = request("/dev/null", None, (640, 480), 25);
    req.buffer_count = 1;
    assert!(open_error(&req).contains("buffer_count"));
}

// --- the VM ------------------------------------------------------------------

fn harness() -> Option<(PathBuf, PathBuf)> {
    let script = std::env::var_os("IRDISTILL_VIVID_HARNESS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vivid/run-in-vivid.sh")
        });
    let v4l2_ctl = ["/usr/bin/v4l2-ctl", "/usr/local/bin/v4l2-ctl"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    let missing = match (&v4l2_ctl, script.is_file()) {
        (_, false) => format!("the vivid harness {}", script.display()),
        (None, true) => "v4l2-ctl (apt-get install v4l-utils)".to_string(),
        (Some(_), true) => return Some((script, v4l2_ctl.unwrap())),
    };
    if std::env::var_os("IRDISTILL_REQUIRE_VIVID").is_some() {
        panic!("{missing} is missing but IRDISTILL_REQUIRE_VIVID is set");
    }
    eprintln!("\n!!!!! SKIPPED: {missing} is missing; the vivid V4L2 tests did NOT run !!!!!\n");
    None
}

/// One VM at a time per test process. On first use the harness runs
/// apt-get (qemu, busybox) and downloads a kernel; two first runs at once
/// race for dpkg's lock and one fails. Two TCG guests on two cores would
/// also slow each other past their timeouts.
fn vm_slot() -> MutexGuard<'static, ()> {
    static VM: Mutex<()> = Mutex::new(());
    // a failed VM test poisons the lock; the next one may still run
    VM.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the guest once per test process; `None` when skipped.
fn guest_report() -> Option<&'static BTreeMap<String, Value>> {
    static REPORT: OnceLock<Option<BTreeMap<String, Value>>> = OnceLock::new();
    REPORT.get_or_init(run_guest).as_ref()
}

fn run_guest() -> Option<BTreeMap<String, Value>> {
    let (script, v4l2_ctl) = harness()?;
    let exe = std::env::current_exe().unwrap();
    let _slot = vm_slot();
    let t0 = Instant::now();
    let out = Command::new(&script)
        // TCG on a loaded 2-core CI machine, plus a first-use download.
        .args(["--timeout", "400", "--copy"])
        .arg(&exe)
        .arg("--copy")
        .arg(&v4l2_ctl)
        .arg("--")
        .args(["env", "IRDISTILL_VIVID_GUEST=1"])
        .arg(&exe)
        .args([
            "--exact",
            "vivid_guest",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("running the vivid harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "vivid VM run took {:.1} s (exit {:?})",
        t0.elapsed().as_secs_f64(),
        out.status.code()
    );
    assert!(
        out.status.success(),
        "vivid guest failed ({:?}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let report: BTreeMap<String, Value> = stdout
        .lines()
        // libtest may print "test vivid_guest ... " ahead of the first line.
        .filter_map(|l| l.find("@@CHECK ").map(|at| &l[at + "@@CHECK ".len()..]))
        .map(|l| {
            let (name, value) = l.split_once(' ').expect("@@CHECK name json");
            (
                name.to_string(),
                serde_json::from_str(value).expect("guest JSON"),
            )
        })
        .collect();
    assert!(
        report.contains_key("done"),
        "the guest did not finish:\n{stdout}\n{stderr}"
    );
    Some(report)
}

fn check<'a>(report: &'a BTreeMap<String, Value>, name: &str) -> &'a Value {
    report
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in the guest report: {report:#?}"))
}

#[test]
fn vivid_probe_lists_formats_sizes_and_rates() {
    let Some(r) = guest_report() else { return };
    let p = check(r, "probe");
    let devices = p["json"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{p}");
    let dev = &devices[0];
    assert_eq!(dev["path"], "/dev/video0");
    assert_eq!(dev["driver"], "vivid");
    assert_eq!(dev["can_capture"], true);
    let caps: Vec<&str> = dev["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        caps.contains(&"VIDEO_CAPTURE") && caps.contains(&"STREAMING"),
        "{caps:?}"
    );
    let formats = dev["formats"].as_array().unwrap();
    let find = |cc: &str| {
        formats
            .iter()
            .find(|f| f["fourcc"] == cc)
            .unwrap_or_else(|| panic!("no {cc}"))
    };
    for cc in ["YUYV", "NV12", "GREY", "RGB3"] {
        assert_eq!(find(cc)["supported"], true, "{cc}");
    }
    assert_eq!(find("BA81")["supported"], false, "Bayer is not convertible");
    // vivid's webcam input: discrete sizes with discrete rates.
    let yuyv = find("YUYV");
    assert_eq!(yuyv["sizes"]["kind"], "discrete");
    let sizes = yuyv["sizes"]["sizes"].as_array().unwrap();
    let vga = sizes
        .iter()
        .find(|s| s["width_px"] == 640 && s["height_px"] == 480)
        .expect("640x480");
    let fps: Vec<f64> = vga["rates"]["fps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(fps.contains(&25.0) && fps.contains(&1.0), "{fps:?}");
    // A measurement for the record, not a check (TCG timing varies).
    eprintln!("vivid 640x480 YUYV stream: {}", check(r, "rate"));
    let text = p["text"].as_str().unwrap();
    assert!(
        text.contains("/dev/video0") && text.contains("YUYV") && text.contains("640x480"),
        "{text}"
    );
    assert!(text.contains("not supported"), "{text}");
}

#[test]
fn vivid_grants_each_requested_format_with_right_geometry() {
    let Some(r) = guest_report() else { return };
    // (fourcc, PixelFormat as serialized, stride, frame bytes)
    for (name, variant, stride, bytes) in [
        ("YUYV", "YUYV", 1280, 1280 * 480),
        ("NV12", "NV12", 640, 640 * 480 * 3 / 2),
        ("GREY", "GREY", 640, 640 * 480),
        ("RGB3", "RGB24", 1920, 1920 * 480),
    ] {
        let c = check(r, &format!("format_{name}"));
        assert_eq!(c["granted"]["format"], variant, "{c}");
        assert_eq!(
            (
                c["granted"]["width_px"].as_u64(),
                c["granted"]["height_px"].as_u64()
            ),
            (Some(640), Some(480))
        );
        assert_eq!(c["granted"]["stride_bytes"], stride, "{c}");
        assert_eq!(c["granted"]["fps"], 25.0, "{c}");
        for f in c["frames"].as_array().unwrap() {
            assert_eq!(
                (&f["format"], &f["len"], &f["stride"]),
                (&json!(name), &json!(bytes), &json!(stride)),
                "{c}"
            );
            assert_eq!((&f["width"], &f["height"]), (&json!(640), &json!(480)));
        }
        let seqs: Vec<u64> = c["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["sequence"].as_u64().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{name}: sequence {seqs:?}"
        );
        assert_eq!(
            c["reallocated_after_first"], false,
            "{name}: the frame buffer was reallocated"
        );
    }
}

/// vivid's default pattern is 75 % colour bars: white, yellow, cyan, green,
/// magenta, red, blue, black from left to right, so luma falls bar by bar.
#[test]
fn vivid_frames_show_the_colour_bars() {
    let Some(r) = guest_report() else { return };
    for name in ["YUYV", "NV12", "GREY"] {
        let luma: Vec<i64> = check(r, &format!("format_{name}"))["bar_luma"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(luma.len(), 8);
        assert!(
            luma.windows(2).all(|w| w[0] > w[1]),
            "{name}: bar luma not falling: {luma:?}"
        );
        assert!(luma[0] - luma[7] > 100, "{name}: no contrast: {luma:?}");
    }
    let rgb: Vec<Vec<i64>> = check(r, "format_RGB3")["bar_rgb"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_i64().unwrap())
                .collect()
        })
        .collect();
    // Which channels are lit in each bar (75 % = 191 of 255).
    let lit = [
        [1, 1, 1],
        [1, 1, 0],
        [0, 1, 1],
        [0, 1, 0],
        [1, 0, 1],
        [1, 0, 0],
        [0, 0, 1],
        [0, 0, 0],
    ];
    for (bar, (px, on)) in rgb.iter().zip(lit).enumerate() {
        for (c, (&value, on)) in px.iter().zip(on).enumerate() {
            let ok = if on == 1 { value > 150 } else { value < 40 };
            assert!(ok, "bar {bar} channel {c}: {px:?} (all bars {rgb:?})");
        }
    }
    // NV12's chroma plane is not flat grey on colour bars.
    let uv = check(r, "format_NV12")["uv_range"].as_i64().unwrap();
    assert!(uv > 100, "NV12 chroma range {uv}");
}

#[test]
fn vivid_negotiation_falls_back_and_snaps() {
    let Some(r) = guest_report() else { return };
    // No format asked: the first of PixelFormat::PREFERENCE vivid offers.
    assert_eq!(check(r, "preference_none")["granted"]["format"], "YUYV");
    // MJPEG asked, vivid has none: same fallback.
    assert_eq!(check(r, "preference_mjpeg")["granted"]["format"], "YUYV");
    // 700x500 @ 30: nearest discrete size 640x480, fastest rate there 25.
    let g = &check(r, "nearest")["granted"];
    assert_eq!(
        (
            g["width_px"].as_u64(),
            g["height_px"].as_u64(),
            g["fps"].as_f64()
        ),
        (Some(640), Some(480), Some(25.0))
    );
    // 12 fps at 1280x720: nearest offered rate 12.5.
    assert_eq!(check(r, "nearest_rate")["granted"]["fps"], 12.5);
}

#[test]
fn vivid_stall_times_out_then_recovers() {
    let Some(r) = guest_report() else { return };
    let c = check(r, "stall");
    assert_eq!(c["result"], "timeout", "{c}");
    assert_eq!(c["after_unstall"], "frame", "{c}");
}

#[test]
fn vivid_error_flagged_buffer_is_corrupt_and_next_frame_fine() {
    let Some(r) = guest_report() else { return };
    let c = check(r, "buf_flag_error");
    assert_eq!(c["result"], "corrupt", "{c}");
    assert!(
        c["message"].as_str().unwrap().contains("/dev/video0"),
        "{c}"
    );
    assert_eq!(c["next"], "frame", "{c}");
}

#[test]
fn vivid_disconnect_is_reported_and_reopen_works() {
    let Some(r) = guest_report() else { return };
    let c = check(r, "disconnect");
    assert_eq!(c["result"], "disconnected", "{c}");
    let message = c["message"].as_str().unwrap();
    assert!(
        message.contains("/dev/video0") && message.contains("disconnected"),
        "{c}"
    );
    // While our fd is open the node refuses new opens, with a clear error.
    let held = c["open_while_held"].as_str().unwrap();
    assert!(held.contains("/dev/video0") && held.contains("gone"), "{c}");
    assert_eq!(c["reopened"], "frame", "{c}");
}

#[test]
fn vivid_fatal_streaming_error_is_a_disconnect_and_reopen_works() {
    let Some(r) = guest_report() else { return };
    let c = check(r, "fatal_error");
    assert_eq!(c["result"], "disconnected", "{c}");
    assert_eq!(c["reopened"], "frame", "{c}");
}

#[test]
fn vivid_streamon_failure_is_an_open_error() {
    let Some(r) = guest_report() else { return };
    let c = check(r, "streamon_error");
    let err = c["error"].as_str().unwrap();
    assert!(
        err.contains("/dev/video0") && err.contains("STREAMON"),
        "{c}"
    );
    assert_eq!(c["next_open"], "frame", "{c}");
}

#[test]
fn vivid_missing_node_in_guest() {
    let Some(r) = guest_report() else { return };
    let c = check(r, "missing");
    assert!(c["error"].as_str().unwrap().contains("/dev/video7"), "{c}");
}

// --- the daemon end to end (its own VM boot) ---------------------------------

#[cfg(feature = "trainer")]
mod daemon_common;

/// The lines between `@@begin` and the next `@@` marker.
#[cfg(feature = "trainer")]
fn section<'a>(stdout: &'a str, begin: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with(begin))
        .skip(1)
        .take_while(|l| !l.starts_with("@@"))
        .collect()
}

#[cfg(feature = "trainer")]
fn marker<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in:\n{stdout}"))
}

/// `irdistill probe --json`, `irdistill run --source v4l2:/dev/video0`
/// producing detections, and a vivid `disconnect` mid-stream that the
/// daemon survives: it reopens the camera and finishes its frames.
#[cfg(feature = "trainer")]
#[test]
fn vivid_daemon_probe_run_and_disconnect_recovery() {
    let Some((script, v4l2_ctl)) = harness() else {
        return;
    };
    let model = daemon_common::model();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_irdistill"));
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vivid_daemon.sh");
    let slot = vm_slot();
    let t0 = Instant::now();
    let out = Command::new(&script)
        .args(["--timeout", "500"])
        .args([
            "--copy".as_ref(),
            bin.as_os_str(),
            "--copy".as_ref(),
            model.as_os_str(),
        ])
        .args([
            "--copy".as_ref(),
            guest.as_os_str(),
            "--copy".as_ref(),
            v4l2_ctl.as_os_str(),
        ])
        .arg("--")
        .arg("sh")
        .arg(&guest)
        .arg(&bin)
        .arg(model)
        .output()
        .expect("running the vivid harness");
    drop(slot);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "vivid daemon VM run took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let all = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(
        out.status.success() && stdout.contains("@@END"),
        "{:?}\n{all}",
        out.status
    );

    // probe --json
    assert_eq!(marker(&stdout, "@@PROBE-RC"), "0", "{all}");
    let probe: Value =
        serde_json::from_str(&section(&stdout, "@@PROBE-BEGIN").join("\n")).expect("probe JSON");
    assert_eq!(probe[0]["path"], "/dev/video0", "{probe}");
    assert_eq!(probe[0]["driver"], "vivid", "{probe}");

    // run: one JSON line per frame, at the camera's size, with detections
    assert_eq!(marker(&stdout, "@@RUN-RC"), "0", "{all}");
    let lines: Vec<Value> = section(&stdout, "@@RUN-BEGIN")
        .iter()
        // frame lines (object events have a "type")
        .filter(|l| l.starts_with('{') && !l.contains("\"type\":"))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 8, "{all}");
    for line in &lines {
        assert_eq!(
            (&line["width"], &line["height"]),
            (&json!(640), &json!(480)),
            "{line}"
        );
        assert!(line["detections"].is_array(), "{line}");
    }
    let frames: Vec<u64> = lines.iter().map(|l| l["frame"].as_u64().unwrap()).collect();
    assert!(frames.windows(2).all(|w| w[0] < w[1]), "{frames:?}");
    let detections: usize = lines
        .iter()
        .map(|l| l["detections"].as_array().unwrap().len())
        .sum();
    eprintln!("vivid run: {} frames, {detections} detections", lines.len());

    // disconnect mid-stream: the daemon keeps going and finishes
    assert_eq!(marker(&stdout, "@@REC-CTL-RC"), "0", "{all}");
    assert_eq!(marker(&stdout, "@@REC-RC"), "0", "{all}");
    assert_eq!(marker(&stdout, "@@REC-LINES "), "30", "{all}");
    let summary: Value =
        serde_json::from_str(marker(&stdout, "@@REC-SUMMARY")).expect("summary JSON");
    eprintln!("vivid recovery run: {summary}");
    assert!(
        summary["camera_reconnects"].as_u64().unwrap() >= 1,
        "{summary}\n{all}"
    );
}

// --- the guest side (runs inside the VM) -------------------------------------

fn emit(name: &str, value: Value) {
    println!("@@CHECK {name} {value}");
}

fn v4l2_ctl(control: &str) {
    let out = Command::new("/usr/bin/v4l2-ctl")
        .args(["-d", "/dev/video0", "-c", control])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        other => panic!("v4l2-ctl -c {control}: {other:?}"),
    }
}

/// What one read gave, as a word for the report.
fn outcome(result: &Result<(), CaptureError>) -> &'static str {
    match result {
        Ok(()) => "frame",
        Err(CaptureError::Timeout) => "timeout",
        Err(CaptureError::Disconnected(_)) => "disconnected",
        Err(CaptureError::Corrupt(_)) => "corrupt",
        Err(CaptureError::EndOfStream) => "end",
    }
}

fn message(result: &Result<(), CaptureError>) -> String {
    result
        .as_ref()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// Reads until something other than a frame happens (at most `limit` reads).
fn read_until_not_frame(
    camera: &mut V4l2Camera,
    frame: &mut Frame,
    limit: usize,
) -> Result<(), CaptureError> {
    for _ in 0..limit {
        camera.read_into(frame)?;
    }
    Ok(())
}

/// Opens, retrying while the node is still going away or coming back.
fn reopen(req: &V4l2Request) -> (V4l2Camera, usize) {
    for attempt in 1..=100 {
        if let Ok(camera) = V4l2Camera::open(req) {
            return (camera, attempt);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} did not come back", req.device.display());
}

fn frame_summary(frame: &Frame) -> Value {
    json!({
        "format": fourcc_name(frame.format),
        "width": frame.width_px, "height": frame.height_px, "stride": frame.stride_bytes,
        "len": frame.data.len(), "sequence": frame.sequence,
    })
}

fn fourcc_name(format: PixelFormat) -> String {
    String::from_utf8_lossy(&format.fourcc()).into_owned()
}

/// Luma at the centre of each of the 8 bars, on the middle row.
fn bar_luma(frame: &Frame) -> Vec<u8> {
    let (w, h, stride) = (
        frame.width_px as usize,
        frame.height_px as usize,
        frame.stride_bytes as usize,
    );
    let row = &frame.data[stride * (h / 2)..];
    (0..8)
        .map(|bar| {
            let x = (2 * bar + 1) * w / 16;
            match frame.format {
                PixelFormat::Yuyv => row[2 * x],
                _ => row[x],
            }
        })
        .collect()
}

fn bar_rgb(frame: &Frame) -> Vec<[u8; 3]> {
    let (w, h, stride) = (
        frame.width_px as usize,
        frame.height_px as usize,
        frame.stride_bytes as usize,
    );
    let row = &frame.data[stride * (h / 2)..];
    (0..8)
        .map(|bar| {
            let x = (2 * bar + 1) * w / 16;
            [row[3 * x], row[3 * x + 1], row[3 * x + 2]]
        })
        .collect()
}

fn nv12_uv_range(frame: &Frame) -> i64 {
    let (stride, h) = (frame.stride_bytes as usize, frame.height_px as usize);
    let uv = &frame.data[stride * h..];
    let (min, max) = uv
        .iter()
        .fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    i64::from(max) - i64::from(min)
}

fn guest_formats() {
    for format in [
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Grey,
        PixelFormat::Rgb24,
    ] {
        let mut camera =
            V4l2Camera::open(&request("/dev/video0", Some(format), (640, 480), 25)).unwrap();
        let mut frame = Frame::empty();
        let mut frames = Vec::new();
        let mut first_buffer = None;
        let mut reallocated = false;
        for _ in 0..5 {
            camera.read_into(&mut frame).unwrap();
            let buffer = (frame.data.as_ptr() as usize, frame.data.capacity());
            reallocated |= first_buffer.is_some_and(|b| b != buffer);
            first_buffer.get_or_insert(buffer);
            frames.push(frame_summary(&frame));
        }
        let mut report = json!({
            "granted": serde_json::to_value(camera.granted()).unwrap(),
            "frames": frames,
            "reallocated_after_first": reallocated,
        });
        if format == PixelFormat::Rgb24 {
            report["bar_rgb"] = json!(bar_rgb(&frame));
        } else {
            report["bar_luma"] = json!(bar_luma(&frame));
        }
        if format == PixelFormat::Nv12 {
            report["uv_range"] = json!(nv12_uv_range(&frame));
        }
        emit(&format!("format_{}", fourcc_name(format)), report);
    }
}

fn guest_negotiation() {
    for (name, req) in [
        (
            "preference_none",
            request("/dev/video0", None, (640, 480), 25),
        ),
        (
            "preference_mjpeg",
            request("/dev/video0", Some(PixelFormat::Mjpeg), (640, 480), 25),
        ),
        (
            "nearest",
            request("/dev/video0", Some(PixelFormat::Yuyv), (700, 500), 30),
        ),
        (
            "nearest_rate",
            request("/dev/video0", Some(PixelFormat::Yuyv), (1280, 720), 12),
        ),
    ] {
        let mut camera = V4l2Camera::open(&req).unwrap();
        let mut frame = Frame::empty();
        let result = camera.read_into(&mut frame);
        emit(
            name,
            json!({ "granted": serde_json::to_value(camera.granted()).unwrap(), "read": outcome(&result) }),
        );
    }
}

fn guest_stall() {
    let mut req = request("/dev/video0", Some(PixelFormat::Yuyv), (640, 480), 25);
    req.timeout_ms = 500;
    let mut camera = V4l2Camera::open(&req).unwrap();
    let mut frame = Frame::empty();
    camera.read_into(&mut frame).unwrap();
    // vivid drops every buffer: nothing arrives, a stalled camera.
    v4l2_ctl("percentage_of_dropped_buffers=100");
    let result = read_until_not_frame(&mut camera, &mut frame, 20);
    v4l2_ctl("percentage_of_dropped_buffers=0");
    let after = camera.read_into(&mut frame);
    emit(
        "stall",
        json!({ "result": outcome(&result), "after_unstall": outcome(&after) }),
    );
}

fn guest_buf_flag_error() {
    let mut camera = V4l2Camera::open(&request(
        "/dev/video0",
        Some(PixelFormat::Yuyv),
        (640, 480),
        25,
    ))
    .unwrap();
    let mut frame = Frame::empty();
    camera.read_into(&mut frame).unwrap();
    v4l2_ctl("inject_v4l2_buf_flag_error=1");
    let result = read_until_not_frame(&mut camera, &mut frame, 20);
    let next = camera.read_into(&mut frame);
    emit(
        "buf_flag_error",
        json!({ "result": outcome(&result), "message": message(&result), "next": outcome(&next) }),
    );
}

fn guest_disconnect() {
    let req = request("/dev/video0", Some(PixelFormat::Yuyv), (640, 480), 25);
    let mut camera = V4l2Camera::open(&req).unwrap();
    let mut frame = Frame::empty();
    camera.read_into(&mut frame).unwrap();
    v4l2_ctl("disconnect=1");
    let result = read_until_not_frame(&mut camera, &mut frame, 20);
    let held = V4l2Camera::open(&req)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    drop(camera);
    let t0 = Instant::now();
    let (mut camera, attempts) = reopen(&req);
    let reopen_ms = t0.elapsed().as_millis();
    let reopened = camera.read_into(&mut frame);
    emit(
        "disconnect",
        json!({
            "result": outcome(&result), "message": message(&result), "open_while_held": held,
            "reopen_attempts": attempts, "reopen_ms": reopen_ms, "reopened": outcome(&reopened),
        }),
    );
}

fn guest_fatal_error() {
    let req = request("/dev/video0", Some(PixelFormat::Yuyv), (640, 480), 25);
    let mut camera = V4l2Camera::open(&req).unwrap();
    let mut frame = Frame::empty();
    camera.read_into(&mut frame).unwrap();
    v4l2_ctl("inject_fatal_streaming_error=1");
    let result = read_until_not_frame(&mut camera, &mut frame, 20);
    drop(camera);
    let (mut camera, attempts) = reopen(&req);
    let reopened = camera.read_into(&mut frame);
    emit(
        "fatal_error",
        json!({ "result": outcome(&result), "message": message(&result), "reopen_attempts": attempts,
                "reopened": outcome(&reopened) }),
    );
}

fn guest_streamon_error() {
    let req = request("/dev/video0", Some(PixelFormat::Yuyv), (640, 480), 25);
    v4l2_ctl("inject_vidioc_streamon_error=1");
    let error = V4l2Camera::open(&req)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    let mut camera = V4l2Camera::open(&req).unwrap();
    let mut frame = Frame::empty();
    let next = camera.read_into(&mut frame);
    emit(
        "streamon_error",
        json!({ "error": error, "next_open": outcome(&next) }),
    );
}

fn guest_rate() {
    let mut camera = V4l2Camera::open(&request(
        "/dev/video0",
        Some(PixelFormat::Yuyv),
        (640, 480),
        25,
    ))
    .unwrap();
    let mut frame = Frame::empty();
    camera.read_into(&mut frame).unwrap();
    let (t0, first) = (Instant::now(), frame.sequence);
    let mut gaps = 0;
    let mut last = first;
    for _ in 0..50 {
        camera.read_into(&mut frame).unwrap();
        gaps += frame.sequence - last - 1;
        last = frame.sequence;
    }
    let seconds = t0.elapsed().as_secs_f64();
    emit(
        "rate",
        json!({ "frames": 50, "seconds": seconds, "fps": 50.0 / seconds, "sequence_gaps": gaps }),
    );
}

/// Runs inside the vivid VM (see `run_guest`); does nothing elsewhere.
#[test]
#[ignore]
fn vivid_guest() {
    if std::env::var_os("IRDISTILL_VIVID_GUEST").is_none() {
        return;
    }
    let infos = probe(&[]).unwrap();
    let text: String = infos.iter().map(|i| i.to_string()).collect();
    emit(
        "probe",
        json!({ "json": serde_json::to_value(&infos).unwrap(), "text": text }),
    );
    let missing = V4l2Camera::open(&request("/dev/video7", None, (640, 480), 25))
        .err()
        .map(|e| format!("{e:#}"));
    emit("missing", json!({ "error": missing }));
    guest_formats();
    guest_negotiation();
    guest_rate();
    guest_stall();
    guest_buf_flag_error();
    guest_streamon_error();
    guest_fatal_error();
    guest_disconnect();
    emit("done", json!(true));
}
