//! The image loader behind `predict` (PNG and JPEG, any size, any colour type).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wgpu_fmnist::infer::{decode_image, Invert};

fuzz_target!(|data: &[u8]| {
    let Some((&choice, bytes)) = data.split_first() else {
        return;
    };
    let invert = [Invert::Auto, Invert::Yes, Invert::No][choice as usize % 3];
    if let Ok(pixels) = decode_image("fuzz.png", bytes, invert) {
        assert_eq!(pixels.len(), 28 * 28);
    }
});
