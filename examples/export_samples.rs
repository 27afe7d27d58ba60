//! Writes the sample images in assets/: the first test-set image of a few classes as PNG,
//! and one of them enlarged 4x on a white background (to exercise resizing and
//! `--invert auto`). Run: cargo run --example export_samples [DATA_DIR]

use std::path::PathBuf;
use wgpu_fmnist::data;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(data::DEBIAN_DIR));
    let ds = data::load_dir(&dir)?;
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets");
    std::fs::create_dir_all(&out)?;
    for (class, file) in [
        (1u8, "trouser"),
        (5, "sandal"),
        (7, "sneaker"),
        (8, "bag"),
        (9, "ankle-boot"),
    ] {
        let i = ds
            .test
            .labels
            .iter()
            .position(|&l| l == class)
            .ok_or("class missing")?;
        let px = &ds.test.images.pixels[i * 784..(i + 1) * 784];
        image::save_buffer(
            out.join(format!("{file}.png")),
            px,
            28,
            28,
            image::ExtendedColorType::L8,
        )?;
        if file == "bag" {
            let big: Vec<u8> = (0..112 * 112)
                .map(|k| 255 - px[(k / 112 / 4) * 28 + (k % 112) / 4])
                .collect();
            image::save_buffer(
                out.join("bag-on-white.png"),
                &big,
                112,
                112,
                image::ExtendedColorType::L8,
            )?;
        }
        println!("test image {i} (class {class}) -> assets/{file}.png");
    }
    Ok(())
}
