// Max pooling, NCHW, square window k with stride s, no padding, floor mode
// (PyTorch nn.MaxPool2d(k, s)). Forward overwrites y and records, per output, the index of
// its maximum within the input plane (the first one on ties, as PyTorch does). Backward
// overwrites dx by gathering from the outputs whose window covers each input: no scatter,
// no atomics, and correct when windows overlap (s < k).
//
// Fused layers: a batch norm, then dropout and ReLU layers, right before the pool ("pre")
// and a dropout right after it ("post") can be applied inside the pool, so their tensors
// are never written or read back: forward computes post(max over the window of pre(x)).
// The batch norm's statistics come from its own kernel (batchnorm_stats, or the running
// estimates when evaluating). maxpool_backward turns dL/d(output) into dL/d(first fused
// activation's input), i.e. dL/d(batch-norm output) when one is fused, for the batch
// norm's own backward (overlapping windows); with tiling windows the batch norm's backward
// runs here too (maxpool_backward_batchnorm and its _reduce: its gradient is zero but at argmax
// elements). Which layers fuse is decided in src/net/fuse.rs. ReLU and inverted dropout
// commute, so their order does not matter. The dropout masks are
// the dropout kernel's (shaders/dropout.wgsl): hash of (seed, step, layer, element index in
// that layer's tensor), with the step from counter[0]. The backward needs no activations:
// the forward marks in the argmax's two top bits whether gradient reaches the argmax
// element (BLOCKED: a pre ReLU gave 0, or a pre dropout dropped it; with a ReLU, a
// positive output also means it was kept) and whether the post dropout dropped the output
// (DROPPED). Without fused layers the bits stay clear and argmax is the plain index.

struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    k: u32,
    stride: u32,
    // Bit 0: ReLU before the pool; bit 1: dropout before; bit 2: dropout after.
    fused: u32,
    seed: u32,
    // Dropout layers' indices (their hash streams), drop probabilities and scales.
    pre_layer: u32,
    post_layer: u32,
    pre_p: f32,
    pre_scale: f32,
    post_p: f32,
    post_scale: f32,
    // Batch norm before the pool: 0 none, 1 batch statistics (training: save_stats),
    // 2 running statistics (evaluating: running_mean and running_var).
    batch_norm: u32,
    eps: f32,
    // maxpool_backward_batchnorm: dx = 0 where x <= this: 0 when a ReLU (fused into the step
    // before) produced x (its backward, done here as dx is stored), -inf otherwise.
    mask_below: f32,
    // maxpool_conv_bias_reduce: how many partial sums each plane has in row_sums.
    sums_per_plane: u32,
}

const WG: u32 = 256u;
const RELU: u32 = 1u;
const PRE_DROPOUT: u32 = 2u;
const POST_DROPOUT: u32 = 4u;
// Top bits of an argmax entry (plane indices stay below 2^30).
const BLOCKED: u32 = 0x80000000u;
const DROPPED: u32 = 0x40000000u;
const INDEX: u32 = 0x3fffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx1: array<f32>;
@group(0) @binding(8) var<storage, read> counter: array<u32>;
// The fused batch norm's parameters and statistics: when training, `stat_a` is its
// save_stats (batch mean at [c], 1/sqrt(var + eps) at [C + c]); when evaluating, `stat_a`
// and `stat_b` are its running mean and running variance.
@group(0) @binding(9) var<storage, read> gamma: array<f32>;
@group(0) @binding(10) var<storage, read> beta: array<f32>;
@group(0) @binding(11) var<storage, read> stat_a: array<f32>;
@group(0) @binding(12) var<storage, read> stat_b: array<f32>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

fn has(flag: u32) -> bool {
    return (p.fused & flag) != 0u;
}

// The dropout layers' hash keys at the current step (set at the start of each entry point).
var<private> pre_key: u32;
var<private> post_key: u32;

fn set_keys() {
    let step_key = hash(counter[0] ^ hash(p.seed));
    pre_key = hash(p.pre_layer ^ step_key);
    post_key = hash(p.post_layer ^ step_key);
}

// The dropout kernel's mask: is element i of the layer with hash key `key` kept?
fn kept(key: u32, drop_p: f32, i: u32) -> bool {
    return f32(hash(i ^ key) >> 8u) * (1.0 / 16777216.0) >= drop_p;
}

