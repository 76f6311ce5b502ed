//! Box overlap: pycocotools' `computeIoU` for bboxes, which calls
//! `maskUtils.iou`, i.e. `bbIou` in `maskApi.c`.

/// IoU of every detection (rows) with every ground truth (columns), with
/// exactly the f64 operations of `bbIou` in pycocotools' `maskApi.c`: no +1
/// on widths, and for a crowd ground truth the union is the detection's area
/// (so a detection fully inside a crowd region scores 1).
pub fn box_ious(dts: &[[f64; 4]], gts: &[[f64; 4]], iscrowd: &[bool]) -> Vec<f64> {
    let mut out = vec![0.0; dts.len() * gts.len()];
    for (g, gb) in gts.iter().enumerate() {
        let ga = gb[2] * gb[3];
        for (d, db) in dts.iter().enumerate() {
            let da = db[2] * db[3];
            let w = (db[2] + db[0]).min(gb[2] + gb[0]) - db[0].max(gb[0]);
            if w <= 0.0 {
                continue;
            }
            let h = (db[3] + db[1]).min(gb[3] + gb[1]) - db[1].max(gb[1]);
            if h <= 0.0 {
                continue;
            }
            let inter = w * h;
            let union = if iscrowd[g] { da } else { da + ga - inter };
            out[d * gts.len() + g] = inter / union;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::close;
    use super::*;

    #[test]
    fn iou_has_no_plus_one_and_crowd_uses_detection_area() {
        let g = [[0.0, 0.0, 10.0, 10.0]];
        let d = [
            [5.0, 0.0, 10.0, 10.0],
            [20.0, 20.0, 5.0, 5.0],
            [2.0, 2.0, 4.0, 4.0],
        ];
        let ious = box_ious(&d, &g, &[false]);
        assert!(close(ious[0], 50.0 / 150.0));
        assert_eq!(ious[1], 0.0);
        assert!(close(ious[2], 16.0 / 100.0));
        let crowd = box_ious(&d, &g, &[true]);
        assert!(close(crowd[0], 50.0 / 100.0));
        assert_eq!(crowd[2], 1.0);
    }
}
