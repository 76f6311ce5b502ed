//! COCO-style evaluation.
