//! The evaluation's inputs: ground-truth annotations and scored detections,
//! the fields of the COCO annotation dicts that `COCOeval` reads (and the
//! `id` and `area` that pycocotools' `loadRes` gives bbox results).

/// A ground-truth box. `bbox` is COCO `[x, y, width, height]`; `area` is the
/// annotation's own area (for COCO files the segmentation area, not w*h),
/// which only decides the small/medium/large bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruth {
    /// Annotation id. pycocotools records matches by id and treats id 0 as
    /// "no match", so a ground truth with id 0 can never be a true positive.
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: [f64; 4],
    pub area: f64,
    /// A crowd region: never counted, and detections inside it are ignored.
    pub iscrowd: bool,
}

impl GroundTruth {
    /// A non-crowd ground truth whose area is its box area.
    pub fn from_box(id: i64, image_id: i64, category_id: i64, bbox: [f64; 4]) -> Self {
        Self {
            id,
            image_id,
            category_id,
            bbox,
            area: bbox[2] * bbox[3],
            iscrowd: false,
        }
    }
}

/// A scored detection (one entry of a COCO results file). `area` is w*h.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectionResult {
    /// Positive id (pycocotools numbers results 1..n in file order).
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: [f64; 4],
    pub score: f64,
    pub area: f64,
}

impl DetectionResult {
    pub fn new(id: i64, image_id: i64, category_id: i64, bbox: [f64; 4], score: f64) -> Self {
        Self {
            id,
            image_id,
            category_id,
            bbox,
            score,
            area: bbox[2] * bbox[3],
        }
    }
}
