//! LLVIP as released:
//!
//! ```text
//! DIR/visible/{train,test}/NAME.jpg
//! DIR/infrared/{train,test}/NAME.jpg   same file names as visible/
//! DIR/Annotations/NAME.xml             Pascal VOC, one per image name
//! ```
//!
//! * Classes: LLVIP annotates only `person`; any other object name is an
//!   error (it would mean the folder is not LLVIP, or a different release).
//! * Splits: `test/` is [`Split::Test`]. LLVIP has no validation split, so
//!   [`VAL_HOLDOUT_BUCKETS`] hold out ~10% of `train/` as [`Split::Val`],
//!   chosen by [`stable_hash`] of the name: the same images on every machine
//!   and every run, and independent of how many images there are.
//! * Unlabeled folders: a split folder none of whose images has an xml is
//!   left out (a warning says so); one missing xml in an annotated folder
//!   is an error.
//! * Condition: every sample is [`Condition::Night`]: LLVIP is a low-light
//!   (night street) dataset.
//! * Boxes: VOC `xmin/ymin/xmax/ymax` are used as given as pixel corners
//!   (`x1 = xmin`, `x2 = xmax`), clipped to the image; a box more than
//!   [`BOX_TOLERANCE_PX`] outside the image is an error. VOC's `difficult`
//!   and `truncated` flags are ignored.

