// Elementwise activations, and the two steps of averaging two views' logits. ReLU forward writes y; backward overwrites dx (activation
// gradients are overwritten, never accumulated). Each invocation handles one vec4: on
// lavapipe the per-invocation cost dominates simple kernels, and tensors are padded to a
// multiple of 4 elements so the last vec4 is always in bounds.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> dy: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dx: array<vec4<f32>>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i * 4u >= p.n) { return; }
    y[i] = max(x[i], vec4<f32>(0.0));
}

// Gradient passes where the forward input was positive (PyTorch: where the output > 0).
@compute @workgroup_size(WG)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i * 4u >= p.n) { return; }
    dx[i] = select(vec4<f32>(0.0), dy[i], x[i] > vec4<f32>(0.0));
}

// Test-time augmentation: y = x keeps the first view's logits; then y = (y + x) / 2 with x
// the second view's.
@compute @workgroup_size(WG)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i * 4u >= p.n) { return; }
    y[i] = x[i];
}

@compute @workgroup_size(WG)
fn average_into(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i * 4u >= p.n) { return; }
    y[i] = (y[i] + x[i]) * 0.5;
}
