//! Dataset readers on small fixtures written to temporary folders: the
//! paired YOLO-txt layout and LLVIP, their samples and labels, and one test
//! per validation error checking that the message names the offending file.

use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage};
use irdistill::shared::bbox::BBox;
use irdistill::shared::condition::{stable_hash, Condition, Split};
use irdistill::shared::data::meta::{DatasetMeta, ImageMeta};
use irdistill::shared::data::{Dataset, Layout};
use std::fs;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

// ---------------------------------------------------------------- fixtures

fn rgb_image(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 200]))
}

fn ir_image(w: u32, h: u32) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| Luma([(x * 3 + y) as u8]))
}

fn write_rgb(path: &Path, w: u32, h: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    rgb_image(w, h).save(path).unwrap();
}

fn write_ir(path: &Path, w: u32, h: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    ir_image(w, h).save(path).unwrap();
}

fn write_text(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// The full error chain, as a CLI printing `{:#}` shows it.
fn open_error(dir: &Path) -> String {
    format!("{:#}", Dataset::open(dir).unwrap_err())
}

fn assert_names(err: &str, path: &Path) {
    let shown = path.display().to_string();
    assert!(err.contains(&shown), "error does not name {shown}: {err}");
}

/// A paired YOLO-txt dataset being built in a temporary folder.
struct Yolo {
    dir: TempDir,
}

impl Yolo {
    /// An empty dataset whose `classes.txt` names `person` and `car`.
    fn new() -> Self {
        let yolo = Yolo {
            dir: tempfile::tempdir().unwrap(),
        };
        write_text(&yolo.root().join("classes.txt"), "person\ncar\n");
        yolo
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn rgb(&self, file: &str) -> PathBuf {
        self.root().join("images/rgb").join(file)
    }

    fn ir(&self, file: &str) -> PathBuf {
        self.root().join("images/ir").join(file)
    }

    fn label(&self, name: &str) -> PathBuf {
        self.root().join("labels").join(format!("{name}.txt"))
    }

    /// A 40x20 PNG pair `name` with `labels` as its label file text.
    fn add(&self, name: &str, labels: &str) -> &Self {
        write_rgb(&self.rgb(&format!("{name}.png")), 40, 20);
        write_ir(&self.ir(&format!("{name}.png")), 40, 20);
        write_text(&self.label(name), labels);
        self
    }

    fn open(&self) -> Dataset {
        Dataset::open(self.root()).unwrap()
    }

    fn error(&self) -> String {
        open_error(self.root())
    }
}

/// A released-LLVIP-like dataset being built in a temporary folder.
struct Llvip {
    dir: TempDir,
}

const LLVIP_W: u32 = 32;
const LLVIP_H: u32 = 24;

impl Llvip {
    fn new() -> Self {
        let llvip = Llvip {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["visible/train", "infrared/train", "Annotations"] {
            fs::create_dir_all(llvip.root().join(d)).unwrap();
        }
        llvip
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn visible(&self, folder: &str, name: &str) -> PathBuf {
        self.root()
            .join("visible")
            .join(folder)
            .join(format!("{name}.jpg"))
    }

    fn infrared(&self, folder: &str, name: &str) -> PathBuf {
        self.root()
            .join("infrared")
            .join(folder)
            .join(format!("{name}.jpg"))
    }

    fn xml(&self, name: &str) -> PathBuf {
        self.root().join("Annotations").join(format!("{name}.xml"))
    }

    /// A JPEG pair in `folder` (`train` or `test`) with one annotated
    /// object per `(class, [xmin, ymin, xmax, ymax])`.
    fn add(&self, folder: &str, name: &str, objects: &[(&str, [f32; 4])]) -> &Self {
        self.add_images(folder, name);
        write_text(&self.xml(name), &voc_xml(name, objects));
        self
    }

    fn add_images(&self, folder: &str, name: &str) {
        write_rgb(&self.visible(folder, name), LLVIP_W, LLVIP_H);
        write_ir(&self.infrared(folder, name), LLVIP_W, LLVIP_H);
    }

    fn error(&self) -> String {
        open_error(self.root())
    }
}

fn voc_xml(name: &str, objects: &[(&str, [f32; 4])]) -> String {
    let mut xml = format!(
        "<annotation>\n  <filename>{name}.jpg</filename>\n  \
         <size><width>{LLVIP_W}</width><height>{LLVIP_H}</height><depth>3</depth></size>\n"
    );
    for (class, [x1, y1, x2, y2]) in objects {
        xml += &format!(
            "  <object>\n    <name>{class}</name>\n    <difficult>0</difficult>\n    \
             <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>\n  \
             </object>\n"
        );
    }
    xml + "</annotation>\n"
}

/// The first six-digit LLVIP-style name at or after `start` for which
/// `held_out` tells whether its hash puts it in the validation tenth.
fn llvip_name(start: u32, held_out: bool) -> String {
    (start..)
        .map(|i| format!("{i:06}"))
        .find(|n| (stable_hash(n) % 10 == 0) == held_out)
        .unwrap()
}

// ------------------------------------------------------------ YOLO layout

#[test]
fn yolo_reads_samples_names_labels_splits_and_conditions() {
    let yolo = Yolo::new();
    yolo.add("b", "0 0.5 0.5 0.5 0.5\n\n1 0.25 0.25 0.1 0.2\n")
        .add("a", "1 0.5 0.5 1 1\n");
    // A JPEG RGB with a PNG IR partner pairs by stem.
    write_rgb(&yolo.rgb("c.jpg"), 40, 20);
    write_ir(&yolo.ir("c.png"), 40, 20);
    write_text(&yolo.label("c"), "0 0.5 0.5 0.2 0.2\n");
    let meta = DatasetMeta {
        names: vec!["human".into(), "vehicle".into(), "dog".into()],
        images: [
            (
                "a".to_owned(),
                ImageMeta {
                    condition: Some(Condition::Fog),
                    split: Some(Split::Test),
                },
            ),
            (
                "b".to_owned(),
                ImageMeta {
                    condition: Some(Condition::Night),
                    split: None,
                },
            ),
        ]
        .into(),
        ..Default::default()
    };
    meta.write(&yolo.root().join("meta.json")).unwrap();

    let ds = yolo.open();
    assert_eq!(ds.layout, Layout::YoloPairs);
    assert_eq!(ds.root, yolo.root());
    // meta.json's names win over classes.txt.
    assert_eq!(ds.names, ["human", "vehicle", "dog"]);
    let names: Vec<&str> = ds.samples.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);

    let [a, b, c] = &ds.samples[..] else {
        unreachable!()
    };
    assert_eq!((a.width_px, a.height_px), (40, 20));
    assert_eq!(a.rgb_path, yolo.rgb("a.png"));
    assert_eq!(a.ir_path, yolo.ir("a.png"));
    assert_eq!((a.condition, a.split), (Some(Condition::Fog), Split::Test));
    assert_eq!(a.labels.len(), 1);
    assert_eq!(a.labels[0].class_id, 1);
    assert_eq!(a.labels[0].bbox, BBox::new(0.0, 0.0, 40.0, 20.0));

    // Condition from meta, split from the name's hash.
    assert_eq!(b.condition, Some(Condition::Night));
    assert_eq!(b.split, Split::from_hash(stable_hash("b")));
    let boxes: Vec<(usize, BBox)> = b.labels.iter().map(|l| (l.class_id, l.bbox)).collect();
    assert_eq!(
        boxes,
        [
            (0, BBox::new(10.0, 5.0, 30.0, 15.0)),
            (1, BBox::new(8.0, 3.0, 12.0, 7.0))
        ]
    );

    // Not in meta: no condition, hashed split.
    assert_eq!(c.rgb_path, yolo.rgb("c.jpg"));
    assert_eq!(c.ir_path, yolo.ir("c.png"));
    assert_eq!(
        (c.condition, c.split),
        (None, Split::from_hash(stable_hash("c")))
    );
}

#[test]
fn yolo_split_selects_samples_in_name_order() {
    let yolo = Yolo::new();
    let names: Vec<String> = (0..30).map(|i| format!("img{i:02}")).collect();
    for name in &names {
        yolo.add(name, "");
    }
    let ds = yolo.open();
    let mut seen = 0;
    for split in [Split::Train, Split::Val, Split::Test] {
        let part = ds.split(split);
        assert!(part.windows(2).all(|w| w[0].name < w[1].name));
        for sample in &part {
            assert_eq!(sample.split, Split::from_hash(stable_hash(&sample.name)));
        }
        seen += part.len();
    }
    assert_eq!(seen, names.len());
}

#[test]
fn yolo_names_come_from_classes_txt_without_meta() {
    let yolo = Yolo::new();
    write_text(&yolo.root().join("classes.txt"), "person\n\n  car  \r\n");
    yolo.add("a", "1 0.5 0.5 0.5 0.5");
    let ds = yolo.open();
    assert_eq!(ds.names, ["person", "car"]);
    assert_eq!(ds.samples[0].condition, None);
}

#[test]
fn yolo_without_class_names_is_an_error() {
    let yolo = Yolo::new();
    yolo.add("a", "");
    fs::remove_file(yolo.root().join("classes.txt")).unwrap();
    // A meta.json without names does not count either.
    DatasetMeta::default()
        .write(&yolo.root().join("meta.json"))
        .unwrap();
    let err = yolo.error();
    assert!(
        err.contains("meta.json") && err.contains("classes.txt"),
        "{err}"
    );
}

#[test]
fn yolo_empty_label_file_means_no_objects() {
    let yolo = Yolo::new();
    yolo.add("a", "").add("b", "\n   \n");
    let ds = yolo.open();
    assert!(ds.samples.iter().all(|s| s.labels.is_empty()));
}

#[test]
fn yolo_missing_label_file_names_the_expected_path() {
    let yolo = Yolo::new();
    yolo.add("a", "").add("b", "");
    fs::remove_file(yolo.label("b")).unwrap();
    let err = yolo.error();
    assert!(err.contains("missing label file"), "{err}");
    assert_names(&err, &yolo.label("b"));
}

#[test]
fn yolo_rgb_without_ir_partner_is_an_error() {
    let yolo = Yolo::new();
    yolo.add("a", "");
    write_rgb(&yolo.rgb("lonely.png"), 40, 20);
    let err = yolo.error();
    assert!(err.contains("no IR partner"), "{err}");
    assert_names(&err, &yolo.rgb("lonely.png"));
}

#[test]
fn yolo_ir_without_rgb_partner_is_an_error() {
    let yolo = Yolo::new();
    yolo.add("a", "");
    write_ir(&yolo.ir("lonely.png"), 40, 20);
    let err = yolo.error();
    assert!(err.contains("no RGB partner"), "{err}");
    assert_names(&err, &yolo.ir("lonely.png"));
}

#[test]
fn yolo_pair_of_different_sizes_names_both_files_and_sizes() {
    let yolo = Yolo::new();
    yolo.add("a", "");
    write_ir(&yolo.ir("a.png"), 40, 21);
    let err = yolo.error();
    assert_names(&err, &yolo.rgb("a.png"));
    assert_names(&err, &yolo.ir("a.png"));
    assert!(err.contains("40x20") && err.contains("40x21"), "{err}");
}

/// Opens a dataset whose only label file has `bad` on line 3 and returns
/// the error, after checking that it names `labels/a.txt:3`.
fn label_line_error(bad: &str) -> String {
    let yolo = Yolo::new();
    yolo.add("a", &format!("0 0.5 0.5 0.1 0.1\n\n{bad}\n"));
    let err = yolo.error();
    let location = format!("{}:3:", yolo.label("a").display());
    assert!(
        err.contains(&location),
        "error does not name {location}: {err}"
    );
    err
}

#[test]
fn yolo_label_line_with_wrong_field_count() {
    let err = label_line_error("0 0.5 0.5 0.1");
    assert!(err.contains("expected 5 fields"), "{err}");
    // a sixth field is a score (ultralytics' save_conf, trainer autolabel);
    // a seventh is an error
    let err = label_line_error("0 0.5 0.5 0.1 0.1 0.9 3");
    assert!(err.contains("found 7"), "{err}");
    let err = label_line_error("0 0.5 0.5 0.1 0.1 high");
    assert!(err.contains("score 'high'"), "{err}");
}

#[test]
fn yolo_label_line_with_non_numeric_field() {
    let err = label_line_error("0 0.5 half 0.1 0.1");
    assert!(err.contains("'half'"), "{err}");
    let err = label_line_error("person 0.5 0.5 0.1 0.1");
    assert!(err.contains("'person'"), "{err}");
}

#[test]
fn yolo_label_line_with_nan() {
    let err = label_line_error("0 NaN 0.5 0.1 0.1");
    assert!(err.contains("'NaN'"), "{err}");
}

#[test]
fn yolo_label_line_with_negative_size() {
    let err = label_line_error("0 0.5 0.5 -0.1 0.1");
    assert!(err.contains("positive"), "{err}");
}

#[test]
fn yolo_class_id_out_of_range_names_id_and_class_count() {
    let err = label_line_error("2 0.5 0.5 0.1 0.1");
    assert!(
        err.contains("class id 2") && err.contains("2 classes"),
        "{err}"
    );
}

#[test]
fn yolo_box_outside_the_image_is_an_error() {
    let err = label_line_error("0 0.95 0.5 0.2 0.2");
    assert!(err.contains("outside the image"), "{err}");
}

#[test]
fn yolo_box_within_tolerance_of_the_edge_is_clipped() {
    let yolo = Yolo::new();
    yolo.add("a", "0 0.1 0.9004 0.2 0.2\n");
    let bbox = yolo.open().samples[0].labels[0].bbox;
    assert_eq!((bbox.x1, bbox.y2), (0.0, 20.0));
}

#[test]
fn yolo_corrupt_image_header_names_the_file() {
    let yolo = Yolo::new();
    yolo.add("a", "");
    write_text(&yolo.ir("a.png"), "not an image");
    let err = yolo.error();
    assert!(err.contains("cannot read image header"), "{err}");
    assert_names(&err, &yolo.ir("a.png"));
}

#[test]
fn load_pair_decodes_both_images() {
    let yolo = Yolo::new();
    yolo.add("a", "0 0.5 0.5 0.5 0.5");
    // A colour-mapped IR image is reduced to gray.
    write_rgb(&yolo.rgb("b.png"), 40, 20);
    RgbImage::from_pixel(40, 20, Rgb([90, 90, 90]))
        .save(yolo.ir("b.png"))
        .unwrap();
    write_text(&yolo.label("b"), "");
    let meta = DatasetMeta {
        names: vec!["person".into()],
        images: [(
            "a".to_owned(),
            ImageMeta {
                condition: Some(Condition::Day),
                split: None,
            },
        )]
        .into(),
        ..Default::default()
    };
    meta.write(&yolo.root().join("meta.json")).unwrap();
    let ds = yolo.open();

    let pair = ds.load_pair(&ds.samples[0]).unwrap();
    assert_eq!(pair.name, "a");
    assert_eq!((pair.width_px(), pair.height_px()), (40, 20));
    assert_eq!(pair.rgb, rgb_image(40, 20));
    assert_eq!(pair.ir, ir_image(40, 20));
    assert_eq!(pair.labels, ds.samples[0].labels);
    assert_eq!(pair.condition, Some(Condition::Day));

    let pair = ds.load_pair(&ds.samples[1]).unwrap();
    assert_eq!(pair.ir.dimensions(), (40, 20));
    assert!(pair.ir.pixels().all(|p| p.0 == [90]));
}

#[test]
fn load_pair_decode_failure_names_the_file() {
    let yolo = Yolo::new();
    yolo.add("a", "");
    // Keep the header but cut the pixel data: opening (headers only)
    // succeeds, decoding fails.
    let mut png = Vec::new();
    rgb_image(40, 20)
        .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    fs::write(yolo.rgb("a.png"), &png[..png.len() - 40]).unwrap();
    let ds = yolo.open();
    let err = format!("{:#}", ds.load_pair(&ds.samples[0]).unwrap_err());
    assert!(err.contains("cannot decode"), "{err}");
    assert_names(&err, &yolo.rgb("a.png"));
}

// ----------------------------------------------------------------- LLVIP

#[test]
fn llvip_reads_samples_splits_night_condition_and_boxes() {
    let llvip = Llvip::new();
    let kept = llvip_name(10001, false);
    let held_out = llvip_name(10001, true);
    let test = "190001";
    llvip
        .add(
            "train",
            &kept,
            &[
                ("person", [1.0, 2.0, 11.0, 22.0]),
                ("person", [20.0, 0.0, 32.5, 24.0]),
            ],
        )
        .add("train", &held_out, &[])
        .add("test", test, &[("person", [0.0, 0.0, 8.0, 8.0])]);

    let ds = Dataset::open(llvip.root()).unwrap();
    assert_eq!(ds.layout, Layout::Llvip);
    assert_eq!(ds.names, ["person"]);
    let mut expected = vec![kept.clone(), held_out.clone(), test.to_owned()];
    expected.sort();
    let names: Vec<&str> = ds.samples.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, expected);
    assert!(ds
        .samples
        .iter()
        .all(|s| s.condition == Some(Condition::Night)));
    assert!(ds
        .samples
        .iter()
        .all(|s| (s.width_px, s.height_px) == (LLVIP_W, LLVIP_H)));

    let by_name = |name: &str| ds.samples.iter().find(|s| s.name == name).unwrap();
    let kept = by_name(&kept);
    assert_eq!(kept.split, Split::Train);
    assert_eq!(kept.rgb_path, llvip.visible("train", &kept.name));
    assert_eq!(kept.ir_path, llvip.infrared("train", &kept.name));
    let boxes: Vec<(usize, BBox)> = kept.labels.iter().map(|l| (l.class_id, l.bbox)).collect();
    // VOC corners as given; the second box is clipped (0.5 px over).
    assert_eq!(
        boxes,
        [
            (0, BBox::new(1.0, 2.0, 11.0, 22.0)),
            (0, BBox::new(20.0, 0.0, 32.0, 24.0))
        ]
    );
    assert_eq!(by_name(&held_out).split, Split::Val);
    assert!(by_name(&held_out).labels.is_empty());
    assert_eq!(by_name(test).split, Split::Test);
    assert_eq!(ds.split(Split::Test).len(), 1);

    let pair = ds.load_pair(by_name(test)).unwrap();
    assert_eq!(pair.rgb.dimensions(), (LLVIP_W, LLVIP_H));
    assert_eq!(pair.ir.dimensions(), (LLVIP_W, LLVIP_H));
}

#[test]
fn llvip_other_class_names_the_xml_and_the_class() {
    let llvip = Llvip::new();
    llvip.add(
        "train",
        "010001",
        &[
            ("person", [1.0, 1.0, 5.0, 5.0]),
            ("car", [1.0, 1.0, 5.0, 5.0]),
        ],
    );
    let err = llvip.error();
    assert_names(&err, &llvip.xml("010001"));
    assert!(err.contains("'car'"), "{err}");
}

#[test]
fn llvip_missing_annotation_names_the_expected_xml() {
    let llvip = Llvip::new();
    llvip.add("train", "010001", &[]);
    llvip.add_images("train", "010002");
    let err = llvip.error();
    assert!(err.contains("missing annotation"), "{err}");
    assert_names(&err, &llvip.xml("010002"));
}

#[test]
fn llvip_test_folder_without_annotations_is_left_out_as_unlabeled() {
    let llvip = Llvip::new();
    llvip.add("train", "010001", &[("person", [1.0, 1.0, 5.0, 5.0])]);
    llvip.add_images("test", "190001");
    llvip.add_images("test", "190002");
    let dataset = Dataset::open(llvip.root()).unwrap();
    let names: Vec<&str> = dataset.samples.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["010001"]);
}

#[test]
fn llvip_without_any_annotation_points_to_autolabel() {
    let llvip = Llvip::new();
    llvip.add_images("train", "010001");
    llvip.add_images("test", "190001");
    let err = llvip.error();
    assert!(err.contains("trainer autolabel"), "{err}");
}

#[test]
fn llvip_box_beyond_the_image_names_the_xml() {
    let llvip = Llvip::new();
    llvip.add(
        "train",
        "010001",
        &[("person", [0.0, 0.0, 8.0, LLVIP_H as f32 + 1.5])],
    );
    let err = llvip.error();
    assert_names(&err, &llvip.xml("010001"));
    assert!(err.contains("outside"), "{err}");
}

#[test]
fn llvip_empty_box_names_the_xml() {
    let llvip = Llvip::new();
    llvip.add("train", "010001", &[("person", [8.0, 0.0, 8.0, 5.0])]);
    let err = llvip.error();
    assert_names(&err, &llvip.xml("010001"));
    assert!(err.contains("xmin < xmax"), "{err}");
}

#[test]
fn llvip_malformed_or_missing_field_names_the_xml() {
    let llvip = Llvip::new();
    llvip.add("train", "010001", &[("person", [1.0, 1.0, 5.0, 5.0])]);
    let xml = fs::read_to_string(llvip.xml("010001")).unwrap();
    fs::write(
        llvip.xml("010001"),
        xml.replace("<ymin>1</ymin>", "<ymin>one</ymin>"),
    )
    .unwrap();
    let err = llvip.error();
    assert_names(&err, &llvip.xml("010001"));
    assert!(err.contains("<ymin> 'one'"), "{err}");

    fs::write(llvip.xml("010001"), xml.replace("<xmax>5</xmax>", "")).unwrap();
    let err = llvip.error();
    assert_names(&err, &llvip.xml("010001"));
    assert!(err.contains("no <xmax>"), "{err}");
}

#[test]
fn llvip_visible_without_infrared_partner_is_an_error() {
    let llvip = Llvip::new();
    llvip.add("train", "010001", &[]);
    fs::remove_file(llvip.infrared("train", "010001")).unwrap();
    let err = llvip.error();
    assert!(err.contains("no IR partner"), "{err}");
    assert_names(&err, &llvip.visible("train", "010001"));
}

// -------------------------------------------------------------- detection

#[test]
fn unrecognised_layout_lists_what_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("visible")).unwrap();
    let err = open_error(dir.path());
    assert_names(&err, dir.path());
    for looked_for in ["images/rgb", "visible", "infrared", "Annotations"] {
        assert!(err.contains(looked_for), "{err}");
    }
    let err = open_error(&dir.path().join("absent"));
    assert!(err.contains("does not exist"), "{err}");
}