// The fused batch norm of the current plane's channel: y = (x - bn_mean) * bn_scale + bn_shift.
var<private> bn_mean: f32;
var<private> bn_scale: f32 = 1.0;
var<private> bn_shift: f32;

fn set_channel(ch: u32) {
    if (p.batch_norm == 1u) {
        bn_mean = stat_a[ch];
        bn_scale = stat_a[p.c + ch] * gamma[ch];
        bn_shift = beta[ch];
    } else if (p.batch_norm == 2u) {
        bn_mean = stat_a[ch];
        bn_scale = gamma[ch] / sqrt(stat_b[ch] + p.eps);
        bn_shift = beta[ch];
    }
}

// The pre layers applied to input element e (flat index) with value v.
fn pre(v: f32, e: u32) -> f32 {
    var r = (v - bn_mean) * bn_scale + bn_shift;
    if (has(PRE_DROPOUT)) {
        r = select(0.0, r * p.pre_scale, kept(pre_key, p.pre_p, e));
    }
    if (has(RELU)) {
        r = max(r, 0.0);
    }
    return r;
}

// Output (plane, oy, ox): the maximum of pre() over its window and its argmax entry,
// stored when `store` (set_channel(plane's channel) first).
fn forward_output(plane: u32, oy: u32, ox: u32, store: bool) {
    let base = plane * p.h * p.w;
    let x0 = oy * p.stride * p.w + ox * p.stride;
    var best = pre(x[base + x0], base + x0);
    var best_idx = x0;
    // The window's other elements, row by row (the first is read once: loads are what
    // this kernel pays for).
    for (var ky = 0u; ky < p.k; ky++) {
        for (var kx = select(0u, 1u, ky == 0u); kx < p.k; kx++) {
            let idx = x0 + ky * p.w + kx;
            let v = pre(x[base + idx], base + idx);
            // Strictly greater: the first maximum wins ties, as in PyTorch.
            best_idx = select(best_idx, idx, v > best);
            best = select(best, v, v > best);
        }
    }
    let o = (plane * p.oh + oy) * p.ow + ox;
    var flags = 0u;
    if (has(RELU)) {
        flags = select(BLOCKED, 0u, best > 0.0);
    } else if (has(PRE_DROPOUT)) {
        flags = select(BLOCKED, 0u, kept(pre_key, p.pre_p, base + best_idx));
    }
    if (has(POST_DROPOUT)) {
        let keep = kept(post_key, p.post_p, o);
        best = select(0.0, best * p.post_scale, keep);
        flags |= select(DROPPED, 0u, keep);
    }
    if (store) {
        y[o] = best;
        argmax[o] = best_idx | flags;
    }
}

// One invocation per output row (plane, oy): one index division per row rather than three
// per output (integer division is scalarised on CPU adapters), and no branch per element.
@compute @workgroup_size(WG)
fn maxpool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    set_keys();
    let rows = p.n * p.c * p.oh;
    let r = min(linear_id(gid, nwg), rows - 1u);
    let plane = r / p.oh;
    let oy = r - plane * p.oh;
    set_channel(plane % p.c);
    for (var ox = 0u; ox < p.ow; ox++) {
        forward_output(plane, oy, ox, linear_id(gid, nwg) < rows);
    }
}

// One invocation per output (the `tiled` variant, for GPUs): neighbouring invocations read
// neighbouring windows, so a warp's loads coalesce.
@compute @workgroup_size(WG)
fn maxpool_forward_elements(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_id(gid, nwg);
    if (o >= p.n * p.c * p.oh * p.ow) { return; }
    set_keys();
    let plane_out = p.oh * p.ow;
    let plane = o / plane_out;
    let oy = (o - plane * plane_out) / p.ow;
    set_channel(plane % p.c);
    forward_output(plane, oy, o - plane * plane_out - oy * p.ow, true);
}

// dL/d(pool input at its argmax) for output o, whose argmax entry is a: dy[o] through
// the fused layers (each dropout scales what it keeps; the scales are 1 when not fused).
fn routed(o: u32, a: u32) -> f32 {
    return select(0.0, dy[o] * p.pre_scale * p.post_scale, (a & (BLOCKED | DROPPED)) == 0u);
}

