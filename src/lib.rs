//! wgpu-fmnist: Fashion-MNIST training and inference on the GPU through hand-written WGSL.
//!
//! `gpu` owns the device and buffers; `kernels` holds one module per WGSL kernel family with
//! its CPU reference beside the dispatch wrapper; `net` turns a model (`model`) into
//! recorded GPU steps; `train` runs the training loop on the GPU, `infer` evaluates and
//! predicts; `run`, `report` and `render` are what the CLI (`cli`) adds around them: run
//! folders, pages and printed output. docs/architecture.md has the picture.
//!
//! Training a model and evaluating it without the CLI:
//!
//! ```no_run
//! use wgpu_fmnist::checkpoint::{Checkpoint, Meta};
//! use wgpu_fmnist::gpu::{AdapterRequest, Gpu};
//! use wgpu_fmnist::train::{PartialConfig, Silent, TrainConfig};
//! use wgpu_fmnist::{data, infer, train};
//!
//! fn main() -> anyhow::Result<()> {
//!     // The best adapter (lavapipe when there is no GPU) and the data set from its usual
//!     // places (/usr/share/datasets/fashion-mnist, ./data, or downloaded).
//!     let gpu = Gpu::new(&AdapterRequest::default())?;
//!     let data = data::load(None, true)?;
//!     // A preset's recipe with some settings changed, as flags would change them.
//!     let cfg = TrainConfig::resolve(&PartialConfig {
//!         model: Some("cnn1".into()),
//!         epochs: Some(2),
//!         ..Default::default()
//!     })?;
//!     let outcome = train::train(&gpu, &cfg, &data, &mut Silent)?;
//!     println!("test accuracy after training: {:.2} %", 100.0 * outcome.test_accuracy);
//!     // The trained weights evaluated again, as `eval` does with a checkpoint file.
//!     let model = Checkpoint {
//!         spec: cfg.model_spec()?,
//!         params: outcome.params,
//!         meta: Meta::default(),
//!         optim: None,
//!     };
//!     let report = infer::evaluate(&gpu, &model, &data.test, 250)?;
//!     println!("{:.2} % of {} test images", 100.0 * report.accuracy, report.count);
//!     Ok(())
//! }
//! ```

/// `println!` that never panics: a closed pipe (`| head`, a dropped ssh session) must not
/// stop a training run; the output is lost, the work is not.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics (see `outln!`).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

// The platform-neutral core: the browser build (wasm32, web/) shares it with the CLI.
pub mod checkpoint;
pub mod data;
pub mod fsutil;
pub mod gpu;
pub mod infer;
pub mod kernels;
pub mod model;
pub mod net;
pub mod reference;
pub mod rng;
pub mod train;

// What the native CLI adds: files, terminals, signals, pages and measurements.
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
#[cfg(not(target_arch = "wasm32"))]
pub mod check;
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
#[cfg(not(target_arch = "wasm32"))]
pub mod render;
#[cfg(not(target_arch = "wasm32"))]
pub mod report;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
#[cfg(not(target_arch = "wasm32"))]
pub mod shader_check;
