// Batch normalisation over NCHW (hw = H*W) or NC (hw = 1), PyTorch BatchNorm2d/1d semantics:
// training normalises with the biased batch variance and moves the running statistics with
// the unbiased one (momentum, eps from Params); evaluation uses the running statistics.
//
// Outputs: y, dx are overwritten; dgamma, dbeta are written (not accumulated);
// save_stats holds the batch statistics the backward pass needs: the mean at [c], and
// 1/sqrt(biased var + eps) at [C + c]; running_mean/running_var are updated in place.
// Per-channel reductions use a tree in workgroup memory, so results do not depend on
// scheduling.

struct Params {
    n: u32,
    c: u32,
    hw: u32,
    // Backward: dx = 0 where x <= this: 0 when a ReLU (fused into the step before) produced
    // x (its backward, done here as dx is stored), -inf otherwise (never). A compare, not a
    // branch on a uniform: cheaper on lavapipe.
    mask_below: f32,
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
@group(0) @binding(5) var<storage, read_write> save_stats: array<f32>;
@group(0) @binding(7) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(8) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(9) var<storage, read> dy: array<f32>;
@group(0) @binding(10) var<storage, read_write> dx: array<f32>;
// vec4 views of the same tensors for the `4` entry points.
@group(0) @binding(13) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(16) var<storage, read_write> dx4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(12) var<storage, read_write> dbeta: array<f32>;

var<workgroup> red_a: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;

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

// Every pass runs one workgroup per channel (workgroup_id.x), whose invocations walk the
// channel's (image, channel) planes with a stride of WG. So the channel's parameters are
// loaded once per invocation and no index is divided: integer division is scalarised on
// CPU adapters (~100+ cycles per 8 lanes), which made a flat, per-element version 5x
// slower. The `4` entry points read vec4s and need hw % 4 == 0 (planes start on a vec4).

// Sums of d = x - k and d^2 over the channel, shifted by k = the channel's first element
// so that the variance does not cancel catastrophically.
fn finish_stats(lid: u32, ch: u32, k: f32, s: f32, q: f32) {
    red_a[lid] = s;
    red_b[lid] = q;
    reduce_pair(lid);
    let count = p.n * p.hw;
    let shifted_mean = red_a[0] / f32(count);
    let mean = k + shifted_mean;
    let sq = max(red_b[0] - red_a[0] * shifted_mean, 0.0);
    if (lid == 0u) {
        let var_biased = sq / f32(count);
        save_stats[ch] = mean;
        save_stats[p.c + ch] = 1.0 / sqrt(var_biased + p.eps);
        let var_unbiased = select(var_biased, sq / f32(count - 1u), count > 1u);
        running_mean[ch] = (1.0 - p.momentum) * running_mean[ch] + p.momentum * mean;
        running_var[ch] = (1.0 - p.momentum) * running_var[ch] + p.momentum * var_unbiased;
    }
}

// Batch mean and 1/sqrt(biased var + eps) per channel, in one pass; running stats updated.
@compute @workgroup_size(WG)
fn batchnorm_stats(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
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
    finish_stats(lid.x, ch, k, s, q);
}

@compute @workgroup_size(WG)
fn batchnorm_stats4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
    let k = x[ch * p.hw];
    let hw4 = p.hw / 4u;
    var s = vec4<f32>(0.0);
    var q = vec4<f32>(0.0);
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + ch) * hw4;
        for (var j = lid.x; j < hw4; j += WG) {
            let d = x4[base + j] - k;
            s += d;
            q += d * d;
        }
    }
    finish_stats(lid.x, ch, k, s.x + s.y + s.z + s.w, q.x + q.y + q.z + q.w);
}

// y = (x - mean) * invstd * gamma + beta with the batch statistics.
@compute @workgroup_size(WG)
fn batchnorm_forward_train(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
    let mean = save_stats[ch];
    let scale = save_stats[p.c + ch] * gamma[ch];
    let shift = beta[ch];
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + ch) * p.hw;
        for (var j = lid.x; j < p.hw; j += WG) {
            y[base + j] = (x[base + j] - mean) * scale + shift;
        }
    }
}

