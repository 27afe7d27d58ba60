// Batch normalisation over NCHW (hw = H*W) or NC (hw = 1), PyTorch BatchNorm2d/1d semantics:
// training normalises with the biased batch variance and moves the running statistics with
// the unbiased one (momentum, eps from Params); evaluation uses the running statistics.
//
// Outputs: y, dx are overwritten; dgamma, dbeta are written (not accumulated);
// save_mean/save_invstd hold the batch statistics the backward pass needs;
// running_mean/running_var are updated in place.
// Per-channel reductions use one workgroup per channel and a tree in workgroup memory,
// so results do not depend on scheduling.

struct Params {
    n: u32,
    c: u32,
    hw: u32,
    _pad0: u32,
    momentum: f32,
    eps: f32,
    _pad1: f32,
    _pad2: f32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> save_mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> save_invstd: array<f32>;
@group(0) @binding(7) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(8) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(9) var<storage, read> dy: array<f32>;
@group(0) @binding(10) var<storage, read_write> dx: array<f32>;
// vec4 views of the same tensors for the elementwise passes (one vec4 per invocation;
// tensors are padded to a multiple of 4 elements).
@group(0) @binding(13) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(16) var<storage, read_write> dx4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(12) var<storage, read_write> dbeta: array<f32>;

var<workgroup> red_a: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// Sums red_a and red_b over the workgroup; every invocation must call it.
fn reduce_pair(lid: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            red_a[lid] += red_a[lid + stride];
            red_b[lid] += red_b[lid + stride];
        }
        workgroupBarrier();
    }
}

// Batch mean and 1/sqrt(biased var + eps) per channel; running stats updated.
// One pass over the data: sums of d = x - k and d^2, shifted by k = the channel's first
// element so that the variance does not cancel catastrophically. Each invocation walks whole
// (n, c) planes with a stride of WG, so no per-element division is needed.
@compute @workgroup_size(WG)
fn batchnorm_stats(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
    let count = p.n * p.hw;
    let k = x[ch * p.hw];
    var s = 0.0;
    var q = 0.0;
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + ch) * p.hw;
        for (var j = lid.x; j < p.hw; j += WG) {
            let d = x[base + j] - k;
            s += d;
            q += d * d;
        }
    }
    red_a[lid.x] = s;
    red_b[lid.x] = q;
    reduce_pair(lid.x);
    let shifted_mean = red_a[0] / f32(count);
    let mean = k + shifted_mean;
    let sq = max(red_b[0] - red_a[0] * shifted_mean, 0.0);
    if (lid.x == 0u) {
        let var_biased = sq / f32(count);
        save_mean[ch] = mean;
        save_invstd[ch] = 1.0 / sqrt(var_biased + p.eps);
        let var_unbiased = select(var_biased, sq / f32(count - 1u), count > 1u);
        running_mean[ch] = (1.0 - p.momentum) * running_mean[ch] + p.momentum * mean;
        running_var[ch] = (1.0 - p.momentum) * running_var[ch] + p.momentum * var_unbiased;
    }
}

// Channels of the 4 elements starting at element e (they may straddle channels).
fn channels(e: u32) -> vec4<u32> {
    return vec4<u32>((e / p.hw) % p.c, ((e + 1u) / p.hw) % p.c, ((e + 2u) / p.hw) % p.c, ((e + 3u) / p.hw) % p.c);
}

// Per-channel values for 4 elements (WGSL cannot pass storage pointers to functions).
fn gamma4(c: vec4<u32>) -> vec4<f32> { return vec4<f32>(gamma[c.x], gamma[c.y], gamma[c.z], gamma[c.w]); }
fn beta4(c: vec4<u32>) -> vec4<f32> { return vec4<f32>(beta[c.x], beta[c.y], beta[c.z], beta[c.w]); }
fn mean4(c: vec4<u32>) -> vec4<f32> { return vec4<f32>(save_mean[c.x], save_mean[c.y], save_mean[c.z], save_mean[c.w]); }
fn invstd4(c: vec4<u32>) -> vec4<f32> { return vec4<f32>(save_invstd[c.x], save_invstd[c.y], save_invstd[c.z], save_invstd[c.w]); }
fn rmean4(c: vec4<u32>) -> vec4<f32> { return vec4<f32>(running_mean[c.x], running_mean[c.y], running_mean[c.z], running_mean[c.w]); }
fn rvar4(c: vec4<u32>) -> vec4<f32> { return vec4<f32>(running_var[c.x], running_var[c.y], running_var[c.z], running_var[c.w]); }
fn dgamma4(c: vec4<u32>) -> vec4<f32> { return vec4<f32>(dgamma[c.x], dgamma[c.y], dgamma[c.z], dgamma[c.w]); }
fn dbeta4(c: vec4<u32>) -> vec4<f32> { return vec4<f32>(dbeta[c.x], dbeta[c.y], dbeta[c.z], dbeta[c.w]); }

// y = (x - mean) * invstd * gamma + beta with the batch statistics.
@compute @workgroup_size(WG)
fn batchnorm_forward_train(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i * 4u >= p.n * p.c * p.hw) { return; }
    let ch = channels(i * 4u);
    let scale = invstd4(ch) * gamma4(ch);
    y4[i] = (x4[i] - mean4(ch)) * scale + beta4(ch);
}

// y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
@compute @workgroup_size(WG)
fn batchnorm_forward_eval(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i * 4u >= p.n * p.c * p.hw) { return; }
    let ch = channels(i * 4u);
    let scale = gamma4(ch) / sqrt(rvar4(ch) + p.eps);
    y4[i] = (x4[i] - rmean4(ch)) * scale + beta4(ch);
}

// dgamma = sum(dy * xhat), dbeta = sum(dy) per channel.
@compute @workgroup_size(WG)
fn batchnorm_backward_reduce(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
    let mean = save_mean[ch];
    let invstd = save_invstd[ch];
    var sg = 0.0;
    var sb = 0.0;
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + ch) * p.hw;
        for (var j = lid.x; j < p.hw; j += WG) {
            let g = dy[base + j];
            sg += g * (x[base + j] - mean) * invstd;
            sb += g;
        }
    }
    red_a[lid.x] = sg;
    red_b[lid.x] = sb;
    reduce_pair(lid.x);
    if (lid.x == 0u) {
        dgamma[ch] = red_a[0];
        dbeta[ch] = red_b[0];
    }
}

// dx = gamma * invstd / M * (M * dy - dbeta - xhat * dgamma), M = N * HW.
// Needs batchnorm_backward_reduce first.
@compute @workgroup_size(WG)
fn batchnorm_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i * 4u >= p.n * p.c * p.hw) { return; }
    let ch = channels(i * 4u);
    let m = f32(p.n * p.hw);
    let invstd = invstd4(ch);
    let xhat = (x4[i] - mean4(ch)) * invstd;
    dx4[i] = gamma4(ch) * invstd / m * (m * dy4[i] - dbeta4(ch) - xhat * dgamma4(ch));
}