use super::images::{pair_by_stem, pair_size, ImagePair};
use super::sample::{Dataset, Layout, SampleInfo};
use crate::shared::bbox::{BBox, Label};
use crate::shared::condition::{stable_hash, Condition, Split};
use anyhow::{anyhow, bail, ensure, Context, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

pub const VISIBLE_DIR: &str = "visible";
pub const INFRARED_DIR: &str = "infrared";
pub const ANNOTATIONS_DIR: &str = "Annotations";
/// The only class LLVIP annotates.
pub const CLASS_NAME: &str = "person";
/// How far (in pixels) a VOC box may extend past the image edge before it
/// is rejected; within it the box is clipped.
pub const BOX_TOLERANCE_PX: f32 = 1.0;
/// A `train/` image goes to validation when `stable_hash(name) %
/// VAL_HOLDOUT_BUCKETS == 0`, i.e. ~10% of them.
pub const VAL_HOLDOUT_BUCKETS: u64 = 10;

/// The split folders of the release and the split each stands for.
const SPLIT_FOLDERS: [(&str, Split); 2] = [("train", Split::Train), ("test", Split::Test)];

pub(crate) fn looks_like(root: &Path) -> bool {
    [VISIBLE_DIR, INFRARED_DIR, ANNOTATIONS_DIR]
        .iter()
        .all(|d| root.join(d).is_dir())
}

/// The split of an image `name` found in the folder standing for `folder`
/// (see the module docs).
pub fn split_of(folder: Split, name: &str) -> Split {
    if folder == Split::Train && stable_hash(name) % VAL_HOLDOUT_BUCKETS == 0 {
        Split::Val
    } else {
        folder
    }
}

/// Reads and validates the whole dataset; see the module docs.
pub(crate) fn read(root: &Path) -> Result<Dataset> {
    let pairs = without_unannotated_folders(root, list_pairs(root)?)?;
    // Collecting into Vec<Result> first keeps the reported error the first
    // one in name order, whatever order the threads finish in.
    let results: Vec<Result<SampleInfo>> = pairs
        .par_iter()
        .map(|(pair, folder)| read_sample(root, pair, *folder))
        .collect();
    let samples = results.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(Dataset {
        root: root.to_path_buf(),
        layout: Layout::Llvip,
        names: vec![CLASS_NAME.to_owned()],
        samples,
    })
}

/// Drops the pairs of a split folder in which no image has an annotation
/// (copies of LLVIP often ship `test/` images without their xml): those are
/// unlabeled pairs, logged and left out. One missing xml among annotated
/// images of the same folder stays an error in [`read_sample`]: that is a
/// lost annotation, and reading it as "no persons" would teach the model
/// to ignore people.
fn without_unannotated_folders(
    root: &Path,
    pairs: Vec<(ImagePair, Split)>,
) -> Result<Vec<(ImagePair, Split)>> {
    let annotated = |pair: &ImagePair| {
        root.join(ANNOTATIONS_DIR)
            .join(format!("{}.xml", pair.name))
            .is_file()
    };
    let mut kept = Vec::with_capacity(pairs.len());
    for (folder, split) in SPLIT_FOLDERS {
        let of_folder: Vec<_> = pairs.iter().filter(|(_, s)| *s == split).collect();
        if of_folder.is_empty() {
            continue;
        }
        if of_folder.iter().any(|(pair, _)| annotated(pair)) {
            kept.extend(of_folder.into_iter().cloned());
        } else {
            tracing::warn!(
                "{}: none of the {} pairs in {VISIBLE_DIR}/{folder} has an annotation in \
                 {ANNOTATIONS_DIR}/; left out as unlabeled pairs",
                root.display(),
                of_folder.len()
            );
        }
    }
    // name order, as list_pairs returns them
    kept.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    ensure!(
        !kept.is_empty(),
        "{}: no image has an annotation in {ANNOTATIONS_DIR}/; these are unlabeled pairs \
         (label them with `trainer autolabel --data {}`, or distil on them with --unlabeled)",
        root.display(),
        root.display()
    );
    Ok(kept)
}

/// All pairs of all split folders, sorted by name, each with its folder's
/// split. Names must be unique across folders, as annotations are keyed by
/// name alone.
fn list_pairs(root: &Path) -> Result<Vec<(ImagePair, Split)>> {
    let mut by_name: BTreeMap<String, (ImagePair, Split)> = BTreeMap::new();
    for (folder, split) in SPLIT_FOLDERS {
        let rgb_dir = root.join(VISIBLE_DIR).join(folder);
        let ir_dir = root.join(INFRARED_DIR).join(folder);
        if !rgb_dir.exists() && !ir_dir.exists() {
            continue;
        }
        for pair in pair_by_stem(&rgb_dir, &ir_dir)? {
            if let Some((other, _)) = by_name.get(&pair.name) {
                bail!(
                    "image name '{}' appears twice ({} and {}); LLVIP annotations are keyed \
                     by name, so names must be unique",
                    pair.name,
                    other.rgb.display(),
                    pair.rgb.display()
                );
            }
            by_name.insert(pair.name.clone(), (pair, split));
        }
    }
    ensure!(
        !by_name.is_empty(),
        "{}: no LLVIP images found in {VISIBLE_DIR}/train or {VISIBLE_DIR}/test",
        root.display()
    );
    Ok(by_name.into_values().collect())
}

fn read_sample(root: &Path, pair: &ImagePair, folder: Split) -> Result<SampleInfo> {
    let (width_px, height_px) = pair_size(pair)?;
    let xml_path = root
        .join(ANNOTATIONS_DIR)
        .join(format!("{}.xml", pair.name));
    let text = match fs::read_to_string(&xml_path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "missing annotation {} for LLVIP image {}",
            xml_path.display(),
            pair.rgb.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", xml_path.display())),
    };
    let annotation = parse_voc(&text, &xml_path)?;
    if let Some((w, h)) = annotation.size {
        ensure!(
            (w, h) == (width_px, height_px),
            "{}: <size> says {w}x{h} but image {} is {width_px}x{height_px}",
            xml_path.display(),
            pair.rgb.display()
        );
    }
    let labels = annotation
        .objects
        .iter()
        .map(|object| object_label(object, width_px, height_px))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| anyhow!("{}:{e:#}", xml_path.display()))?;
    Ok(SampleInfo {
        name: pair.name.clone(),
        rgb_path: pair.rgb.clone(),
        ir_path: pair.ir.clone(),
        width_px,
        height_px,
        labels,
        condition: Some(Condition::Night),
        split: split_of(folder, &pair.name),
    })
}