@compute @workgroup_size(WG)
fn batchnorm_forward_train4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
    let mean = save_stats[ch];
    let scale = save_stats[p.c + ch] * gamma[ch];
    let shift = beta[ch];
    let hw4 = p.hw / 4u;
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + ch) * hw4;
        for (var j = lid.x; j < hw4; j += WG) {
            y4[base + j] = (x4[base + j] - mean) * scale + shift;
        }
    }
}

// y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
@compute @workgroup_size(WG)
fn batchnorm_forward_eval(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
    let mean = running_mean[ch];
    let scale = gamma[ch] / sqrt(running_var[ch] + p.eps);
    let shift = beta[ch];
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + ch) * p.hw;
        for (var j = lid.x; j < p.hw; j += WG) {
            y[base + j] = (x[base + j] - mean) * scale + shift;
        }
    }
}

@compute @workgroup_size(WG)
fn batchnorm_forward_eval4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
    let mean = running_mean[ch];
    let scale = gamma[ch] / sqrt(running_var[ch] + p.eps);
    let shift = beta[ch];
    let hw4 = p.hw / 4u;
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + ch) * hw4;
        for (var j = lid.x; j < hw4; j += WG) {
            y4[base + j] = (x4[base + j] - mean) * scale + shift;
        }
    }
}

// dgamma = sum(dy * xhat), dbeta = sum(dy) per channel.
fn finish_reduce(lid: u32, ch: u32, sg: f32, sb: f32) {
    red_a[lid] = sg;
    red_b[lid] = sb;
    reduce_pair(lid);
    if (lid == 0u) {
        dgamma[ch] = red_a[0];
        dbeta[ch] = red_b[0];
    }
}

@compute @workgroup_size(WG)
fn batchnorm_backward_reduce(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
    let mean = save_stats[ch];
    let invstd = save_stats[p.c + ch];
    var sg = 0.0;
    var sb = 0.0;
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + ch) * p.hw;
        for (var j = lid.x; j < p.hw; j += WG) {
            let g = dy[base + j];
            sg += g * (x[base + j] - mean);
            sb += g;
        }
    }
    finish_reduce(lid.x, ch, sg * invstd, sb);
}

@compute @workgroup_size(WG)
fn batchnorm_backward_reduce4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
    let mean = save_stats[ch];
    let invstd = save_stats[p.c + ch];
    let hw4 = p.hw / 4u;
    var sg = vec4<f32>(0.0);
    var sb = vec4<f32>(0.0);
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + ch) * hw4;
        for (var j = lid.x; j < hw4; j += WG) {
            let g = dy4[base + j];
            sg += g * (x4[base + j] - mean);
            sb += g;
        }
    }
    finish_reduce(lid.x, ch, (sg.x + sg.y + sg.z + sg.w) * invstd, sb.x + sb.y + sb.z + sb.w);
}

// dx = gamma * invstd / M * (M * dy - dbeta - xhat * dgamma), M = N * HW.
// Needs batchnorm_backward_reduce first.
@compute @workgroup_size(WG)
fn batchnorm_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
    let m = f32(p.n * p.hw);
    let mean = save_stats[ch];
    let invstd = save_stats[p.c + ch];
    let k = gamma[ch] * invstd / m;
    let db = dbeta[ch];
    let dg = dgamma[ch] * invstd;
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + ch) * p.hw;
        for (var j = lid.x; j < p.hw; j += WG) {
            let xv = x[base + j];
            let g = k * (m * dy[base + j] - db - (xv - mean) * dg);
            dx[base + j] = select(g, 0.0, xv <= p.mask_below);
        }
    }
}

@compute @workgroup_size(WG)
fn batchnorm_backward4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
    let m = f32(p.n * p.hw);
    let mean = save_stats[ch];
    let invstd = save_stats[p.c + ch];
    let k = gamma[ch] * invstd / m;
    let db = dbeta[ch];
    let dg = dgamma[ch] * invstd;
    let hw4 = p.hw / 4u;
    for (var b = 0u; b < p.n; b++) {
        let base = (b * p.c + ch) * hw4;
        for (var j = lid.x; j < hw4; j += WG) {
            let xv = x4[base + j];
            let g = k * (m * dy4[base + j] - db - (xv - mean) * dg);
            dx4[base + j] = select(g, vec4<f32>(0.0), xv <= vec4<f32>(p.mask_below));
        }
    }
}
