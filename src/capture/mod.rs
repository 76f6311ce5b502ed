//! Frame sources for the daemon: V4L2 cameras, the synthetic scene
//! generator as a live camera, and image folders.

pub mod frame;
#[cfg(feature = "v4l2")]
pub mod v4l2;

pub use frame::{CaptureError, Frame, PixelFormat};
