//! The WGSL sources compiled into the binary, a cache of compute pipelines, and `Dispatch`:
//! a pipeline with its bind group and workgroup counts, made once and recorded many times.

use super::{Bindable, Gpu, GpuError, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One kernel family's WGSL file.
#[derive(Debug)]
pub struct Shader {
    pub name: &'static str,
    /// Path relative to the crate root, for error messages.
    pub path: &'static str,
    pub source: &'static str,
    /// Uses subgroup operations: only compiled on devices with the SUBGROUP feature.
    pub subgroups: bool,
}

macro_rules! shader {
    ($name:literal) => {
        Shader {
            name: $name,
            path: concat!("shaders/", $name, ".wgsl"),
            source: include_str!(concat!("../../shaders/", $name, ".wgsl")),
            subgroups: false,
        }
    };
    // A variant that needs the SUBGROUP feature; the shared lane broadcasts of
    // shaders/subgroup.wgsl are appended (as hash.wgsl is below).
    ($name:literal, subgroups) => {
        Shader {
            name: $name,
            path: concat!("shaders/", $name, ".wgsl"),
            source: concat!(
                include_str!(concat!("../../shaders/", $name, ".wgsl")),
                include_str!("../../shaders/subgroup.wgsl")
            ),
            subgroups: true,
        }
    };
    // A subgroup variant with one more shared file appended.
    ($name:literal, subgroups + $extra:literal) => {
        Shader {
            name: $name,
            path: concat!("shaders/", $name, ".wgsl"),
            source: concat!(
                include_str!(concat!("../../shaders/", $name, ".wgsl")),
                include_str!("../../shaders/subgroup.wgsl"),
                include_str!(concat!("../../shaders/", $extra, ".wgsl"))
            ),
            subgroups: true,
        }
    };
    // A family that uses the shared hash: shaders/hash.wgsl is appended (WGSL has no
    // include; appending keeps the file's own line numbers in error messages).
    ($name:literal + hash) => {
        shader!($name + "hash")
    };
    // A family with a shared file appended.
    ($name:literal + $extra:literal) => {
        Shader {
            name: $name,
            path: concat!("shaders/", $name, ".wgsl"),
            source: concat!(
                include_str!(concat!("../../shaders/", $name, ".wgsl")),
                include_str!(concat!("../../shaders/", $extra, ".wgsl"))
            ),
            subgroups: false,
        }
    };
}

pub const ELEMENTWISE: Shader = shader!("elementwise");
pub const MATMUL: Shader = shader!("matmul" + "matmul_row_sums");
pub const MATMUL_SUBGROUP: Shader = shader!("matmul_subgroup", subgroups + "matmul_row_sums");
pub const CONV2D: Shader = shader!("conv2d");
pub const CONV2D_SUBGROUP: Shader = shader!("conv2d_subgroup", subgroups);
pub const CONV2D_TILED: Shader = shader!("conv2d_tiled");
pub const CONV2D_POOL: Shader = shader!("conv2d_pool");
pub const BATCHNORM: Shader = shader!("batchnorm");
pub const BATCHNORM_PLANES: Shader = shader!("batchnorm_planes");
pub const POOL: Shader = shader!("pool" + hash);
pub const DROPOUT: Shader = shader!("dropout" + hash);
pub const SOFTMAX_XENT: Shader = shader!("softmax_xent");
pub const OPTIM: Shader = shader!("optim");
pub const DATA: Shader = shader!("data" + hash);
pub const AUGMENT: Shader = shader!("augment" + hash);

/// Every shader of the program (the naga test walks this list).
pub const SHADERS: &[&Shader] = &[
    &ELEMENTWISE,
    &MATMUL,
    &MATMUL_SUBGROUP,
    &CONV2D,
    &CONV2D_SUBGROUP,
    &CONV2D_TILED,
    &CONV2D_POOL,
    &BATCHNORM,
    &BATCHNORM_PLANES,
    &POOL,
    &DROPOUT,
    &SOFTMAX_XENT,
    &OPTIM,
    &DATA,
    &AUGMENT,
];

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    /// Text replacements in a family's WGSL (`Gpu::patch_shader`): how the tests break a
    /// kernel on purpose to see `check` catch it.
    patches: Mutex<HashMap<&'static str, (String, String)>>,
    pipelines: Mutex<HashMap<(&'static str, String), Arc<wgpu::ComputePipeline>>>,
}

/// A ready-to-record kernel launch.
pub struct Dispatch {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    label: String,
    /// Floating-point operations and bytes moved per call, for the bench's GFLOP/s and GB/s.
    flops: f64,
    bytes: f64,
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// `family::entry shape`, for errors and the bench.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Workgroup counts along x, y, z.
    pub fn workgroups(&self) -> [u32; 3] {
        self.workgroups
    }

    /// Records the work one call does (set by the kernel wrappers).
    pub fn with_cost(mut self, flops: f64, bytes: f64) -> Self {
        self.flops = flops;
        self.bytes = bytes;
        self
    }

    pub fn flops(&self) -> f64 {
        self.flops
    }

    pub fn bytes(&self) -> f64 {
        self.bytes
    }
}

impl Gpu {
    fn module(&self, shader: &'static Shader) -> Result<Arc<wgpu::ShaderModule>> {
        let mut modules = self
            .pipelines
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(shader.name) {
            return Ok(m.clone());
        }
        if shader.subgroups && !self.features.contains(wgpu::Features::SUBGROUP) {
            return Err(GpuError::Validation {
                context: format!("compiling {}", shader.path),
                message: "the device has no SUBGROUP feature".into(),
            });
        }
        let source = match self
            .pipelines
            .patches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(shader.name)
        {
            Some((from, to)) => shader.source.replace(from.as_str(), to).into(),
            None => std::borrow::Cow::Borrowed(shader.source),
        };
        let module = self.scoped(
            || format!("compiling {}", shader.path),
            || {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader.path),
                        source: wgpu::ShaderSource::Wgsl(source),
                    })
            },
        )?;
        let module = Arc::new(module);
        modules.insert(shader.name, module.clone());
        Ok(module)
    }

    /// Compiles `shader` with every `from` in its source replaced by `to`, from now on
    /// (before its first use): a deliberately broken kernel, for testing `check`. Returns
    /// false if `from` does not occur in the source.
    pub fn patch_shader(&self, shader: &'static Shader, from: &str, to: &str) -> bool {
        if !shader.source.contains(from) {
            return false;
        }
        self.pipelines
            .patches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shader.name, (from.into(), to.into()));
        true
    }

    /// The pipeline for `entry` in `shader`, compiled on first use.
    pub fn pipeline(
        &self,
        shader: &'static Shader,
        entry: &str,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = (shader.name, entry.to_string());
        if let Some(p) = self
            .pipelines
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let module = self.module(shader)?;
        let pipeline = self.scoped(
            || format!("creating pipeline {}::{entry}", shader.path),
            || {
                self.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(entry),
                        layout: None,
                        module: &module,
                        entry_point: Some(entry),
                        compilation_options: Default::default(),
                        cache: None,
                    })
            },
        )?;
        let pipeline = Arc::new(pipeline);
        self.pipelines
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Builds a launch of `shader::entry` over `workgroups` with `bindings` (binding index,
    /// buffer) in group 0. `shape` describes the problem for error messages.
    pub fn dispatch(
        &self,
        shader: &'static Shader,
        entry: &str,
        shape: &str,
        bindings: &[(u32, &dyn Bindable)],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let resources: Vec<_> = bindings
            .iter()
            .map(|(binding, buffer)| (*binding, buffer.resource()))
            .collect();
        self.dispatch_resources(shader, entry, shape, resources, workgroups)
    }

    /// `dispatch` with any binding resources (textures and samplers as well as buffers).
    pub fn dispatch_resources(
        &self,
        shader: &'static Shader,
        entry: &str,
        shape: &str,
        bindings: Vec<(u32, wgpu::BindingResource<'_>)>,
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let label = format!("{}::{entry} {shape}", shader.name);
        let limit = self.limits.max_compute_workgroups_per_dimension;
        if let Some(&g) = workgroups.iter().find(|&&g| g > limit) {
            return Err(GpuError::DispatchTooLarge {
                kernel: label,
                groups: g as u64,
                limit,
            });
        }
        let pipeline = self.pipeline(shader, entry)?;
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .into_iter()
            .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource })
            .collect();
        let bind_group = self.scoped(
            || format!("binding resources for {label}"),
            || {
                self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&label),
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                })
            },
        )?;
        Ok(Dispatch {
            pipeline,
            bind_group,
            workgroups,
            label,
            flops: 0.0,
            bytes: 0.0,
        })
    }
}
