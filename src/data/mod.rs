//! Dataset readers: the paired YOLO-txt layout and LLVIP.

pub mod meta;