// Gradient of one input element: the sum over the outputs whose window holds it and
// whose argmax it is.
fn input_grad(e: u32) -> f32 {
    let ix = e % p.w;
    let iy = (e / p.w) % p.h;
    let plane = e / (p.w * p.h);
    let here = iy * p.w + ix;
    // Outputs whose window [o*s, o*s + k) contains this input.
    let oy_lo = select(0u, (iy + p.stride - p.k) / p.stride, iy + p.stride >= p.k);
    let oy_hi = min(iy / p.stride, p.oh - 1u);
    let ox_lo = select(0u, (ix + p.stride - p.k) / p.stride, ix + p.stride >= p.k);
    let ox_hi = min(ix / p.stride, p.ow - 1u);
    var g = 0.0;
    for (var oy = oy_lo; oy <= oy_hi; oy++) {
        for (var ox = ox_lo; ox <= ox_hi; ox++) {
            let o = (plane * p.oh + oy) * p.ow + ox;
            let a = argmax[o];
            if ((a & INDEX) == here) {
                g += routed(o, a);
            }
        }
    }
    return g;
}

// Any windows (overlapping too): one input element per invocation.
@compute @workgroup_size(WG)
fn maxpool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = linear_id(gid, nwg);
    if (e >= p.n * p.c * p.h * p.w) { return; }
    dx1[e] = input_grad(e);
}

// Windows that tile the input (stride == k), one invocation per output row r: writes the
// k input rows under it (the routed gradient at each window's argmax, 0 elsewhere),
// extended to the plane's bottom edge when it is the last row (floor mode leaves those
// rows, and the columns right of the last window, outside every window). Returns the sum
// of what it wrote.
fn tiled_backward_row(r: u32) -> f32 {
    let plane = r / p.oh;
    let oy = r - plane * p.oh;
    let base = plane * p.h * p.w;
    let y_end = select(oy * p.k + p.k, p.h, oy == p.oh - 1u);
    var sum = 0.0;
    for (var ox = 0u; ox < p.ow; ox++) {
        let o = r * p.ow + ox;
        let a = argmax[o];
        let hit = a & INDEX;
        let g = routed(o, a);
        sum += g;
        for (var yy = oy * p.k; yy < y_end; yy++) {
            for (var xx = ox * p.k; xx < ox * p.k + p.k; xx++) {
                let here = yy * p.w + xx;
                dx1[base + here] = select(0.0, g, here == hit);
            }
        }
    }
    for (var yy = oy * p.k; yy < y_end; yy++) {
        for (var xx = p.ow * p.k; xx < p.w; xx++) {
            dx1[base + yy * p.w + xx] = 0.0;
        }
    }
    return sum;
}

@compute @workgroup_size(WG)
fn maxpool_backward_tiled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_id(gid, nwg);
    if (r >= p.n * p.c * p.oh) { return; }
    tiled_backward_row(r);
}

// ---------------------------------------------------------------------------------------
// When the pool's input is a convolution's output (ReLU and dropout between them fused
// here), the convolution's bias gradient is the sum over each channel of the gradient this
// backward writes: the tiled backward keeps each row's sum, and one thread per channel adds
// them up, instead of a pass that reads the whole gradient again.
//   maxpool_backward_tiled_sums: maxpool_backward_tiled, plus row_sums[r]
//   maxpool_conv_bias_reduce:    db[c] = the sum of channel c's rows (images, then rows)

@group(0) @binding(16) var<storage, read_write> row_sums: array<f32>;
@group(0) @binding(17) var<storage, read_write> conv_db: array<f32>;

@compute @workgroup_size(WG)
fn maxpool_backward_tiled_sums(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_id(gid, nwg);
    if (r >= p.n * p.c * p.oh) { return; }
    row_sums[r] = tiled_backward_row(r);
}

// row_sums holds p.sums_per_plane sums per plane: the rows' (p.oh), or the planes' (1).
@compute @workgroup_size(WG)
fn maxpool_conv_bias_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ch = linear_id(gid, nwg);
    if (ch >= p.c) { return; }
    var sum = 0.0;
    for (var n = 0u; n < p.n; n++) {
        let first = (n * p.c + ch) * p.sums_per_plane;
        for (var i = 0u; i < p.sums_per_plane; i++) {
            sum += row_sums[first + i];
        }
    }
    conv_db[ch] = sum;
}

// ---------------------------------------------------------------------------------------
// Backward through a pool with a fused batch norm (tiling windows, stride == k), straight to
// dL/d(batch-norm input): the batch norm's two backward passes take dL/d(batch-norm output)
// from the pool's outputs instead of from a tensor, which is zero except at each window's
// argmax. Same results as the pool's backward followed by batchnorm_backward_reduce and
// batchnorm_backward, without writing or reading that mostly-zero tensor.
//   maxpool_backward_batchnorm_reduce: dgamma, dbeta (one workgroup per channel)
//   maxpool_backward_batchnorm: dx (one invocation per output row, as the tiled backward)
// x is the batch norm's input; p.c its channels; bn_n its batch.