/// The parts of a Pascal VOC annotation this reader uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VocAnnotation {
    /// `<size>`, when present and non-zero (some tools write `0 x 0`).
    pub size: Option<(u32, u32)>,
    pub objects: Vec<VocObject>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VocObject {
    /// The line of `<object>` in the xml, for errors.
    pub line: u32,
    pub name: String,
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
}

/// Parses VOC xml text; `path` only names the file in errors
/// (`path:line: ...`).
pub(crate) fn parse_voc(text: &str, path: &Path) -> Result<VocAnnotation> {
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| anyhow!("{}: malformed XML: {e}", path.display()))?;
    let at = |node: roxmltree::Node| doc.text_pos_at(node.range().start).row;
    let located =
        |node: roxmltree::Node, e: anyhow::Error| anyhow!("{}:{}: {e:#}", path.display(), at(node));
    let root = doc.root_element();
    let size = match child(root, "size") {
        Some(node) => parse_size(node).map_err(|e| located(node, e))?,
        None => None,
    };
    let objects = root
        .children()
        .filter(|n| n.has_tag_name("object"))
        .map(|node| parse_object(node, at(node)).map_err(|e| located(node, e)))
        .collect::<Result<Vec<_>>>()?;
    Ok(VocAnnotation { size, objects })
}

fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    tag: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    node.children().find(|c| c.has_tag_name(tag))
}

/// The trimmed text of the child element `tag`; an error when it is missing.
fn child_text<'a>(node: roxmltree::Node<'a, '_>, tag: &str) -> Result<&'a str> {
    let element =
        child(node, tag).ok_or_else(|| anyhow!("<{}> has no <{tag}>", node.tag_name().name()))?;
    Ok(element.text().unwrap_or("").trim())
}

fn parse_size(node: roxmltree::Node) -> Result<Option<(u32, u32)>> {
    let dimension = |tag: &str| -> Result<u32> {
        let text = child_text(node, tag)?;
        text.parse()
            .map_err(|_| anyhow!("<size><{tag}> '{text}' is not a whole number"))
    };
    let (width, height) = (dimension("width")?, dimension("height")?);
    Ok((width > 0 && height > 0).then_some((width, height)))
}

fn parse_object(node: roxmltree::Node, line: u32) -> Result<VocObject> {
    let name = child_text(node, "name")?.to_owned();
    let bndbox = child(node, "bndbox").ok_or_else(|| anyhow!("object '{name}' has no <bndbox>"))?;
    let coordinate = |tag: &str| -> Result<f32> {
        let text = child_text(bndbox, tag).map_err(|e| anyhow!("object '{name}': {e}"))?;
        text.parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| anyhow!("object '{name}': <{tag}> '{text}' is not a number"))
    };
    Ok(VocObject {
        line,
        xmin: coordinate("xmin")?,
        ymin: coordinate("ymin")?,
        xmax: coordinate("xmax")?,
        ymax: coordinate("ymax")?,
        name,
    })
}

