//! Every shader parses and validates with naga, and a broken one is reported with its file
//! and line.

use wgpu_fmnist::gpu::SHADERS;
use wgpu_fmnist::shader_check::{validate_shader, validate_wgsl};

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