@group(0) @binding(13) var<storage, read> save_stats: array<f32>;
@group(0) @binding(14) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(15) var<storage, read_write> dbeta: array<f32>;

const WG_CHANNEL: u32 = 64u;
var<workgroup> red_g: array<f32, WG_CHANNEL>;
var<workgroup> red_b: array<f32, WG_CHANNEL>;

// dgamma = sum(dout * xhat), dbeta = sum(dout), where dout (the gradient of the batch
// norm's output) is nonzero only at the windows' argmax elements.
@compute @workgroup_size(WG_CHANNEL)
fn maxpool_backward_batchnorm_reduce(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x;
    let mean = save_stats[ch];
    let plane_out = p.oh * p.ow;
    var sg = 0.0;
    var sb = 0.0;
    for (var n = 0u; n < p.n; n++) {
        let plane = n * p.c + ch;
        for (var j = lid.x; j < plane_out; j += WG_CHANNEL) {
            let o = plane * plane_out + j;
            let a = argmax[o];
            let g = routed(o, a);
            sg += g * (x[plane * p.h * p.w + (a & INDEX)] - mean);
            sb += g;
        }
    }
    tree_sums(lid.x, sg, sb);
    if (lid.x == 0u) {
        dgamma[ch] = red_g[0] * save_stats[p.c + ch];
        dbeta[ch] = red_b[0];
    }
}

// The workgroup's sums of g and b in a fixed tree order, into red_g[0] and red_b[0] (which
// every lane may read on return).
fn tree_sums(lane: u32, g: f32, b: f32) {
    red_g[lane] = g;
    red_b[lane] = b;
    workgroupBarrier();
    for (var stride = WG_CHANNEL / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            red_g[lane] += red_g[lane + stride];
            red_b[lane] += red_b[lane + stride];
        }
        workgroupBarrier();
    }
}

// dx = gamma * invstd / M * (M * dout - dbeta - xhat * dgamma), M = N * H * W, after
// maxpool_backward_batchnorm_reduce.
@compute @workgroup_size(WG)
fn maxpool_backward_batchnorm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_id(gid, nwg);
    if (r >= p.n * p.c * p.oh) { return; }
    let plane = r / p.oh;
    let oy = r - plane * p.oh;
    let ch = plane % p.c;
    let m = f32(p.n * p.h * p.w);
    let mean = save_stats[ch];
    let invstd = save_stats[p.c + ch];
    let k = gamma[ch] * invstd / m;
    let db = dbeta[ch];
    let dg = dgamma[ch] * invstd;
    let base = plane * p.h * p.w;
    let y_end = select(oy * p.k + p.k, p.h, oy == p.oh - 1u);
    for (var ox = 0u; ox < p.ow; ox++) {
        let o = r * p.ow + ox;
        let a = argmax[o];
        let hit = a & INDEX;
        let g = routed(o, a);
        for (var yy = oy * p.k; yy < y_end; yy++) {
            for (var xx = ox * p.k; xx < ox * p.k + p.k; xx++) {
                let here = yy * p.w + xx;
                let dout = select(0.0, g, here == hit);
                let xv = x[base + here];
                dx1[base + here] = relu_masked(k * (m * dout - db - (xv - mean) * dg), xv);
            }
        }
    }
    // Rows and columns outside every window (floor mode) get no gradient from the pool.
    for (var yy = oy * p.k; yy < y_end; yy++) {
        for (var xx = p.ow * p.k; xx < p.w; xx++) {
            let here = yy * p.w + xx;
            let xv = x[base + here];
            dx1[base + here] = relu_masked(k * (-db - (xv - mean) * dg), xv);
        }
    }
}

fn relu_masked(g: f32, xv: f32) -> f32 {
    return select(g, 0.0, xv <= p.mask_below);
}

