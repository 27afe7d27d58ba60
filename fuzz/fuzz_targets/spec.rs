//! The model spec parser (`--model`, config.toml, checkpoint metadata).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wgpu_fmnist::model::ModelSpec;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(spec) = ModelSpec::parse(&text) {
        // The canonical text we store in checkpoints parses back to the same layers.
        let again = ModelSpec::parse(&spec.to_text()).expect("to_text parses");
        assert_eq!(again.layers, spec.layers);
    }
});