/// Checks one object against LLVIP's class and the image size. The error
/// starts with the object's line, for the caller to prefix the file.
fn object_label(object: &VocObject, width: u32, height: u32) -> Result<Label> {
    let VocObject {
        line,
        name,
        xmin,
        ymin,
        xmax,
        ymax,
    } = object;
    let fail = |message: String| anyhow!("{line}: object '{name}': {message}");
    if name != CLASS_NAME {
        return Err(fail(format!(
            "unknown class '{name}' (LLVIP has only '{CLASS_NAME}')"
        )));
    }
    if xmin >= xmax || ymin >= ymax {
        return Err(fail(format!(
            "empty box: xmin {xmin} xmax {xmax}, ymin {ymin} ymax {ymax} (need xmin < xmax, ymin < ymax)"
        )));
    }
    let (w, h, tol) = (width as f32, height as f32, BOX_TOLERANCE_PX);
    if *xmin < -tol || *ymin < -tol || *xmax > w + tol || *ymax > h + tol {
        return Err(fail(format!(
            "box ({xmin}, {ymin})-({xmax}, {ymax}) extends outside the {width}x{height} image"
        )));
    }
    let bbox = BBox::new(*xmin, *ymin, *xmax, *ymax).clipped(w, h);
    Ok(Label { class_id: 0, bbox })
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<annotation>
  <filename>010001.jpg</filename>
  <size><width>1280</width><height>1024</height><depth>3</depth></size>
  <object>
    <name>person</name>
    <bndbox><xmin>10</xmin><ymin>20</ymin><xmax>110.5</xmax><ymax>220</ymax></bndbox>
  </object>
  <object>
    <name> car </name>
    <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox>
  </object>
</annotation>"#;

    #[test]
    fn parses_size_and_objects_with_lines() {
        let voc = parse_voc(XML, Path::new("a.xml")).unwrap();
        assert_eq!(voc.size, Some((1280, 1024)));
        assert_eq!(voc.objects.len(), 2);
        let first = &voc.objects[0];
        assert_eq!((first.line, first.name.as_str()), (4, "person"));
        assert_eq!(
            (first.xmin, first.ymin, first.xmax, first.ymax),
            (10.0, 20.0, 110.5, 220.0)
        );
        assert_eq!(
            (voc.objects[1].line, voc.objects[1].name.as_str()),
            (8, "car")
        );
    }

    #[test]
    fn labels_check_class_and_bounds() {
        let voc = parse_voc(XML, Path::new("a.xml")).unwrap();
        let label = object_label(&voc.objects[0], 1280, 1024).unwrap();
        assert_eq!(
            label,
            Label {
                class_id: 0,
                bbox: BBox::new(10.0, 20.0, 110.5, 220.0)
            }
        );
        let err = object_label(&voc.objects[1], 1280, 1024)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("8: object 'car': unknown class 'car'"),
            "{err}"
        );
        // Within 1 px of the edge: clipped; beyond: rejected.
        let edge = VocObject {
            xmax: 1280.5,
            ..voc.objects[0].clone()
        };
        assert_eq!(object_label(&edge, 1280, 1024).unwrap().bbox.x2, 1280.0);
        let outside = VocObject {
            xmax: 1282.0,
            ..voc.objects[0].clone()
        };
        assert!(object_label(&outside, 1280, 1024).is_err());
    }

    #[test]
    fn malformed_fields_name_file_and_line() {
        let missing = XML.replace("<ymax>220</ymax>", "");
        let err = format!("{:#}", parse_voc(&missing, Path::new("a.xml")).unwrap_err());
        assert!(
            err.starts_with("a.xml:4: object 'person': <bndbox> has no <ymax>"),
            "{err}"
        );
        let bad = XML.replace("<xmin>10</xmin>", "<xmin>ten</xmin>");
        let err = format!("{:#}", parse_voc(&bad, Path::new("a.xml")).unwrap_err());
        assert!(
            err.contains("a.xml:4: object 'person': <xmin> 'ten' is not a number"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            parse_voc("<annotation>", Path::new("a.xml")).unwrap_err()
        );
        assert!(err.starts_with("a.xml: malformed XML"), "{err}");
    }

    #[test]
    fn holds_out_a_tenth_of_train_as_val() {
        let names: Vec<String> = (0..2000).map(|i| format!("{:06}", 10001 + i)).collect();
        let val = names
            .iter()
            .filter(|n| split_of(Split::Train, n) == Split::Val)
            .count();
        assert!((150..250).contains(&val), "{val}");
        assert!(names
            .iter()
            .all(|n| split_of(Split::Test, n) == Split::Test));
    }
}
