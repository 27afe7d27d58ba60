//! Every shader parses and validates with naga, and a broken one is reported with its file
//! and line.

use wgpu_fmnist::gpu::SHADERS;
use wgpu_fmnist::shader_check::{validate_shader, validate_wgsl, validate_wgsl_with};

#[test]
fn every_shader_validates_with_naga() {
    for shader in SHADERS {
        let module = validate_shader(shader).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !module.entry_points.is_empty(),
            "{} has no entry points",
            shader.path
        );
    }
}

#[test]
fn shader_error_names_file_and_line() {
    let source = "@compute @workgroup_size(1)\nfn main() {\n    let x: f32 = 1u;\n}\n";
    let err = validate_wgsl("shaders/broken.wgsl", source).unwrap_err();
    assert!(
        err.contains("shaders/broken.wgsl:3:"),
        "error does not point at file:line: {err}"
    );
}

#[test]
fn subgroup_operations_need_a_subgroup_shader() {
    // A kernel family marks the files that use subgroups; anywhere else they are an error,
    // so a subgroup operation cannot slip into a kernel that must run on every adapter.
    let source = "@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n\
                  @compute @workgroup_size(8)\n\
                  fn main(@builtin(local_invocation_index) i: u32) {\n    \
                  y[i] = subgroupBroadcast(y[i], 0u);\n}\n";
    assert!(validate_wgsl("shaders/plain.wgsl", source).is_err());
    validate_wgsl_with("shaders/sub.wgsl", source, true).unwrap_or_else(|e| panic!("{e}"));
    let marked: Vec<&str> = SHADERS
        .iter()
        .filter(|s| s.subgroups)
        .map(|s| s.path)
        .collect();
    assert_eq!(
        marked,
        [
            "shaders/matmul_subgroup.wgsl",
            "shaders/conv2d_subgroup.wgsl"
        ]
    );
}

#[test]
fn the_step_counter_is_read_only_except_where_it_advances() {
    // A read_write binding orders every later dispatch after the kernel on most drivers;
    // the counter is read by the data, dropout, augmentation and pool kernels and written,
    // through a binding named `counter_rw`, only where a step ends: the optimizer's update
    // and the loss (see kernels::optim).
    let mut seen = 0;
    for shader in SHADERS {
        let module = validate_shader(shader).unwrap();
        for (_, var) in module.global_variables.iter() {
            let name = var.name.as_deref().unwrap_or("");
            if let naga::AddressSpace::Storage { access } = var.space {
                let writable = access.contains(naga::StorageAccess::STORE);
                if name == "counter" {
                    seen += 1;
                    assert!(!writable, "{}: `counter` is read_write", shader.path);
                }
                if name == "counter_rw" {
                    assert!(
                        ["optim", "softmax_xent"].contains(&shader.name),
                        "{}: a writable counter",
                        shader.path
                    );
                }
            }
        }
    }
    assert!(seen >= 4, "the counter is bound in {seen} shaders");
}
