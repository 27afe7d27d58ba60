//! Test-time augmentation by flips: the mirrored gather against the reference, the logits'
//! mean against its reference, and a whole evaluation against the CPU model's forward on
//! each image and its mirror image.

use crate::common::*;
use serde_json::json;
use wgpu_fmnist::infer::{Evaluator, GpuSplit};
use wgpu_fmnist::kernels::data::{self, GatherConfig, PIXELS};
use wgpu_fmnist::kernels::elementwise;
use wgpu_fmnist::model::{ModelSpec, NUM_CLASSES};
use wgpu_fmnist::net::Network;

#[test]
fn the_mirrored_gather_is_the_plain_one_mirrored() {
    let split = synthetic(9, 5);
    let g = GpuSplit::upload(gpu(), "tta", &split).unwrap();
    let ids: Vec<u32> = (0..9).rev().collect();
    let indices = upload_u32("indices", &ids);
    let counter = upload_u32("counter", &[0, 0, 0, 0]);
    let cfg = GatherConfig {
        batch: 9,
        mean: 0.5,
        std: 0.5,
        flip: true, // ignored by the mirrored gather
        max_shift: 0,
        seed: 3,
        stride: 9,
    };
    let (x, labels) = (zeros("x", 9 * PIXELS), zeros("labels", 9));
    let d = data::gather_batch_mirrored(
        gpu(),
        cfg,
        &g.images,
        &g.labels,
        &indices,
        &counter,
        &x,
        &labels,
    )
    .unwrap();
    run(&[&d]);
    let (mut want, mut want_labels) = (vec![0.0; 9 * PIXELS], vec![0u32; 9]);
    let plain = GatherConfig { flip: false, ..cfg };
    data::gather_batch_reference(
        &mut want,
        &mut want_labels,
        &split.images.pixels,
        &split.labels,
        &ids,
        plain,
        0,
        0,
    );
    data::mirror_reference(&mut want);
    // The normalisation may contract into a fused multiply-add (SwiftShader does).
    assert_kernel_close("mirrored gather", &read(&x), &want);
    assert_eq!(read_u32(&labels), want_labels);
}

#[test]
fn averaging_two_views_matches_its_reference() {
    let mut r = rng(8);
    for n in [1, 4, 10, 2503] {
        let (a, b) = (r.vec(n, -5.0, 5.0), r.vec(n, -5.0, 5.0));
        let (ta, tb, kept) = (upload("a", &a), upload("b", &b), zeros("kept", n));
        run(&[
            &elementwise::copy(gpu(), &ta, &kept, n).unwrap(),
            &elementwise::average_into(gpu(), &kept, &tb, n).unwrap(),
        ]);
        assert_eq!(read(&kept), a, "copy, n={n}");
        let mut want = b.clone();
        elementwise::average_into_reference(&mut want, &a);
        assert_eq!(read(&tb), want, "average, n={n}");
    }
}

/// A whole evaluation with flip TTA (a partial last batch included) against the reference
/// model's forward on each image and its mirror, logits averaged: same loss, same accuracy.
#[test]
fn flip_tta_evaluation_matches_the_reference_on_both_views() {
    let spec = ModelSpec::parse("conv(4,3) relu maxpool(2) flatten linear(10)").unwrap();
    let params = spec.init_params(21);
    let net = Network::new(gpu(), spec.clone(), &params).unwrap();
    let split = synthetic(70, 6);
    let g = GpuSplit::upload(gpu(), "tta", &split).unwrap();
    let ids: Vec<u32> = (0..70).collect();
    let (mean, std) = (0.5, 0.5);
    let eval = |tta| {
        Evaluator::new(gpu(), &net, &g, &ids, 32, mean, std, tta)
            .unwrap()
            .run(gpu())
            .unwrap()
    };
    let (plain, flipped) = (eval(false), eval(true));
    let x: Vec<f32> = split
        .images
        .pixels
        .iter()
        .map(|&p| (p as f32 / 255.0 - mean) / std)
        .collect();
    let mut mirrored = x.clone();
    data::mirror_reference(&mut mirrored);
    let a = wgpu_fmnist::reference::eval_forward(&spec, &params, &x);
    let b = wgpu_fmnist::reference::eval_forward(&spec, &params, &mirrored);
    let summary = |logits: &[f32]| {
        let (mut loss, mut correct) = (0.0f64, 0);
        for (row, &label) in logits.chunks(NUM_CLASSES).zip(&split.labels) {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            loss += lse - row[label as usize] as f64;
            let best = (0..NUM_CLASSES).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            correct += (best == label as usize) as usize;
        }
        (loss / 70.0, correct as f64 / 70.0)
    };
    let averaged: Vec<f32> = a.iter().zip(&b).map(|(u, v)| (u + v) * 0.5).collect();
    for (what, got, logits) in [("plain", plain, &a), ("flip", flipped, &averaged)] {
        let (loss, accuracy) = summary(logits);
        assert_eq!(got.count, 70, "{what}");
        assert!(
            (got.loss - loss).abs() < 1e-4,
            "{what}: loss {} vs {loss}",
            got.loss
        );
        assert!(
            (got.accuracy - accuracy).abs() <= 1.0 / 70.0 + 1e-12,
            "{what}: {} vs {accuracy}",
            got.accuracy
        );
    }
    // The views differ on these images, so the mean is not the plain forward.
    assert!(
        (plain.loss - flipped.loss).abs() > 1e-4,
        "{} {}",
        plain.loss,
        flipped.loss
    );
}

