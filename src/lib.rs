//! wgpu-fmnist: Fashion-MNIST training and inference on the GPU through hand-written WGSL.
//!
//! `gpu` owns the device and buffers, `kernels` holds one module per WGSL kernel family with
//! its CPU reference beside the dispatch wrapper.

pub mod bench;
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
pub mod rng;
pub mod shader_check;
pub mod train;
