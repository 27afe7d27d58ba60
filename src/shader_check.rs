//! Offline WGSL validation with naga (the same version wgpu uses), so a shader error is
//! reported as `shaders/<file>.wgsl:line:column` before any device is involved.

use crate::gpu::Shader;

/// Parses and validates `source`; the error text names `path` with line and column.
pub fn validate_wgsl(path: &str, source: &str) -> Result<naga::Module, String> {
    validate_wgsl_with(path, source, false)
}

/// As `validate_wgsl`, allowing subgroup operations in compute shaders when `subgroups`.
pub fn validate_wgsl_with(
    path: &str,
    source: &str,
    subgroups: bool,
) -> Result<naga::Module, String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| e.emit_to_string_with_path(source, path))?;
    let mut validator = if subgroups {
        let mut v = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::SUBGROUP,
        );
        v.subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all());
        v
    } else {
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
    };
    validator
        .validate(&module)
        .map_err(|e| e.emit_to_string_with_path(source, path))?;
    Ok(module)
}

/// Validates one of the program's shaders.
pub fn validate_shader(shader: &Shader) -> Result<naga::Module, String> {
    validate_wgsl_with(shader.path, shader.source, shader.subgroups)
}