/// `predict` with flip TTA (two chunks of images, the last one partial) gives the softmax of
/// the mean of the reference model's logits on each image and its mirror; without it, the
/// softmax of the plain logits.
#[test]
fn predict_with_flip_tta_matches_the_reference_on_both_views() {
    use wgpu_fmnist::checkpoint::{Checkpoint, Meta};
    let spec = ModelSpec::parse("conv(4,3) relu maxpool(2) flatten linear(10)").unwrap();
    let ckpt = Checkpoint {
        params: spec.init_params(5),
        spec: spec.clone(),
        meta: Meta::default(),
        optim: None,
    };
    let split = synthetic(300, 7);
    let images: Vec<Vec<u8>> = split
        .images
        .pixels
        .chunks(PIXELS)
        .map(<[u8]>::to_vec)
        .collect();
    let (mean, std) = (ckpt.meta.input_mean, ckpt.meta.input_std);
    let x: Vec<f32> = split
        .images
        .pixels
        .iter()
        .map(|&p| (p as f32 / 255.0 - mean) / std)
        .collect();
    let mut mirrored = x.clone();
    data::mirror_reference(&mut mirrored);
    let a = wgpu_fmnist::reference::eval_forward(&spec, &ckpt.params, &x);
    let b = wgpu_fmnist::reference::eval_forward(&spec, &ckpt.params, &mirrored);
    let averaged: Vec<f32> = a.iter().zip(&b).map(|(u, v)| (u + v) * 0.5).collect();
    let softmax = |row: &[f32]| -> Vec<f64> {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    };
    let mut results = vec![];
    for (flip, logits) in [(false, &a), (true, &averaged)] {
        let got = wgpu_fmnist::infer::predict(gpu(), &ckpt, &images, flip).unwrap();
        assert_eq!(got.len(), 300);
        for (i, (g, row)) in got.iter().zip(logits.chunks(NUM_CLASSES)).enumerate() {
            let want = softmax(row);
            for c in 0..NUM_CLASSES {
                assert!(
                    (g[c] as f64 - want[c]).abs() < 1e-4,
                    "flip {flip}, image {i}, class {c}: {} vs {}",
                    g[c],
                    want[c]
                );
            }
        }
        results.push(got);
    }
    // The views differ on these images, so TTA moves the probabilities.
    let moved = (results[0].iter().flatten())
        .zip(results[1].iter().flatten())
        .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(moved > 1e-3, "largest change {moved}");
}

/// `train --tta flip` evaluates with it (recorded in config.toml); `eval` and `predict` on
/// the run's checkpoint use it by default (`--tta` overrides), so `eval` reproduces the
/// run's test accuracy, as does its test.json.
#[test]
fn cli_train_and_eval_with_flip_tta_agree() {
    use std::process::Command;
    let Some(data) = real_data() else { return };
    let out = std::env::temp_dir().join(format!("wgpu-fmnist-tta-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let bin = env!("CARGO_BIN_EXE_wgpu-fmnist");
    let r = Command::new(bin)
        .args([
            "train",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--limit-train",
            "3000",
        ])
        .args([
            "--val", "500", "--tta", "flip", "--json", "--name", "t", "--data",
        ])
        .arg(data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let stdout = String::from_utf8_lossy(&r.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let config = std::fs::read_to_string(out.join("t/config.toml")).unwrap();
    assert!(config.contains("tta = \"flip\""), "{config}");
    let eval = |tta: &[&str]| {
        let r = Command::new(bin)
            .args(["eval", "--json"])
            .args(tta)
            .arg("--checkpoint")
            .arg(out.join("t/last.safetensors"))
            .arg("--data")
            .arg(data)
            .output()
            .unwrap();
        assert_eq!(
            r.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        (v["accuracy"].as_f64().unwrap(), v["tta"].clone())
    };
    let (flip, none) = (eval(&["--tta", "flip"]), eval(&["--tta", "none"]));
    assert_eq!(Some(flip.0), summary["test_accuracy"].as_f64());
    assert_eq!((&flip.1, &none.1), (&json!("flip"), &json!("none")));
    assert_ne!(none.0, flip.0);
    assert_eq!(eval(&[]), flip, "eval's default is the run's TTA");
    // test.json (report.html's confusion matrix and per-class figures) scores the same
    // views: its accuracy is the summary's (an image whose two best classes tie to f32 in
    // the probabilities could flip the argmax, hence one image of slack).
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("t/test.json")).unwrap()).unwrap();
    let (reported, count) = (
        report["accuracy"].as_f64().unwrap(),
        report["count"].as_f64(),
    );
    assert_eq!(count, Some(10_000.0));
    let summarised = summary["test_accuracy"].as_f64().unwrap();
    assert!(
        (reported - summarised).abs() <= 1.0 / 10_000.0 + 1e-12,
        "test.json {reported} vs summary {summarised}"
    );
    // predict --tta flip scores a picture and its mirror image alike (the mean of the two
    // views' logits is the same sum); without TTA the two differ.
    let picture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sandal.png");
    let mirror = out.join("sandal-mirrored.png");
    image::open(&picture)
        .unwrap()
        .fliph()
        .save(&mirror)
        .unwrap();
    let predict = |tta: &[&str], file: &std::path::Path| {
        let r = Command::new(bin)
            .args(["predict", "--json", "--top", "10"])
            .args(tta)
            .arg("--checkpoint")
            .arg(out.join("t/last.safetensors"))
            .arg(file)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        serde_json::from_slice::<serde_json::Value>(&r.stdout).unwrap()["top"].clone()
    };
    let flip = ["--tta", "flip"];
    assert_eq!(predict(&flip, &picture), predict(&flip, &mirror));
    assert_ne!(
        predict(&["--tta", "none"], &picture),
        predict(&["--tta", "none"], &mirror)
    );
    assert_eq!(
        predict(&[], &mirror),
        predict(&flip, &mirror),
        "predict's default"
    );
    let _ = std::fs::remove_dir_all(&out);
}
