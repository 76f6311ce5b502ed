//! The fixed evaluation settings: pycocotools' `Params.setDetParams` for
//! `iouType='bbox'` (IoU thresholds, recall points, area ranges, detection
//! caps), and the indices into them that the summary reads.

use super::numpy::linspace;

/// Detections kept per image and the per-image caps the recall stats use.
pub const MAX_DETS: [usize; 3] = [1, 10, 100];

/// Area ranges `(label, min, max)`, inclusive at both ends, in pixels².
pub const AREA_RANGES: [(&str, f64, f64); 4] = [
    ("all", 0.0, 1e10),
    ("small", 0.0, 1024.0),
    ("medium", 1024.0, 9216.0),
    ("large", 9216.0, 1e10),
];

/// Indices of `AREA_RANGES`: every object, then the three size buckets.
pub(super) const AREA_ALL: usize = 0;
pub(super) const AREA_SMALL: usize = 1;
pub(super) const AREA_MEDIUM: usize = 2;
pub(super) const AREA_LARGE: usize = 3;
/// Index of `MAX_DETS` used for the AP stats.
pub(super) const MAX_DET_AP: usize = 2;
/// Index of IoU 0.50 and 0.75 in `iou_thresholds()`.
pub(super) const IOU_50: usize = 0;
pub(super) const IOU_75: usize = 5;

/// The ten IoU thresholds 0.50:0.05:0.95.
pub fn iou_thresholds() -> Vec<f64> {
    linspace(0.5, 0.95, 10)
}

/// The 101 recall points 0:0.01:1 at which precision is sampled.
pub fn recall_thresholds() -> Vec<f64> {
    linspace(0.0, 1.0, 101)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_match_numpy_linspace() {
        // Values printed by numpy 2.x: np.linspace(.5, .95, 10).tolist()
        let expected = [
            0.5,
            0.55,
            0.6,
            0.65,
            0.7,
            0.75,
            0.8,
            0.85,
            0.8999999999999999,
            0.95,
        ];
        assert_eq!(iou_thresholds(), expected);
        assert_eq!(iou_thresholds()[IOU_75], 0.75);
        let r = recall_thresholds();
        assert_eq!(r.len(), 101);
        assert_eq!((r[0], r[50], r[100]), (0.0, 0.5, 1.0));
        assert_eq!(r[7], 7.0 * 0.01);
    }
}
