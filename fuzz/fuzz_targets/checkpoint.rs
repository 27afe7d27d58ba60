//! The checkpoint loader: safetensors header, metadata (spec, normalisation, classes,
//! optimizer state) and tensors checked against the network the spec describes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use wgpu_fmnist::checkpoint;
use wgpu_fmnist::model::ModelSpec;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    // The first byte picks whether `--model` is given, as eval/predict allow.
    let Some((&choice, bytes)) = data.split_first() else {
        return;
    };
    let spec = ModelSpec::parse("flatten linear(4) relu linear(10)").unwrap();
    let given = (choice & 1 == 1).then_some(&spec);
    if let Ok(ckpt) = checkpoint::from_bytes(path, bytes, given) {
        // Whatever loads must save and load back to the same thing.
        let again = checkpoint::to_bytes(&ckpt).expect("a loaded checkpoint saves");
        let back = checkpoint::from_bytes(path, &again, None).expect("a saved checkpoint loads");
        assert_eq!(back.spec.layers, ckpt.spec.layers);
    }
});
