//! File handling shared by both layouts: listing image folders, pairing RGB
//! with IR files by stem, and reading sizes from image headers only.

use anyhow::{anyhow, bail, ensure, Context, Result};
use image::{GrayImage, RgbImage};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

/// File extensions (case-insensitive) taken for images; other files in an
/// image folder are ignored. BMP is listed so that a `.bmp` file is reported
/// (this build decodes PNG and JPEG only) rather than silently skipped.
pub(crate) const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// An RGB image and its IR partner, matched by file stem.
#[derive(Debug, Clone)]
pub(crate) struct ImagePair {
    pub name: String,
    pub rgb: PathBuf,
    pub ir: PathBuf,
}

/// The image files directly inside `dir`, keyed by stem (so sorted by name).
/// Hidden files (such as macOS `._x.jpg` shadows) are skipped; two images
/// with the same stem are an error, since pairing by stem would be ambiguous.
pub(crate) fn list_images(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let entries =
        fs::read_dir(dir).with_context(|| format!("cannot list image folder {}", dir.display()))?;
    let mut images = BTreeMap::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list image folder {}", dir.display()))?
            .path();
        if !is_image_file(&path) {
            continue;
        }
        let name = file_stem(&path)?;
        if let Some(previous) = images.insert(name.clone(), path.clone()) {
            bail!(
                "two images named '{name}' in {}: {} and {}",
                dir.display(),
                previous.display(),
                path.display()
            );
        }
    }
    Ok(images)
}

fn is_image_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    let image_extension = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    !hidden && image_extension && path.is_file()
}

fn file_stem(path: &Path) -> Result<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_owned)
        .with_context(|| format!("image file name is not valid UTF-8: {}", path.display()))
}

/// Pairs the images of `rgb_dir` and `ir_dir` by stem, sorted by name. An
/// image on either side without a partner is an error naming it.
pub(crate) fn pair_by_stem(rgb_dir: &Path, ir_dir: &Path) -> Result<Vec<ImagePair>> {
    let rgb = list_images(rgb_dir)?;
    let mut ir = list_images(ir_dir)?;
    let mut pairs = Vec::with_capacity(rgb.len());
    for (name, rgb_path) in rgb {
        let Some(ir_path) = ir.remove(&name) else {
            bail!(
                "RGB image {} has no IR partner: expected {}",
                rgb_path.display(),
                expected_image(ir_dir, &name)
            );
        };
        pairs.push(ImagePair {
            name,
            rgb: rgb_path,
            ir: ir_path,
        });
    }
    if let Some((name, ir_path)) = ir.into_iter().next() {
        bail!(
            "IR image {} has no RGB partner: expected {}",
            ir_path.display(),
            expected_image(rgb_dir, &name)
        );
    }
    Ok(pairs)
}

fn expected_image(dir: &Path, name: &str) -> String {
    format!(
        "{}.{{{}}}",
        dir.join(name).display(),
        IMAGE_EXTENSIONS.join(",")
    )
}

/// Bytes read to find an image's size: enough for the header of a PNG and
/// of almost every JPEG. (Given a whole file, the JPEG decoder reads all of
/// it just to report the size, which makes opening a dataset I/O bound.)
const HEADER_PREFIX_BYTES: u64 = 64 * 1024;

/// Width and height from the image header, without decoding pixels. The
/// format is taken from the file's magic bytes, falling back to its extension.
pub(crate) fn image_size(path: &Path) -> Result<(u32, u32)> {
    let mut prefix = Vec::new();
    File::open(path)
        .and_then(|f| f.take(HEADER_PREFIX_BYTES).read_to_end(&mut prefix))
        .with_context(|| format!("cannot read image {}", path.display()))?;
    if let Some(size) = size_from_prefix(&prefix) {
        return Ok(size);
    }
    // The header goes past the prefix (say, a large EXIF block), or the file
    // is corrupt: let the decoder read the whole file, and report its error.
    open_reader(path)?.into_dimensions().map_err(|e| {
        anyhow!(
            "cannot read image header of {} (corrupt or unsupported format): {e}",
            path.display()
        )
    })
}

