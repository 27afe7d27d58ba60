use crate::common::*;
use wgpu_fmnist::kernels::augment::*;
use wgpu_fmnist::kernels::data::{pack_bytes, GatherConfig, PIXELS};

/// Images with structure (a bright blob on black, as Fashion-MNIST items are), so that
/// geometry moves something.
fn dataset(count: usize) -> (Vec<u8>, Vec<u8>) {
    let mut r = rng(7);
    let mut images = vec![0u8; count * PIXELS];
    for (n, img) in images.chunks_mut(PIXELS).enumerate() {
        let (cx, cy, rad) = (
            8.0 + r.below(12) as f32,
            8.0 + r.below(12) as f32,
            4.0 + (n % 5) as f32,
        );
        for (i, v) in img.iter_mut().enumerate() {
            let (x, y) = ((i % 28) as f32, (i / 28) as f32);
            if (x - cx).powi(2) + (y - cy).powi(2) < rad * rad {
                *v = 120 + r.below(136) as u8;
            }
        }
    }
    (images, (0..count).map(|_| r.below(10) as u8).collect())
}

#[test]
fn augmented_gather_matches_reference() {
    let (images, labels) = dataset(21);
    let mut indices: Vec<u32> = (0..21).collect();
    rng(3).shuffle(&mut indices);
    let (tl, tx) = (
        gpu().upload("labels", &pack_bytes(&labels)).unwrap(),
        upload_u32("indices", &indices),
    );
    // The adapter's own layout (one row of images), and one spread over 3 layers of 3 rows
    // of 3 (the last row part-filled): every image's cell must be found.
    let atlases = [
        Atlas::new(gpu(), &images).unwrap(),
        Atlas::with_side(gpu(), &images, (3 * CELL + 1) as u32).unwrap(),
    ];
    assert_eq!(
        atlases[1].layout,
        AtlasLayout {
            per_row: 3,
            rows: 3,
            layers: 3
        }
    );
    let workspaces: Vec<Workspace> = atlases
        .into_iter()
        .zip([8, 5])
        .map(|(atlas, batch)| Workspace::with_atlas(gpu(), batch, atlas).unwrap())
        .collect();
    for text in [
        "flip(p=1) vflip(p=0.5) shift(3)",
        "affine(rotate=30,translate=0.1,scale=0.8:1.2,shear=10)",
        "resized_crop(scale=0.3:1,ratio=0.5:2)",
        "perspective(d=0.6,p=1)",
        "brightness(0.4) contrast(0.5)",
        "blur(k=5,sigma=0.5:2)",
        // Blur on some examples only, after contrast: the split passes' every branch.
        "contrast(0.6) blur(k=7,sigma=0.3:3,p=0.5) erase(p=0.5)",
        // The row blur's reach: one neighbouring quad up to k=9, two beyond.
        "blur(k=9,sigma=2:3)",
        "contrast(0.3) blur(k=15,sigma=1:4)",
        "noise(0.1)",
        "erase(p=1,scale=0.05:0.3,value=0.5)",
        "affine(rotate=15,scale=0.9:1.1) perspective(0.3) flip brightness(0.2) contrast(0.2) blur(k=3) noise(0.05) erase(p=0.5)",
        // Pixel-by-pixel items only: the 4-pixels-per-thread kernel.
        "affine(rotate=10,translate=0.1) flip brightness(0.3) noise(0.05) erase(p=0.7)",
    ] {
        let a = Augment::parse(text).unwrap();
        for (ws, (batch, step)) in workspaces.iter().zip([(8, 5), (5, 7)]) {
            let g = GatherConfig {
                batch,
                mean: 0.5,
                std: 0.5,
                flip: false,
                max_shift: 0,
                seed: 11,
                stride: 8,
            };
            let start = step - 1;
            let counter = upload_u32("counter", &[step, start]);
            let (out_x, out_y, ex) = (zeros("x", batch * PIXELS), zeros("labels", batch), &ws.scratch);
            let plan = gather_augmented(gpu(), &a, g, ws, &tl, &tx, &counter, &out_x, &out_y).unwrap();
            run(&plan.iter().collect::<Vec<_>>());
            // The per-example draws first (where a disagreement is easiest to read).
            let draws: Vec<f32> = (0..batch as u32).flat_map(|b| example_reference(&a, 11, step, b)).collect();
            assert_close(&format!("augment_params `{text}` batch={batch}"), &read(ex)[..batch * PER_EXAMPLE], &draws, 1e-4, 1e-4);
            let (mut want_x, mut want_y) = (vec![0.0; batch * PIXELS], vec![0u32; batch]);
            gather_augmented_reference(&mut want_x, &mut want_y, &images, &labels, &indices, &a, g, step, start);
            // sin/cos/exp/log differ in the last bits between the GPU and Rust's libm.
            assert_close(&format!("gather_augmented `{text}` batch={batch}"), &read(&out_x), &want_x, 2e-3, 1e-3);
            assert_eq!(read_u32(&out_y), want_y);
        }
    }
}

#[test]
fn flip_and_shift_alone_move_whole_pixels_exactly() {
    // No interpolation error when the geometry is a mirror and a whole-pixel shift: the
    // values are the source pixels exactly.
    let (images, labels) = dataset(4);
    let indices: Vec<u32> = (0..4).collect();
    let a = Augment::parse("flip(p=1) shift(2)").unwrap();
    let g = GatherConfig {
        batch: 4,
        mean: 0.0,
        std: 1.0,
        flip: false,
        max_shift: 0,
        seed: 2,
        stride: 4,
    };
    let (mut x, mut y) = (vec![0.0; 4 * PIXELS], vec![0u32; 4]);
    gather_augmented_reference(&mut x, &mut y, &images, &labels, &indices, &a, g, 0, 0);
    for v in &x {
        let byte = v * 255.0;
        assert!(
            (byte - byte.round()).abs() < 1e-3,
            "{v} is not a source pixel"
        );
    }
    // And the mirror is a mirror: some example's image reversed row by row.
    let e = example_reference(&a, 2, 0, 0);
    assert_eq!((e[0], e[1]), (-1.0, 0.0));
}

#[test]
fn portable_sin_cos_is_accurate() {
    // The draws' trigonometry (rotation, shear, Box-Muller) is computed by this polynomial
    // on the GPU and in the reference alike; it must be as good as libm's over the angles
    // the items draw (rotations to 180 degrees, 2 pi for the noise) and beyond.
    let mut worst = 0f64;
    for i in -200_000..=200_000 {
        let x = i as f32 * 5e-5 * std::f32::consts::PI;
        let (s, c) = sin_cos(x);
        let (ws, wc) = ((x as f64).sin(), (x as f64).cos());
        worst = worst.max((s as f64 - ws).abs()).max((c as f64 - wc).abs());
    }
    assert!(
        worst < 2.5e-7,
        "sin_cos is off by {worst:e} somewhere in [-10pi, 10pi]"
    );
    assert_eq!(sin_cos(0.0), (0.0, 1.0));
}
