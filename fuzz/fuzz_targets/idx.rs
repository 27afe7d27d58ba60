//! IDX files, plain or gzipped: any bytes give images/labels or a `DataError`, never a
//! panic or an allocation the file does not justify.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use wgpu_fmnist::data::idx;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-idx.gz");
    let Ok(bytes) = idx::decode_maybe_gzip(path, data.to_vec()) else {
        return;
    };
    if let Ok(images) = idx::parse_images(path, &bytes) {
        assert_eq!(images.pixels.len(), images.count * images.rows * images.cols);
        assert_eq!(idx::encode_images(&images), bytes);
    }
    if let Ok(labels) = idx::parse_labels(path, &bytes, 10) {
        assert!(labels.iter().all(|&l| l < 10));
        assert_eq!(idx::encode_labels(&labels), bytes);
    }
});
