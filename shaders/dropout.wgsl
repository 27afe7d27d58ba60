// Inverted dropout: y = x / (1 - p) where kept, 0 where dropped (PyTorch nn.Dropout in
// training mode). The mask is never stored: it is a counter-based hash of
// (seed, step, layer, element), recomputed identically by the backward pass. The step comes
// from the GPU-side step counter (counter[0]) so many steps can be recorded in one submission.
// Both entry points overwrite their output.

struct Params {
    n: u32,
    seed: u32,
    layer: u32,
    _pad0: u32,
    p: f32,
    scale: f32,
    _pad1: f32,
    _pad2: f32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
// One vec4 per invocation (tensors are padded to a multiple of 4 elements).
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> counter: array<u32>;
@group(0) @binding(4) var<storage, read> dy: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dx: array<vec4<f32>>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// Uniform in [0, 1) with 24 bits, identical to `kernels::dropout::uniform` on the CPU.
fn random_unit(step: u32, i: u32) -> f32 {
    let h = hash(i ^ hash(p.layer ^ hash(step ^ hash(p.seed))));
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

fn keep4(step: u32, e: u32) -> vec4<bool> {
    return vec4<bool>(
        random_unit(step, e) >= p.p,
        random_unit(step, e + 1u) >= p.p,
        random_unit(step, e + 2u) >= p.p,
        random_unit(step, e + 3u) >= p.p,
    );
}

@compute @workgroup_size(WG)
fn dropout_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i * 4u >= p.n) { return; }
    y[i] = select(vec4<f32>(0.0), x[i] * p.scale, keep4(counter[0], i * 4u));
}

@compute @workgroup_size(WG)
fn dropout_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i * 4u >= p.n) { return; }
    dx[i] = select(vec4<f32>(0.0), dy[i] * p.scale, keep4(counter[0], i * 4u));
}
