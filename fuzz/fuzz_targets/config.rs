//! config.toml (`--config`, and a resumed run's folder): parsed, resolved against the
//! presets and validated like flags.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wgpu_fmnist::train::config::{PartialConfig, TrainConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(partial) = PartialConfig::from_toml(text) else {
        return;
    };
    if let Ok(cfg) = TrainConfig::resolve(&partial) {
        // What a run writes into its folder must be accepted on --resume, unchanged.
        let back = TrainConfig::from_run_toml(&cfg.to_toml()).expect("to_toml reads back");
        back.validate().expect("a written config validates");
        assert_eq!(back.to_toml(), cfg.to_toml());
    }
});
