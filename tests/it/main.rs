//! The integration tests, one binary with a module per area (one link instead of a dozen on
//! a 2-core machine). `cargo test --locked` runs them all; `cargo test --test it kernels::`
//! one area. Every test runs on the adapter the machine has (lavapipe without a GPU;
//! `VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json` for SwiftShader).

mod common;

mod check;
mod checkpoint;
mod data;
mod ema;
mod fixture;
mod kernels;
mod layout;
mod memory;
mod model;
mod report;
mod shaders;
mod step;
mod target;
mod train;
mod tta;
mod web;
