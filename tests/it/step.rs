//! The whole training step (forward, loss, backward: logits, loss and every parameter
//! gradient) and the inference forward of every preset, and of specs that exercise the
//! other fusion paths, against the CPU reference composed from the kernels' references.
//! This is what `bench` checks before timing; here it runs at small batches in CI.

use crate::common::gpu;
use wgpu_fmnist::bench::validate;
use wgpu_fmnist::gpu::{AdapterRequest, Gpu, Variant};
use wgpu_fmnist::model::{self, ModelSpec};

fn check(what: &str, spec: &ModelSpec, batch: usize) {
    check_on(gpu(), what, spec, batch)
}

fn check_on(gpu: &Gpu, what: &str, spec: &ModelSpec, batch: usize) {
    let v = validate(gpu, spec, batch).unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!(
        "{what} at batch {}: {} tensors, worst error {:.3} of the tolerance",
        v.batch, v.tensors, v.worst_relative
    );
    assert!(v.worst_relative <= 1.0);
}

#[test]
fn every_preset_step_matches_the_reference() {
    for name in ["mlp", "cnn1", "cnn2", "regcnn", "vgg", "fast"] {
        let preset = model::preset(name).expect("preset");
        let spec = ModelSpec::parse(preset.spec).expect("spec");
        // vgg's CPU reference is slow: its smallest useful batch.
        let batch = if name == "vgg" { 2 } else { 5 };
        check(name, &spec, batch);
    }
}

#[test]
fn other_fusions_match_the_reference() {
    for (what, text) in [
        // Overlapping windows: the generic pool backward with a dropout and a ReLU fused
        // before it and a dropout after it.
        (
            "overlapping pool with fused activations",
            "conv(6,3) bn dropout(0.3) relu maxpool(3,2) dropout(0.25) flatten linear(10)",
        ),
        // ReLU before dropout, and a pool whose input is the network's input.
        (
            "relu then dropout, pool on the input",
            "relu maxpool(2) conv(4,3,1,1) relu dropout(0.4) maxpool(2) flatten linear(10)",
        ),
        // Dropout and ReLU with no pool to absorb them; batch norm over features.
        (
            "batch norm 1d, unfused activations",
            "flatten linear(24) bn relu dropout(0.5) linear(10)",
        ),
    ] {
        let spec = ModelSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        check(what, &spec, 4);
    }
}

#[test]
fn every_preset_step_matches_the_reference_with_generic_kernels() {
    // `--variant generic`: no subgroup, vec4 or tiled kernels anywhere.
    let generic = Gpu::new(&AdapterRequest {
        variant: Variant::Generic,
        ..Default::default()
    })
    .unwrap();
    for name in ["mlp", "cnn1", "cnn2", "regcnn", "vgg", "fast"] {
        let spec = ModelSpec::parse(model::preset(name).expect("preset").spec).expect("spec");
        let batch = if name == "vgg" { 2 } else { 5 };
        check_on(&generic, &format!("{name} (generic)"), &spec, batch);
    }
}
