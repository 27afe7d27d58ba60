//! The data set: IDX reading, discovery of the four standard files, and download.
//!
//! Discovery order: `--data DIR`, `$FMNIST_DATA`, `./data/fashion-mnist`,
//! `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`); otherwise the
//! canonical files are downloaded into `./data/fashion-mnist` and their MD5s checked.

pub mod download;
pub mod idx;

use std::path::{Path, PathBuf};
use thiserror::Error;

pub use idx::Images;

/// Fashion-MNIST's class names, index = label.
pub const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The four standard file stems; each may carry a `.gz` suffix.
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
pub const LOCAL_DIR: &str = "data/fashion-mnist";

#[derive(Debug, Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a gzip stream or corrupt gzip data: {message}")]
    BadGzip { path: PathBuf, message: String },
    #[error("{path}: wrong IDX magic number 0x{found:08x} (expected 0x{expected:08x}); is this the right file?")]
    BadMagic {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path}: truncated: {message}")]
    Truncated { path: PathBuf, message: String },
    #[error("{path}: malformed: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("{path}: label {label} at index {index} is out of range (expected 0..{classes})")]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
        classes: usize,
    },
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels")]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        image_count: usize,
        label_count: usize,
    },
    #[error("{path}: holds no images; training needs a non-empty train split and evaluation a non-empty test split")]
    NoImages { path: PathBuf },
    #[error("{path}: images are {rows}x{cols}; the models take 28x28")]
    WrongImageSize {
        path: PathBuf,
        rows: usize,
        cols: usize,
    },
    #[error(
        "no Fashion-MNIST data found (searched: {searched}) and the download failed: {download_error}\n\
         Get the data in one of three ways:\n  \
         1. pass --data DIR (or set FMNIST_DATA=DIR) with the four *-ubyte(.gz) files\n  \
         2. on Debian/Ubuntu: apt-get install dataset-fashion-mnist (installs {debian})\n  \
         3. connect to the internet: the files are then downloaded into ./{local}"
    )]
    NotFound {
        searched: String,
        download_error: String,
        debian: &'static str,
        local: &'static str,
    },
    #[error("{dir}: {what}; --data (or FMNIST_DATA) must name a folder holding the four *-ubyte(.gz) files")]
    NotAFolder { dir: PathBuf, what: &'static str },
    #[error("{dir}: missing {file}(.gz) (a data directory needs all four of {all})")]
    MissingFile {
        dir: PathBuf,
        file: &'static str,
        all: String,
    },
    #[error("downloading {url}: {message}")]
    Download { url: String, message: String },
    #[error("{path}: MD5 {got} does not match the published {expected}; the download is corrupt and was discarded")]
    Checksum {
        path: PathBuf,
        expected: String,
        got: String,
    },
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One split: images and their labels.
#[derive(Clone, Debug)]
pub struct Split {
    pub images: Images,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The first `n` examples (or all of them).
    pub fn take(&self, n: usize) -> Split {
        let n = n.min(self.len());
        let px = self.images.rows * self.images.cols;
        Split {
            images: Images {
                count: n,
                rows: self.images.rows,
                cols: self.images.cols,
                pixels: self.images.pixels[..n * px].to_vec(),
            },
            labels: self.labels[..n].to_vec(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub dir: PathBuf,
    pub train: Split,
    pub test: Split,
}

/// `dir/stem.gz` or `dir/stem`, whichever exists.
pub fn locate(dir: &Path, stem: &'static str) -> Result<PathBuf, DataError> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DataError::MissingFile {
        dir: dir.to_path_buf(),
        file: stem,
        all: FILES.join(", "),
    })
}

fn has_all(dir: &Path) -> bool {
    FILES.iter().all(|f| locate(dir, f).is_ok())
}

/// Reads one split's image and label files and checks they agree.
pub fn load_split(images: &Path, labels: &Path) -> Result<Split, DataError> {
    let raw_images = std::fs::read(images).map_err(|e| DataError::io(images, e))?;
    let raw_labels = std::fs::read(labels).map_err(|e| DataError::io(labels, e))?;
    split_from_bytes(images, raw_images, labels, raw_labels)
}

/// One split from its two IDX files' bytes (gzipped or not), as `load_split` reads them
/// from disk and a browser receives them; the paths only name them in errors.
pub fn split_from_bytes(
    images: &Path,
    raw_images: Vec<u8>,
    labels: &Path,
    raw_labels: Vec<u8>,
) -> Result<Split, DataError> {
    let imgs = idx::parse_images(images, &idx::decode_maybe_gzip(images, raw_images)?)?;
    if imgs.rows != 28 || imgs.cols != 28 {
        return Err(DataError::WrongImageSize {
            path: images.to_path_buf(),
            rows: imgs.rows,
            cols: imgs.cols,
        });
    }
    let labs = idx::parse_labels(
        labels,
        &idx::decode_maybe_gzip(labels, raw_labels)?,
        CLASSES.len(),
    )?;
    if imgs.count != labs.len() {
        return Err(DataError::CountMismatch {
            images: images.to_path_buf(),
            labels: labels.to_path_buf(),
            image_count: imgs.count,
            label_count: labs.len(),
        });
    }
    if imgs.count == 0 {
        return Err(DataError::NoImages {
            path: images.to_path_buf(),
        });
    }
    Ok(Split {
        images: imgs,
        labels: labs,
    })
}

/// Loads train and test splits from a directory holding the four files.
pub fn load_dir(dir: &Path) -> Result<Dataset, DataError> {
    let p: Vec<PathBuf> = FILES
        .iter()
        .map(|f| locate(dir, f))
        .collect::<Result<_, _>>()?;
    Ok(Dataset {
        dir: dir.to_path_buf(),
        train: load_split(&p[0], &p[1])?,
        test: load_split(&p[2], &p[3])?,
    })
}

/// Finds the data directory: an explicit one must hold the files (no fallback, so a typo is
/// not silently replaced by other data); otherwise the standard places, then a download.
pub fn find(explicit: Option<&Path>, quiet: bool) -> Result<PathBuf, DataError> {
    let env = std::env::var_os("FMNIST_DATA").map(PathBuf::from);
    let places = [PathBuf::from(LOCAL_DIR), PathBuf::from(DEBIAN_DIR)];
    find_in(
        explicit,
        env.as_deref(),
        &places,
        &download::base_url(),
        Path::new(LOCAL_DIR),
        quiet,
    )
}

/// `find` with every input explicit: `env` is `$FMNIST_DATA`, `places` the standard
/// directories in order, `mirror` and `target` where to download from and to.
pub fn find_in(
    explicit: Option<&Path>,
    env: Option<&Path>,
    places: &[PathBuf],
    mirror: &str,
    target: &Path,
    quiet: bool,
) -> Result<PathBuf, DataError> {
    if let Some(dir) = explicit.or(env) {
        let what = match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("does not exist"),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some("cannot be read"),
            Err(_) => Some("cannot be opened"),
            Ok(m) if !m.is_dir() => Some("is a file, not a folder"),
            Ok(_) => None,
        };
        if let Some(what) = what {
            return Err(DataError::NotAFolder {
                dir: dir.to_path_buf(),
                what,
            });
        }
        for f in FILES {
            locate(dir, f)?;
        }
        return Ok(dir.to_path_buf());
    }
    let mut searched = vec!["$FMNIST_DATA (unset)".to_string()];
    for dir in places {
        if has_all(dir) {
            return Ok(dir.clone());
        }
        searched.push(dir.display().to_string());
    }
    match download::fetch_all(mirror, target, quiet) {
        Ok(()) => Ok(target.to_path_buf()),
        Err(e) => Err(DataError::NotFound {
            searched: searched.join(", "),
            download_error: e.to_string(),
            debian: DEBIAN_DIR,
            local: LOCAL_DIR,
        }),
    }
}

/// `find` then `load_dir`.
pub fn load(explicit: Option<&Path>, quiet: bool) -> Result<Dataset, DataError> {
    load_dir(&find(explicit, quiet)?)
}
