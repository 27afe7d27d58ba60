//! IDX files (the MNIST format), plain or gzipped: validated magic, dimensions, length and
//! label range, each failure a `DataError` naming the file.

use super::DataError;
use std::io::Read;
use std::path::Path;

const MAGIC_U8_1D: u32 = 0x0000_0801;
const MAGIC_U8_3D: u32 = 0x0000_0803;

/// Images of one split: `count` images of `rows` x `cols` u8 pixels, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Decompressed sizes above this are refused before they are allocated: the largest
/// Fashion-MNIST file is 47 MB, and a small gzip can otherwise expand without bound.
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

/// Reads a whole file, transparently gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_maybe_gzip(path, raw)
}

/// The bytes of a file as read from `path`, gunzipped when they start with the gzip magic.
pub fn decode_maybe_gzip(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(1 << 26));
    flate2::read::MultiGzDecoder::new(&raw[..])
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| DataError::BadGzip {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(DataError::BadGzip {
            path: path.to_path_buf(),
            message: format!(
                "decompresses to more than {} MiB, larger than any IDX file this program reads",
                MAX_DECOMPRESSED_BYTES >> 20
            ),
        });
    }
    Ok(out)
}

fn header(path: &Path, bytes: &[u8], magic: u32, dims: usize) -> Result<Vec<usize>, DataError> {
    let need = 4 + 4 * dims;
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    // The magic first: a wrong file should say so even when it is short.
    if bytes.len() >= 4 && be(0) != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: be(0),
            expected: magic,
        });
    }
    if bytes.len() < need {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            message: format!(
                "{} bytes is shorter than the {need}-byte IDX header",
                bytes.len()
            ),
        });
    }
    let sizes: Vec<usize> = (0..dims).map(|d| be(4 + 4 * d) as usize).collect();
    // Checked: the dimensions are untrusted u32s whose product can overflow (and would
    // then pass the length check below with a count that does not match the bytes).
    let payload = sizes
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::Malformed {
            path: path.to_path_buf(),
            message: format!(
                "the header's dimensions {sizes:?} describe more bytes than can exist"
            ),
        })?;
    let have = bytes.len() - need;
    if have < payload {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            message: format!(
                "header promises {payload} data bytes ({sizes:?}) but the file has {have}"
            ),
        });
    }
    if have > payload {
        return Err(DataError::Malformed {
            path: path.to_path_buf(),
            message: format!(
                "{} bytes follow the {payload} data bytes the header describes",
                have - payload
            ),
        });
    }
    Ok(sizes)
}

/// Parses an IDX3 u8 image file (already decompressed).
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<Images, DataError> {
    let dims = header(path, bytes, MAGIC_U8_3D, 3)?;
    Ok(Images {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels: bytes[16..].to_vec(),
    })
}

/// Parses an IDX1 u8 label file and checks every label is below `classes`.
pub fn parse_labels(path: &Path, bytes: &[u8], classes: usize) -> Result<Vec<u8>, DataError> {
    header(path, bytes, MAGIC_U8_1D, 1)?;
    let labels = bytes[8..].to_vec();
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        return Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label,
            classes,
        });
    }
    Ok(labels)
}

pub fn read_images(path: &Path) -> Result<Images, DataError> {
    parse_images(path, &read_maybe_gzip(path)?)
}

pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<u8>, DataError> {
    parse_labels(path, &read_maybe_gzip(path)?, classes)
}

/// Encodes images as an IDX3 file (for tests and tools).
pub fn encode_images(images: &Images) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + images.pixels.len());
    for v in [
        MAGIC_U8_3D,
        images.count as u32,
        images.rows as u32,
        images.cols as u32,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&images.pixels);
    out
}

/// Encodes labels as an IDX1 file (for tests and tools).
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&MAGIC_U8_1D.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}
