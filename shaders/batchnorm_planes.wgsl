// Batch normalisation for hardware GPUs (the `tiled` variant of src/kernels/select.rs):
// the same tensors, results and bindings as batchnorm.wgsl, with one workgroup per
// (image, channel) plane instead of one per channel, so the grid grows with the batch
// (vgg at batch 64: 4,096 workgroups where batchnorm.wgsl has 64) and the per-channel
// reductions take two levels:
//   1. each plane's workgroup sums its plane (a tree over its invocations) into
//      plane_sums[n * C + c] (and [N * C + n * C + c] for the second sum);
//   2. the channel's N plane sums are added by a workgroup's invocations, each taking
//      images lane, lane + WG, ... in order, then the same tree: a fixed order, so results
//      do not depend on scheduling (they differ from batchnorm.wgsl's only in rounding).
// Level 2 runs where its result is needed: batchnorm_stats_combine (one invocation per
// channel) after the statistics' sums; inside every plane's workgroup of the backward,
// which also writes dgamma/dbeta from image 0's workgroup.

struct Params {
    n: u32,
    c: u32,
    hw: u32,
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
@group(0) @binding(11) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(12) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(17) var<storage, read_write> plane_sums: array<f32>;

var<workgroup> red_a: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;

// The plane of this workgroup (grids past 65,535 planes continue along y), or past the end.
fn plane_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Sums a and b over the workgroup in a fixed tree; every invocation must call it (with a
// workgroup-uniform control flow) and every one gets the sums.
fn reduce_pair(lid: u32, a: f32, b: f32) -> vec2<f32> {
    red_a[lid] = a;
    red_b[lid] = b;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            red_a[lid] += red_a[lid + stride];
            red_b[lid] += red_b[lid + stride];
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(red_a[0], red_b[0]);
    workgroupBarrier();
    return r;
}

// Level 2 for channel ch in a whole workgroup: the N plane sums of both kinds.
fn channel_sums(lid: u32, ch: u32) -> vec2<f32> {
    let planes = p.n * p.c;
    var a = 0.0;
    var b = 0.0;
    for (var n = lid; n < p.n; n += WG) {
        a += plane_sums[n * p.c + ch];
        b += plane_sums[planes + n * p.c + ch];
    }
    return reduce_pair(lid, a, b);
}

// Level 1 of the statistics: sums of d = x - k and d^2 over the plane, k the channel's first
// element (batchnorm.wgsl's shift against cancellation).
@compute @workgroup_size(WG)
fn batchnorm_plane_stats(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = plane_of(wid, nwg);
    if (i >= p.n * p.c) { return; }
    let k = x[(i % p.c) * p.hw];
    let base = i * p.hw;
    var s = 0.0;
    var q = 0.0;
    for (var j = lid.x; j < p.hw; j += WG) {
        let d = x[base + j] - k;
        s += d;
        q += d * d;
    }
    let r = reduce_pair(lid.x, s, q);
    if (lid.x == 0u) {
        plane_sums[i] = r.x;
        plane_sums[p.n * p.c + i] = r.y;
    }
}

// Level 2 of the statistics, one invocation per channel (images in order), then what
// batchnorm.wgsl's finish_stats stores.
@compute @workgroup_size(WG)
fn batchnorm_stats_combine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ch = gid.x;
    if (ch >= p.c) { return; }
    let planes = p.n * p.c;
    var s = 0.0;
    var q = 0.0;
    for (var n = 0u; n < p.n; n++) {
        s += plane_sums[n * p.c + ch];
        q += plane_sums[planes + n * p.c + ch];
    }
    let k = x[ch * p.hw];
    let count = p.n * p.hw;
    let shifted_mean = s / f32(count);
    let mean = k + shifted_mean;
    let sq = max(q - s * shifted_mean, 0.0);
    let var_biased = sq / f32(count);
    save_stats[ch] = mean;
    save_stats[p.c + ch] = 1.0 / sqrt(var_biased + p.eps);
    let var_unbiased = select(var_biased, sq / f32(count - 1u), count > 1u);
    running_mean[ch] = (1.0 - p.momentum) * running_mean[ch] + p.momentum * mean;
    running_var[ch] = (1.0 - p.momentum) * running_var[ch] + p.momentum * var_unbiased;
}

// y = (x - mean) * invstd * gamma + beta with the batch statistics, one plane per workgroup.
@compute @workgroup_size(WG)
fn batchnorm_forward_train_planes(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = plane_of(wid, nwg);
    if (i >= p.n * p.c) { return; }
    let ch = i % p.c;
    let mean = save_stats[ch];
    let scale = save_stats[p.c + ch] * gamma[ch];
    let shift = beta[ch];
    let base = i * p.hw;
    for (var j = lid.x; j < p.hw; j += WG) {
        y[base + j] = (x[base + j] - mean) * scale + shift;
    }
}

// y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
@compute @workgroup_size(WG)
fn batchnorm_forward_eval_planes(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = plane_of(wid, nwg);
    if (i >= p.n * p.c) { return; }
    let ch = i % p.c;
    let mean = running_mean[ch];
    let scale = gamma[ch] / sqrt(running_var[ch] + p.eps);
    let shift = beta[ch];
    let base = i * p.hw;
    for (var j = lid.x; j < p.hw; j += WG) {
        y[base + j] = (x[base + j] - mean) * scale + shift;
    }
}

// Level 1 of the backward: sum(dy * (x - mean)) and sum(dy) over the plane.
@compute @workgroup_size(WG)
fn batchnorm_backward_plane_sums(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = plane_of(wid, nwg);
    if (i >= p.n * p.c) { return; }
    let mean = save_stats[i % p.c];
    let base = i * p.hw;
    var sg = 0.0;
    var sb = 0.0;
    for (var j = lid.x; j < p.hw; j += WG) {
        let g = dy[base + j];
        sg += g * (x[base + j] - mean);
        sb += g;
    }
    let r = reduce_pair(lid.x, sg, sb);
    if (lid.x == 0u) {
        plane_sums[i] = r.x;
        plane_sums[p.n * p.c + i] = r.y;
    }
}

// dx = gamma * invstd / M * (M * dy - dbeta - xhat * dgamma), M = N * HW, with dgamma =
// invstd * sum(dy * (x - mean)) and dbeta = sum(dy) from level 2 in every workgroup (the
// workgroup of image 0 stores them). 0 where x <= p.mask_below (batchnorm.wgsl).
@compute @workgroup_size(WG)
fn batchnorm_backward_planes(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = plane_of(wid, nwg);
    if (i >= p.n * p.c) { return; }
    let ch = i % p.c;
    let invstd = save_stats[p.c + ch];
    let sums = channel_sums(lid.x, ch);
    let dg_sum = sums.x * invstd;
    let db = sums.y;
    if (i < p.c && lid.x == 0u) {
        dgamma[ch] = dg_sum;
        dbeta[ch] = db;
    }
    let m = f32(p.n * p.hw);
    let mean = save_stats[ch];
    let k = gamma[ch] * invstd / m;
    let dg = dg_sum * invstd;
    let base = i * p.hw;
    for (var j = lid.x; j < p.hw; j += WG) {
        let xv = x[base + j];
        let g = k * (m * dy[base + j] - db - (xv - mean) * dg);
        dx[base + j] = select(g, 0.0, xv <= p.mask_below);
    }
}
