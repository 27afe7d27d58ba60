use crate::common::*;
use wgpu_fmnist::kernels::data::*;

fn dataset(count: usize) -> (Vec<u8>, Vec<u8>) {
    let mut r = rng(5);
    (
        (0..count * PIXELS).map(|_| r.below(256) as u8).collect(),
        (0..count).map(|_| r.below(10) as u8).collect(),
    )
}

#[test]
fn gather_batch_forward_matches_reference() {
    // 37 examples (not a multiple of 4: packed bytes end mid-word), a permuted index list,
    // a full and a partial batch, with and without augmentation.
    let (images, labels) = dataset(37);
    let mut indices: Vec<u32> = (0..37).collect();
    rng(9).shuffle(&mut indices);
    let (ti, tl, tx) = (
        gpu().upload("images", &pack_bytes(&images)).unwrap(),
        gpu().upload("labels", &pack_bytes(&labels)).unwrap(),
        upload_u32("indices", &indices),
    );
    for (batch, step, flip, shift) in [
        (8, 3, false, 0),
        (8, 4, true, 2),
        (5, 7, true, 3),
        (8, 2, false, 1),
    ] {
        // Steps since the index list started: 3 full batches of 8 then the rest.
        let cfg = GatherConfig {
            batch,
            mean: 0.2860,
            std: 0.3530,
            flip,
            max_shift: shift,
            seed: 42,
            stride: 8,
        };
        let start = step - (step % 4);
        let counter = upload_u32("counter", &[step, start]);
        let (out_x, out_y) = (zeros("x", batch * PIXELS), zeros("labels", batch));
        run(&[&gather_batch(gpu(), cfg, &ti, &tl, &tx, &counter, &out_x, &out_y).unwrap()]);
        let (mut want_x, mut want_y) = (vec![0.0; batch * PIXELS], vec![0u32; batch]);
        gather_batch_reference(
            &mut want_x,
            &mut want_y,
            &images,
            &labels,
            &indices,
            cfg,
            step,
            start,
        );
        assert_kernel_close(
            &format!("gather_batch batch={batch} step={step} flip={flip} shift={shift}"),
            &read(&out_x),
            &want_x,
        );
        assert_eq!(read_u32(&out_y), want_y);
    }
}

#[test]
fn augmentation_changes_images_but_not_labels() {
    let (images, labels) = dataset(16);
    let indices: Vec<u32> = (0..16).collect();
    let (ti, tl, tx) = (
        gpu().upload("images", &pack_bytes(&images)).unwrap(),
        gpu().upload("labels", &pack_bytes(&labels)).unwrap(),
        upload_u32("indices", &indices),
    );
    let gather = |flip, shift| {
        let cfg = GatherConfig {
            batch: 16,
            mean: 0.0,
            std: 1.0,
            flip,
            max_shift: shift,
            seed: 1,
            stride: 16,
        };
        let counter = upload_u32("counter", &[0, 0]);
        let (x, y) = (zeros("x", 16 * PIXELS), zeros("y", 16));
        run(&[&gather_batch(gpu(), cfg, &ti, &tl, &tx, &counter, &x, &y).unwrap()]);
        (read(&x), read_u32(&y))
    };
    let (plain, plain_labels) = gather(false, 0);
    // Without augmentation the batch is the images scaled to [0, 1].
    assert!(plain
        .iter()
        .zip(&images)
        .all(|(&v, &p)| (v - p as f32 / 255.0).abs() < 1e-6));
    let (aug, aug_labels) = gather(true, 2);
    assert_eq!(plain_labels, aug_labels);
    let changed = (0..16)
        .filter(|&b| plain[b * PIXELS..(b + 1) * PIXELS] != aug[b * PIXELS..(b + 1) * PIXELS])
        .count();
    assert!(changed >= 12, "only {changed} of 16 images were augmented");
}
