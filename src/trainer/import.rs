//! `trainer import`: recordings stored as one side-by-side image per pair
//! (RGB left, IR right: pix2pix's "aligned" layout, common in public copies
//! of LLVIP) into the paired layout `images/rgb` + `images/ir`, unlabeled,
//! ready for `trainer autolabel` or `--unlabeled`.
//!
//! Such copies are often squashed (LLVIP's 1280×1024 halves stored as
//! 256×256); `--size` restores the camera's aspect, so training frames look
//! like what a camera delivers.

use crate::shared::data::yolo::{IR_DIR, RGB_DIR};
use anyhow::{bail, ensure, Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use image::{DynamicImage, GenericImageView};
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// JPEG quality of the written halves (the sources are JPEG already).
const JPEG_QUALITY: u8 = 95;

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Folders of side-by-side images (not recursive).
    pub sources: Vec<PathBuf>,
    pub out: PathBuf,
    /// Output size of each half; `None` keeps the half's own size.
    pub size: Option<(u32, u32)>,
    /// Images whose name starts with one of these are skipped (e.g. an
    /// evaluation scene kept out of training).
    pub skip_prefixes: Vec<String>,
    /// The IR half is on the left instead of the right.
    pub ir_left: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    pub pairs: usize,
    pub skipped: usize,
    pub width_px: u32,
    pub height_px: u32,
}

/// Splits every image of the sources into an RGB and an IR file; see the
/// module docs. Two sources holding the same name is an error (the pairs
/// would overwrite each other).
pub fn import_side_by_side(o: &ImportOptions) -> Result<ImportSummary> {
    ensure!(!o.sources.is_empty(), "no source folder given");
    if let Some((w, h)) = o.size {
        ensure!(
            w >= 8 && h >= 8,
            "--size {w}x{h}: each side must be at least 8 px"
        );
    }
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut skipped = 0;
    for dir in &o.sources {
        let listed = crate::shared::data::images::list_images(dir)
            .with_context(|| format!("source {}", dir.display()))?;
        for (name, path) in listed {
            if o.skip_prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                skipped += 1;
                continue;
            }
            if let Some((_, other)) = files.iter().find(|(n, _)| *n == name) {
                bail!(
                    "two sources hold a pair named '{name}': {} and {}",
                    other.display(),
                    path.display()
                );
            }
            files.push((name, path));
        }
    }
    ensure!(
        !files.is_empty(),
        "no images to import in {:?} ({skipped} skipped by --skip-prefix)",
        o.sources
    );
    crate::trainer::pseudo_label::ensure_empty_out(&o.out)?;
    for d in [RGB_DIR, IR_DIR] {
        let p = o.out.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    let sizes: Vec<(u32, u32)> = files
        .par_iter()
        .map(|(name, path)| import_one(path, name, o))
        .collect::<Result<_>>()?;
    let (width_px, height_px) = sizes[0];
    Ok(ImportSummary {
        pairs: files.len(),
        skipped,
        width_px,
        height_px,
    })
}

/// Splits one file; returns the size written.
fn import_one(path: &Path, name: &str, o: &ImportOptions) -> Result<(u32, u32)> {
    let img = image::open(path).with_context(|| format!("cannot decode {}", path.display()))?;
    let (w, h) = img.dimensions();
    ensure!(
        w >= 2 && w % 2 == 0,
        "{}: {w}x{h} cannot be two side-by-side halves (odd width)",
        path.display()
    );
    let half = w / 2;
    let (rgb_x, ir_x) = if o.ir_left { (half, 0) } else { (0, half) };
    let (ow, oh) = o.size.unwrap_or((half, h));
    let rgb = resize(img.crop_imm(rgb_x, 0, half, h).to_rgb8(), ow, oh);
    let ir = resize_gray(img.crop_imm(ir_x, 0, half, h).to_luma8(), ow, oh);
    write_jpeg(
        &o.out.join(RGB_DIR).join(format!("{name}.jpg")),
        &DynamicImage::from(rgb),
    )?;
    write_jpeg(
        &o.out.join(IR_DIR).join(format!("{name}.jpg")),
        &DynamicImage::from(ir),
    )?;
    Ok((ow, oh))
}

fn resize(img: image::RgbImage, w: u32, h: u32) -> image::RgbImage {
    if img.dimensions() == (w, h) {
        img
    } else {
        imageops::resize(&img, w, h, FilterType::CatmullRom)
    }
}

fn resize_gray(img: image::GrayImage, w: u32, h: u32) -> image::GrayImage {
    if img.dimensions() == (w, h) {
        img
    } else {
        imageops::resize(&img, w, h, FilterType::CatmullRom)
    }
}

fn write_jpeg(path: &Path, img: &DynamicImage) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    img.write_with_encoder(JpegEncoder::new_with_quality(&mut writer, JPEG_QUALITY))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Parses `WxH` (e.g. `320x256`).
pub fn parse_size(s: &str) -> Result<(u32, u32)> {
    let parsed = s
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    parsed.with_context(|| format!("--size '{s}': expected WIDTHxHEIGHT, e.g. 320x256"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Rgb, RgbImage};

    #[test]
    fn splits_halves_resizes_and_skips_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        // left half red (RGB), right half white (IR)
        let mut img = RgbImage::from_pixel(64, 32, Rgb([200, 0, 0]));
        for y in 0..32 {
            for x in 32..64 {
                img.put_pixel(x, y, Rgb([255, 255, 255]));
            }
        }
        img.save(src.join("020001.png")).unwrap();
        img.save(src.join("010001.png")).unwrap();
        let out = dir.path().join("out");
        let summary = import_side_by_side(&ImportOptions {
            sources: vec![src],
            out: out.clone(),
            size: Some((40, 32)),
            skip_prefixes: vec!["01".into()],
            ir_left: false,
        })
        .unwrap();
        assert_eq!((summary.pairs, summary.skipped), (1, 1));
        let rgb = image::open(out.join(RGB_DIR).join("020001.jpg"))
            .unwrap()
            .to_rgb8();
        let ir: GrayImage = image::open(out.join(IR_DIR).join("020001.jpg"))
            .unwrap()
            .to_luma8();
        assert_eq!((rgb.dimensions(), ir.dimensions()), ((40, 32), (40, 32)));
        assert!(rgb.get_pixel(20, 16)[0] > 150 && rgb.get_pixel(20, 16)[1] < 60);
        assert!(ir.get_pixel(20, 16)[0] > 240);
        assert!(!out.join(RGB_DIR).join("010001.jpg").exists());
        // the pairs open as unlabeled pairs
        let pairs = crate::shared::data::UnlabeledPairs::open(&out).unwrap();
        assert_eq!(pairs.len(), 1);
    }

    #[test]
    fn refuses_an_odd_width_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        RgbImage::new(33, 16)
            .save(dir.path().join("a.png"))
            .unwrap();
        let err = import_side_by_side(&ImportOptions {
            sources: vec![dir.path().to_path_buf()],
            out: dir.path().join("out"),
            size: None,
            skip_prefixes: vec![],
            ir_left: false,
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("a.png"), "{err:#}");
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("320x256").unwrap(), (320, 256));
        assert!(parse_size("320").is_err());
    }
}
