//! Reading a COCO instances file (ground truth) and a COCO results file
//! (detections) into the structs of [`super::coco`], with pycocotools'
//! conventions: result ids 1..n in file order, result area = w*h, ground
//! truth area from the annotation's `area`.
//!
//! Where pycocotools would crash or silently misbehave on a malformed file,
//! these return an error naming the file and the problem instead.

use super::coco::{evaluate, DetectionResult, GroundTruth};
use super::metrics::Metrics;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// A category of the ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Category {
    pub id: i64,
    pub name: String,
}

/// The parts of a COCO instances file the bbox evaluation uses.
#[derive(Debug, Clone, Default)]
pub struct CocoGroundTruth {
    /// Image ids in file order (duplicates removed).
    pub image_ids: Vec<i64>,
    /// Categories sorted by id (a repeated id keeps its last entry, as
    /// pycocotools' index does).
    pub categories: Vec<Category>,
    /// Annotations in file order.
    pub annotations: Vec<GroundTruth>,
}

#[derive(Deserialize)]
struct RawInstances {
    images: Vec<RawImage>,
    #[serde(default)]
    annotations: Vec<RawAnnotation>,
    categories: Vec<RawCategory>,
}

#[derive(Deserialize)]
struct RawImage {
    id: i64,
}

#[derive(Deserialize)]
struct RawCategory {
    id: i64,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawAnnotation {
    id: i64,
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    #[serde(default)]
    area: Option<f64>,
    #[serde(default, deserialize_with = "truthy")]
    iscrowd: bool,
}

#[derive(Deserialize)]
struct RawResult {
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    score: f64,
}

/// `iscrowd` as Python reads it: any non-zero number or `true`; null is 0.
fn truthy<'de, D: Deserializer<'de>>(de: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Number(f64),
    }
    Ok(match Option::<Flag>::deserialize(de)? {
        None => false,
        Some(Flag::Bool(b)) => b,
        Some(Flag::Number(n)) => n != 0.0,
    })
}

impl CocoGroundTruth {
    /// Parses a COCO instances document (`images`, `categories` and
    /// optionally `annotations`; other fields are ignored).
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let raw: RawInstances = serde_json::from_slice(bytes).context(
            "not a COCO instances file (expected an object with `images`, `categories` and \
             `annotations`, each annotation with integer `id`, `image_id`, `category_id` and \
             `bbox: [x, y, w, h]`)",
        )?;
        let mut image_ids = Vec::with_capacity(raw.images.len());
        let mut seen = HashSet::new();
        for img in &raw.images {
            if seen.insert(img.id) {
                image_ids.push(img.id);
            }
        }
        let mut by_id: HashMap<i64, String> = HashMap::new();
        for c in raw.categories {
            by_id.insert(c.id, c.name.unwrap_or_else(|| format!("category {}", c.id)));
        }
        let mut categories: Vec<Category> = by_id
            .into_iter()
            .map(|(id, name)| Category { id, name })
            .collect();
        categories.sort_by_key(|c| c.id);

        let mut ann_ids = HashSet::new();
        let mut annotations = Vec::with_capacity(raw.annotations.len());
        for a in raw.annotations {
            // pycocotools indexes annotations by id; a repeated id makes it
            // evaluate one annotation twice and lose the other.
            if !ann_ids.insert(a.id) {
                bail!(
                    "annotation id {} appears more than once (annotation ids must be unique)",
                    a.id
                );
            }
            annotations.push(GroundTruth {
                id: a.id,
                image_id: a.image_id,
                category_id: a.category_id,
                bbox: a.bbox,
                area: a.area.unwrap_or(a.bbox[2] * a.bbox[3]),
                iscrowd: a.iscrowd,
            });
        }
        Ok(Self {
            image_ids,
            categories,
            annotations,
        })
    }

    /// Reads and parses a COCO instances file; errors name the file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read(path, "ground truth")?;
        Self::from_json(&bytes).with_context(|| format!("bad ground truth file {}", path.display()))
    }

    pub fn category_ids(&self) -> Vec<i64> {
        self.categories.iter().map(|c| c.id).collect()
    }

    /// Evaluates `results` against this ground truth (all images, all
    /// categories), as pycocotools does with default parameters.
    pub fn evaluate(&self, results: &[DetectionResult]) -> Metrics {
        evaluate_coco(self, results)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} file {}", path.display()))
}

/// Parses a COCO results document (a JSON array of `{image_id, category_id,
/// bbox: [x, y, w, h], score}`) for the given ground truth. Detections get
/// ids 1..n in file order. A detection on an image the ground truth does not
/// have is an error (pycocotools refuses such files too); one of a category
/// the ground truth does not have is kept but never evaluated, as in
/// pycocotools.
pub fn results_from_json(bytes: &[u8], gt: &CocoGroundTruth) -> Result<Vec<DetectionResult>> {
    let raw: Vec<RawResult> = serde_json::from_slice(bytes).context(
        "not a COCO results file (expected a JSON array of objects with integer `image_id` and \
         `category_id`, `bbox: [x, y, w, h]` and `score`)",
    )?;
    let images: HashSet<i64> = gt.image_ids.iter().copied().collect();
    let cats: HashSet<i64> = gt.category_ids().into_iter().collect();
    let mut out = Vec::with_capacity(raw.len());
    let mut unknown_category = 0usize;
    for (i, r) in raw.into_iter().enumerate() {
        if !images.contains(&r.image_id) {
            bail!(
                "detection #{i} has image_id {}, which is not an image of the ground truth ({} images)",
                r.image_id,
                images.len()
            );
        }
        if !cats.contains(&r.category_id) {
            unknown_category += 1;
        }
        out.push(DetectionResult::new(
            i as i64 + 1,
            r.image_id,
            r.category_id,
            r.bbox,
            r.score,
        ));
    }
    if unknown_category > 0 {
        tracing::warn!(
            "{unknown_category} detections have a category_id the ground truth does not define; \
             they are not evaluated"
        );
    }
    Ok(out)
}