fn size_from_prefix(prefix: &[u8]) -> Option<(u32, u32)> {
    let reader = image::ImageReader::new(Cursor::new(prefix))
        .with_guessed_format()
        .ok()?;
    reader.into_dimensions().ok()
}

fn open_reader(path: &Path) -> Result<image::ImageReader<BufReader<File>>> {
    image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .with_context(|| format!("cannot open image {}", path.display()))
}

/// The common size of a pair; members of different sizes are an error, as
/// labels are in RGB pixels and the models stack both images pixel for pixel.
pub(crate) fn pair_size(pair: &ImagePair) -> Result<(u32, u32)> {
    let (rw, rh) = image_size(&pair.rgb)?;
    let (iw, ih) = image_size(&pair.ir)?;
    ensure!(
        (rw, rh) == (iw, ih),
        "pair '{}' differs in size: RGB {} is {rw}x{rh} but IR {} is {iw}x{ih}",
        pair.name,
        pair.rgb.display(),
        pair.ir.display()
    );
    Ok((rw, rh))
}

/// Decodes `path`; the image crate's own message is kept on the same line,
/// as its error repeats itself when printed as a chain.
fn decode(path: &Path) -> Result<image::DynamicImage> {
    open_reader(path)?
        .decode()
        .map_err(|e| anyhow!("cannot decode image {}: {e}", path.display()))
}

/// Decodes any supported image as 8-bit RGB.
pub(crate) fn decode_rgb(path: &Path) -> Result<RgbImage> {
    Ok(decode(path)?.to_rgb8())
}

/// Decodes any supported image as 8-bit gray (a colour-mapped thermal image
/// is reduced to its luma).
pub(crate) fn decode_gray(path: &Path) -> Result<GrayImage> {
    Ok(decode(path)?.to_luma8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_visible_image_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.png", "b.JPG", "c.txt", ".d.png", "e.jpeg"] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        fs::create_dir(dir.path().join("f.png")).unwrap();
        let names: Vec<String> = list_images(dir.path()).unwrap().into_keys().collect();
        assert_eq!(names, ["a", "b", "e"]);
    }

    #[test]
    fn duplicate_stems_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.png"), b"x").unwrap();
        fs::write(dir.path().join("a.jpg"), b"x").unwrap();
        let err = format!("{:#}", list_images(dir.path()).unwrap_err());
        assert!(err.contains("a.png") && err.contains("a.jpg"), "{err}");
    }

    fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
        let noise = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                ((x * 7) ^ (y * 13)) as u8,
                (x * y) as u8,
                (x + y * 31) as u8,
            ])
        });
        let mut bytes = Vec::new();
        noise
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Jpeg)
            .unwrap();
        bytes
    }

    #[test]
    fn size_of_a_large_jpeg_comes_from_its_prefix() {
        let bytes = jpeg_bytes(500, 300);
        assert!(bytes.len() as u64 > HEADER_PREFIX_BYTES);
        assert_eq!(
            size_from_prefix(&bytes[..HEADER_PREFIX_BYTES as usize]),
            Some((500, 300))
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jpg");
        fs::write(&path, &bytes).unwrap();
        assert_eq!(image_size(&path).unwrap(), (500, 300));
    }

    #[test]
    fn size_of_a_jpeg_with_its_header_past_the_prefix_reads_the_whole_file() {
        // SOI, then two 64 KiB comment segments, then the rest of the JPEG.
        let jpeg = jpeg_bytes(50, 30);
        let mut bytes = jpeg[..2].to_vec();
        for _ in 0..2 {
            bytes.extend([0xFF, 0xFE, 0xFF, 0xFF]);
            bytes.extend(vec![b'c'; 0xFFFF - 2]);
        }
        bytes.extend(&jpeg[2..]);
        assert_eq!(
            size_from_prefix(&bytes[..HEADER_PREFIX_BYTES as usize]),
            None
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jpg");
        fs::write(&path, &bytes).unwrap();
        assert_eq!(image_size(&path).unwrap(), (50, 30));
        assert_eq!(decode_rgb(&path).unwrap().dimensions(), (50, 30));
    }
}
