//! What a memory access and an FMA cost on the adapter, per invocation (lane): the figures
//! behind README's "what makes kernels fast on lavapipe". Each kernel runs 64K invocations
//! of 64 operations of one kind; the time per operation per lane is the whole dispatch's
//! wall time over the operations.
//!
//! `cargo run --release --example lavapipe_costs`

use std::time::Instant;
use wgpu_fmnist::gpu::{AdapterRequest, Gpu};

const INVOCATIONS: u32 = 65536;
const OPS: u32 = 64;

const SOURCE: &str = r#"
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> u: array<vec4<f32>, 64>;
var<workgroup> shared_words: array<f32, 4096>;
const N: u32 = 65536u;
const OPS: u32 = 64u;

// Neighbouring lanes read neighbouring words.
@compute @workgroup_size(64) fn load_lane_contiguous(@builtin(global_invocation_id) g: vec3<u32>) {
    var s = 0.0;
    for (var i = 0u; i < OPS; i++) { s += a[i * N + g.x]; }
    out[g.x] = s;
}
// Each lane walks its own run of words.
@compute @workgroup_size(64) fn load_lane_strided(@builtin(global_invocation_id) g: vec3<u32>) {
    var s = 0.0;
    for (var i = 0u; i < OPS; i++) { s += a[g.x * OPS + i]; }
    out[g.x] = s;
}
@compute @workgroup_size(64) fn load_vec4(@builtin(global_invocation_id) g: vec3<u32>) {
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < OPS / 4u; i++) { s += a4[i * N + g.x]; }
    out[g.x] = s.x + s.y + s.z + s.w;
}
// Every lane reads the same address.
@compute @workgroup_size(64) fn load_same_address(@builtin(global_invocation_id) g: vec3<u32>) {
    var s = 0.0;
    for (var i = 0u; i < OPS; i++) { s += a[i]; }
    out[g.x] = s;
}
@compute @workgroup_size(64) fn load_workgroup_memory(@builtin(global_invocation_id) g: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    shared_words[l] = a[g.x];
    workgroupBarrier();
    var s = 0.0;
    for (var i = 0u; i < OPS; i++) { s += shared_words[(l + i * 64u) % 4096u]; }
    out[g.x] = s;
}
// A vec4 of a uniform buffer at a dynamically uniform index (4 floats per operation).
@compute @workgroup_size(64) fn load_uniform_vec4(@builtin(global_invocation_id) g: vec3<u32>) {
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < OPS; i++) { s += u[i]; }
    out[g.x] = s.x + s.y + s.z + s.w;
}
@compute @workgroup_size(64) fn fma_one_chain(@builtin(global_invocation_id) g: vec3<u32>) {
    var s = f32(g.x);
    for (var i = 0u; i < OPS; i++) { s = fma(s, 1.0001, 0.5); }
    out[g.x] = s;
}
// 16 FMAs per iteration in 4 independent chains.
@compute @workgroup_size(64) fn fma_four_chains(@builtin(global_invocation_id) g: vec3<u32>) {
    var s = vec4<f32>(f32(g.x)) + vec4<f32>(0.0, 1.0, 2.0, 3.0);
    for (var i = 0u; i < OPS; i++) {
        s = fma(s, vec4<f32>(1.0001), vec4<f32>(0.5));
        s = fma(s, vec4<f32>(1.0001), vec4<f32>(0.5));
        s = fma(s, vec4<f32>(1.0001), vec4<f32>(0.5));
        s = fma(s, vec4<f32>(1.0001), vec4<f32>(0.5));
    }
    out[g.x] = s.x + s.y + s.z + s.w;
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::new(&AdapterRequest::default())?;
    println!("{}", gpu.describe());
    let device = &gpu.device;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("lavapipe_costs"),
        source: wgpu::ShaderSource::Wgsl(SOURCE.into()),
    });
    let buffer = |label: &str, bytes: u64, usage: wgpu::BufferUsages| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage,
            mapped_at_creation: false,
        })
    };
    let storage = wgpu::BufferUsages::STORAGE;
    let a = buffer("a", 4 * (INVOCATIONS * OPS) as u64, storage);
    let out = buffer("out", 4 * INVOCATIONS as u64, storage);
    let u = buffer("u", 16 * 64, wgpu::BufferUsages::UNIFORM);
    // (entry point, the bindings it uses, operations per lane)
    let kernels: [(&str, &[u32], u32); 8] = [
        ("load_lane_contiguous", &[0, 2], OPS),
        ("load_lane_strided", &[0, 2], OPS),
        ("load_vec4", &[1, 2], OPS / 4),
        ("load_same_address", &[0, 2], OPS),
        ("load_workgroup_memory", &[0, 2], OPS),
        ("load_uniform_vec4", &[2, 3], OPS),
        ("fma_one_chain", &[2], OPS),
        ("fma_four_chains", &[2], OPS * 16),
    ];
    for (entry, bindings, ops) in kernels {
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .map(|&b| wgpu::BindGroupEntry {
                binding: b,
                resource: [&a, &a, &out, &u][b as usize].as_entire_binding(),
            })
            .collect();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let run = |reps: u32| -> Result<(), wgpu::PollError> {
            let mut encoder = device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                for _ in 0..reps {
                    pass.dispatch_workgroups(INVOCATIONS / 64, 1, 1);
                }
            }
            gpu.queue.submit([encoder.finish()]);
            device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ())
        };
        run(1)?;
        let start = Instant::now();
        run(5)?;
        let seconds = start.elapsed().as_secs_f64() / 5.0;
        let lane_ops = INVOCATIONS as f64 * ops as f64;
        println!(
            "{entry:22} {:8.3} ms per dispatch  {:6.3} ns per operation per lane",
            seconds * 1e3,
            seconds * 1e9 / lane_ops
        );
    }
    gpu.sync()?;
    Ok(())
}