/// Reads and parses a COCO results file for `gt`; errors name the file.
pub fn load_results(path: &Path, gt: &CocoGroundTruth) -> Result<Vec<DetectionResult>> {
    let bytes = read(path, "detection results")?;
    results_from_json(&bytes, gt)
        .with_context(|| format!("bad detection results file {}", path.display()))
}

/// Evaluates detections against a COCO ground truth: all its images and
/// categories, pycocotools' default parameters.
pub fn evaluate_coco(gt: &CocoGroundTruth, results: &[DetectionResult]) -> Metrics {
    let eval = evaluate(&gt.image_ids, &gt.category_ids(), &gt.annotations, results);
    Metrics::from_eval(&eval, |id| {
        gt.categories
            .iter()
            .find(|c| c.id == id)
            .map_or_else(|| id.to_string(), |c| c.name.clone())
    })
}

/// Evaluates a COCO results file against a COCO instances file, like
/// `COCOeval(COCO(gt), COCO(gt).loadRes(dt), 'bbox')`.
pub fn evaluate_files(gt_path: &Path, dt_path: &Path) -> Result<Metrics> {
    let gt = CocoGroundTruth::load(gt_path)?;
    let dts = load_results(dt_path, &gt)?;
    Ok(gt.evaluate(&dts))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GT: &str = r#"{
        "images": [{"id": 7, "file_name": "a.png"}, {"id": 3}],
        "categories": [{"id": 42, "name": "car"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 50.5, "iscrowd": 0,
             "segmentation": [[0, 0, 1, 1]]},
            {"id": 2, "image_id": 3, "category_id": 42, "bbox": [5, 5, 20, 10], "iscrowd": true}
        ]
    }"#;

    #[test]
    fn parses_instances_with_defaults() {
        let gt = CocoGroundTruth::from_json(GT.as_bytes()).unwrap();
        assert_eq!(gt.image_ids, vec![7, 3]);
        assert_eq!(gt.category_ids(), vec![1, 42]);
        assert_eq!(gt.categories[0].name, "person");
        assert_eq!(gt.annotations[0].area, 50.5);
        assert!(!gt.annotations[0].iscrowd);
        // No `area`: w*h.
        assert_eq!(gt.annotations[1].area, 200.0);
        assert!(gt.annotations[1].iscrowd);
    }

    #[test]
    fn results_get_ids_in_file_order_and_unknown_images_are_refused() {
        let gt = CocoGroundTruth::from_json(GT.as_bytes()).unwrap();
        let ok = r#"[{"image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5},
                     {"image_id": 3, "category_id": 99, "bbox": [1, 2, 3, 4], "score": 1}]"#;
        let dts = results_from_json(ok.as_bytes(), &gt).unwrap();
        assert_eq!(dts.iter().map(|d| d.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(dts[1].area, 12.0);
        let bad =
            r#"[{"image_id": 12345, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5}]"#;
        let err = format!("{:#}", results_from_json(bad.as_bytes(), &gt).unwrap_err());
        assert!(err.contains("12345"), "{err}");
    }

    #[test]
    fn malformed_documents_are_explained() {
        let err = format!("{:#}", CocoGroundTruth::from_json(b"[1, 2]").unwrap_err());
        assert!(err.contains("not a COCO instances file"), "{err}");
        let dup = r#"{"images": [], "categories": [], "annotations": [
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]},
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]}"#;
        let err = format!(
            "{:#}",
            CocoGroundTruth::from_json(dup.as_bytes()).unwrap_err()
        );
        assert!(err.contains("annotation id 5"), "{err}");
        let gt = CocoGroundTruth::from_json(GT.as_bytes()).unwrap();
        let err = format!("{:#}", results_from_json(GT.as_bytes(), &gt).unwrap_err());
        assert!(err.contains("not a COCO results file"), "{err}");
        let short = r#"[{"image_id": 7, "category_id": 1, "bbox": [0, 0, 10], "score": 0.5}]"#;
        assert!(results_from_json(short.as_bytes(), &gt).is_err());
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let err = format!("{:#}", CocoGroundTruth::load(&missing).unwrap_err());
        assert!(err.contains("nope.json"), "{err}");
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{\"images\": [").unwrap();
        let err = format!("{:#}", CocoGroundTruth::load(&broken).unwrap_err());
        assert!(err.contains("broken.json") && err.contains("EOF"), "{err}");
    }
}
