//! `trainer synth` end to end: reproducible bytes, the layout the readers
//! accept, and refusal to touch folders it does not own.

use irdistill::shared::data::Dataset;
use irdistill::shared::synth::{Generator, SynthConfig};
use std::path::Path;
use std::process::Command;

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

fn synth(out: &Path, extra: &[&str]) -> std::process::Output {
    trainer()
        .args(["synth", "--out"])
        .arg(out)
        .args(["--pairs", "12", "--size", "96x80"])
        .args(extra)
        .output()
        .expect("run trainer")
}

/// All files under `dir`, relative path → bytes, sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn same_seed_gives_byte_identical_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    assert!(synth(
        &a,
        &[
            "--seed",
            "4",
            "--preview",
            tmp.path().join("pa.png").to_str().unwrap()
        ]
    )
    .status
    .success());
    assert!(synth(
        &b,
        &[
            "--seed",
            "4",
            "--preview",
            tmp.path().join("pb.png").to_str().unwrap()
        ]
    )
    .status
    .success());
    assert!(synth(&c, &["--seed", "5"]).status.success());
    let (ta, tb, tc) = (tree(&a), tree(&b), tree(&c));
    assert_eq!(
        ta.len(),
        12 * 3 + 1,
        "files: {:?}",
        ta.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    assert!(ta == tb, "same seed, different bytes");
    assert!(ta != tc, "different seeds, same bytes");
    assert_eq!(
        std::fs::read(tmp.path().join("pa.png")).unwrap(),
        std::fs::read(tmp.path().join("pb.png")).unwrap()
    );
}

#[test]
fn output_reads_back_with_the_generators_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("d");
    let run = synth(&out, &["--seed", "7", "--conditions", "night,fog"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.names, vec!["person", "car"]);
    assert_eq!(ds.samples.len(), 12);
    let mut config = SynthConfig::default();
    config.scene.width_px = 96;
    config.scene.height_px = 80;
    config.conditions = irdistill::shared::condition::parse_conditions("night,fog").unwrap();
    let gen = Generator::new(config, 7).unwrap();
    for (i, s) in ds.samples.iter().enumerate() {
        let expected = gen.pair(i as u64);
        assert_eq!(s.name, Generator::name_of(i as u64, 12));
        assert_eq!(s.split, expected.split);
        assert_eq!(s.condition, expected.pair.condition);
        assert!(s.condition.unwrap().is_adverse());
        assert_eq!(s.labels.len(), expected.pair.labels.len());
        for (got, want) in s.labels.iter().zip(&expected.pair.labels) {
            assert_eq!(got.class_id, want.class_id);
            // labels are written with 6 decimals of the frame size
            assert!(
                (got.bbox.x1 - want.bbox.x1).abs() < 1e-3
                    && (got.bbox.y2 - want.bbox.y2).abs() < 1e-3
            );
        }
        let pair = ds.load_pair(s).unwrap();
        assert_eq!(pair.rgb.as_raw(), expected.pair.rgb.as_raw());
        assert_eq!(pair.ir.as_raw(), expected.pair.ir.as_raw());
    }
}

#[test]
fn refuses_foreign_folders_and_overwrites_only_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("mine");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "precious").unwrap();
    let run = synth(&foreign, &["--overwrite"]);
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(foreign.join("notes.txt")).unwrap(),
        "precious"
    );

    let out = tmp.path().join("gen");
    assert!(synth(&out, &[]).status.success());
    let again = synth(&out, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
    // a user's own pair added to a synth folder is never deleted
    std::fs::write(out.join("labels/mine.txt"), "0 0.5 0.5 0.1 0.1\n").unwrap();
    let guarded = trainer()
        .args(["synth", "--out"])
        .arg(&out)
        .args(["--pairs", "3", "--size", "96x80", "--overwrite"])
        .output()
        .unwrap();
    assert!(!guarded.status.success());
    assert!(
        String::from_utf8_lossy(&guarded.stderr).contains("mine.txt"),
        "{}",
        String::from_utf8_lossy(&guarded.stderr)
    );
    assert!(out.join("labels/mine.txt").exists() && out.join("labels/000000.txt").exists());
    std::fs::remove_file(out.join("labels/mine.txt")).unwrap();
    // a smaller overwrite leaves no stale pairs behind
    let smaller = trainer()
        .args(["synth", "--out"])
        .arg(&out)
        .args(["--pairs", "3", "--size", "96x80", "--overwrite"])
        .output()
        .unwrap();
    assert!(
        smaller.status.success(),
        "{}",
        String::from_utf8_lossy(&smaller.stderr)
    );
    assert_eq!(Dataset::open(&out).unwrap().samples.len(), 3);
}

#[test]
fn bad_arguments_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["--size", "96by80"], "96by80"),
        (vec!["--size", "8x8"], "8x8"),
        (vec!["--conditions", "day,dusk"], "dusk"),
        (vec!["--misregistration", "50"], "misregistration"),
    ] {
        let run = trainer()
            .args(["synth", "--pairs", "2", "--out"])
            .arg(tmp.path().join("x"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}