// ---------------------------------------------------------------------------------------
// The tiled variant's backward for tiling windows (stride == k), for GPUs: one workgroup
// per (image, channel) plane, its lanes along the plane (coalesced), and the sums in two
// levels: each plane's in a fixed tree into row_sums, then each channel's over its N planes
// in image order (deterministic).
//   maxpool_backward_plane_sums: dx of the plane and the plane's sum of it (the
//     convolution's bias gradient; maxpool_conv_bias_reduce then adds the planes up)
//   maxpool_backward_batchnorm_plane_sums: the plane's sums of dout * (x - mean) and dout
//     (row_sums[2 plane], [2 plane + 1]; gamma copied after them, at [2 N C + c])
//   maxpool_backward_batchnorm_planes: the channel's dgamma, dbeta from its planes' sums
//     (image 0's workgroup stores them), then dx of the plane

fn plane_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// dL/d(input element e of `plane`) with tiling windows: the routed gradient if e is its
// window's argmax, else 0 (also outside every window).
fn tiling_input_grad(plane: u32, e: u32) -> f32 {
    let oy = e / p.w / p.k;
    let ox = e % p.w / p.k;
    if (oy >= p.oh || ox >= p.ow) { return 0.0; }
    let o = (plane * p.oh + oy) * p.ow + ox;
    let a = argmax[o];
    return select(0.0, routed(o, a), (a & INDEX) == e);
}

@compute @workgroup_size(WG_CHANNEL)
fn maxpool_backward_plane_sums(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = plane_id(wid, nwg);
    if (plane >= p.n * p.c) { return; }
    let hw = p.h * p.w;
    for (var e = lid.x; e < hw; e += WG_CHANNEL) {
        dx1[plane * hw + e] = tiling_input_grad(plane, e);
    }
    // The plane's dx sums to its outputs' routed gradients (one argmax per window).
    let plane_out = p.oh * p.ow;
    var sum = 0.0;
    for (var j = lid.x; j < plane_out; j += WG_CHANNEL) {
        let o = plane * plane_out + j;
        sum += routed(o, argmax[o]);
    }
    tree_sums(lid.x, sum, 0.0);
    if (lid.x == 0u) {
        row_sums[plane] = red_g[0];
    }
}

@compute @workgroup_size(WG_CHANNEL)
fn maxpool_backward_batchnorm_plane_sums(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = plane_id(wid, nwg);
    if (plane >= p.n * p.c) { return; }
    let mean = save_stats[plane % p.c];
    let plane_out = p.oh * p.ow;
    var sg = 0.0;
    var sb = 0.0;
    for (var j = lid.x; j < plane_out; j += WG_CHANNEL) {
        let o = plane * plane_out + j;
        let a = argmax[o];
        let g = routed(o, a);
        sg += g * (x[plane * p.h * p.w + (a & INDEX)] - mean);
        sb += g;
    }
    tree_sums(lid.x, sg, sb);
    if (lid.x == 0u) {
        row_sums[2u * plane] = red_g[0];
        row_sums[2u * plane + 1u] = red_b[0];
        // gamma staged after the sums: the next pass is at its limit of 8 storage buffers.
        if (plane < p.c) {
            row_sums[2u * p.n * p.c + plane] = gamma[plane];
        }
    }
}

@compute @workgroup_size(WG_CHANNEL)
fn maxpool_backward_batchnorm_planes(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = plane_id(wid, nwg);
    if (plane >= p.n * p.c) { return; }
    let ch = plane % p.c;
    var sg = 0.0;
    var sb = 0.0;
    for (var i = lid.x; i < p.n; i += WG_CHANNEL) {
        let q = i * p.c + ch;
        sg += row_sums[2u * q];
        sb += row_sums[2u * q + 1u];
    }
    tree_sums(lid.x, sg, sb);
    let mean = save_stats[ch];
    let invstd = save_stats[p.c + ch];
    let dg = red_g[0] * invstd;
    let db = red_b[0];
    if (plane < p.c && lid.x == 0u) {
        dgamma[ch] = dg;
        dbeta[ch] = db;
    }
    // dx = gamma * invstd / M * (M * dout - dbeta - xhat * dgamma), as
    // maxpool_backward_batchnorm computes it.
    let m = f32(p.n * p.h * p.w);
    let k = row_sums[2u * p.n * p.c + ch] * invstd / m;
    let dg_scaled = dg * invstd;
    let hw = p.h * p.w;
    for (var e = lid.x; e < hw; e += WG_CHANNEL) {
        let xv = x[plane * hw + e];
        let dout = tiling_input_grad(plane, e);
        dx1[plane * hw + e] = relu_masked(k * (m * dout - db - (xv - mean) * dg_scaled), xv);
    }
}
