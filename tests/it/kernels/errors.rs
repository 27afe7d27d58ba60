//! Bad requests give typed errors that name the kernel or buffer, never a lost device.

use crate::common::*;
use wgpu_fmnist::gpu::{GpuError, MATMUL};
use wgpu_fmnist::kernels::{conv2d, matmul::*};

#[test]
fn buffer_larger_than_the_adapter_allows_is_an_error() {
    let limit = gpu().limits.max_storage_buffer_binding_size as usize;
    let err = gpu()
        .zeros("activations", limit / 4 + 1)
        .err()
        .expect("an oversize buffer must be refused");
    match &err {
        GpuError::BufferTooLarge {
            label,
            size,
            limit: l,
            ..
        } => {
            assert_eq!(label, "activations");
            assert!(*size > *l);
        }
        other => panic!("expected BufferTooLarge, got {other}"),
    }
    assert!(
        err.to_string().contains("--batch-size"),
        "the error should say what to change: {err}"
    );
    // The device still works afterwards.
    let t = upload("x", &[1.0, 2.0]);
    assert_eq!(read(&t), vec![1.0, 2.0]);
}

#[test]
fn shape_mismatch_names_kernel_and_tensor() {
    let s = LinearShape {
        batch: 2,
        inputs: 3,
        outputs: 4,
    };
    let (x, w, b, y) = (zeros("x", 6), zeros("w", 11), zeros("b", 4), zeros("y", 8));
    let err = linear_forward(gpu(), s, &x, &w, &b, &y)
        .err()
        .expect("wrong weight size must be refused");
    let msg = err.to_string();
    assert!(msg.contains("'w'") || msg.contains("tensor 'w'"), "{msg}");
    assert!(
        msg.contains("linear_forward") && msg.contains("in=3") && msg.contains("12"),
        "{msg}"
    );
}

#[test]
fn impossible_convolution_is_an_error() {
    let s = conv2d::Conv2dShape {
        n: 1,
        ci: 1,
        h: 2,
        w: 2,
        co: 1,
        kh: 5,
        kw: 5,
        stride: 1,
        pad: 0,
    };
    let (x, w, b, y) = (zeros("x", 4), zeros("w", 25), zeros("b", 1), zeros("y", 1));
    let err = conv2d::conv2d_forward(gpu(), s, &x, &w, &b, &y)
        .err()
        .expect("a 5x5 kernel on 2x2 must be refused");
    assert!(err.to_string().contains("invalid convolution"), "{err}");
}

#[test]
fn wgpu_validation_error_becomes_a_typed_error_naming_the_kernel() {
    // Bind a uniform buffer where the kernel expects storage: wgpu rejects the bind group.
    let t = zeros("a", 16);
    let uniform = gpu().uniform("not storage", &[0u32; 8]);
    let err = gpu()
        .dispatch(
            &MATMUL,
            "matmul",
            "M=2 N=2 K=2",
            &[(0, &uniform), (1, &uniform), (2, &t), (4, &t)],
            [1, 1, 1],
        )
        .err()
        .expect("a wrong binding must be refused");
    match &err {
        GpuError::Validation { context, .. } => {
            assert!(context.contains("matmul::matmul"), "{context}")
        }
        other => panic!("expected a validation error, got {other}"),
    }
    // The device still works afterwards.
    assert_eq!(read(&upload("x", &[3.0])), vec![3.0]);
}

#[test]
fn no_matching_adapter_is_a_clear_error() {
    use wgpu_fmnist::gpu::{AdapterRequest, Gpu};
    let req = AdapterRequest {
        adapter: Some("no-such-gpu-xyz".into()),
        ..Default::default()
    };
    let err = Gpu::new(&req).err().expect("no adapter is called that");
    let msg = err.to_string();
    assert!(matches!(err, GpuError::NoAdapter { .. }), "{msg}");
    assert!(
        msg.contains("--adapter 'no-such-gpu-xyz'")
            && msg.contains("mesa-vulkan-drivers")
            && msg.contains("adapters found"),
        "{msg}"
    );
    // From the CLI: exit code 3.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgpu-fmnist"))
        .args(["probe", "--adapter", "no-such-gpu-xyz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn a_layer_larger_than_a_binding_is_the_model_s_fault() {
    // The largest linear layer on 784 inputs that still exceeds this adapter's binding
    // (spec limit permitting): the error names the layer and says nothing about the batch.
    use wgpu_fmnist::model::{ModelSpec, MAX_TENSOR_ELEMENTS};
    use wgpu_fmnist::net::check_model;
    let limit = gpu().limits.max_storage_buffer_binding_size;
    let out = (limit / 4 / 784 + 1) as usize;
    if out * 784 > MAX_TENSOR_ELEMENTS {
        eprintln!("skipped: this adapter's binding ({limit} bytes) holds any layer a spec allows");
        return;
    }
    let spec = ModelSpec::parse(&format!("flatten linear({out}) linear(10)")).unwrap();
    let err = check_model(gpu(), &spec).unwrap_err();
    assert!(matches!(err, GpuError::ModelTooLarge { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("layer 1 `linear({out})`")) && !msg.contains("batch"),
        "{msg}"
    );
}
