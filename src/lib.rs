//! wgpu-fmnist: Fashion-MNIST training and inference on the GPU through hand-written WGSL.
//!
//! `gpu` owns the device and buffers, `kernels` holds one module per WGSL kernel family with
//! its CPU reference beside the dispatch wrapper.

pub mod gpu;
pub mod kernels;
pub mod rng;
pub mod shader_check;
