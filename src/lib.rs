//! wgpu-fmnist: Fashion-MNIST training and inference on the GPU through hand-written WGSL.
//!
//! `gpu` owns the device and buffers, `kernels` holds one module per WGSL kernel family with
//! its CPU reference beside the dispatch wrapper.

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

pub mod bench;
pub mod check;
pub mod checkpoint;
pub mod data;
pub mod fsutil;
pub mod gpu;
pub mod infer;
pub mod kernels;
pub mod model;
pub mod net;
pub mod reference;
pub mod render;
pub mod report;
pub mod rng;
pub mod shader_check;
pub mod train;
