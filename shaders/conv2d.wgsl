// 2-D convolution, NCHW, weight [CO, CI, KH, KW], one stride and one zero padding for both
// axes (PyTorch nn.Conv2d semantics, dilation 1, groups 1).
//
// Every entry point overwrites its output: y (forward), dx (backward to the input),
// dw and db (backward to the parameters; written, not accumulated).
// Blocks of 4x4 outputs per invocation keep the data in registers (see matmul.wgsl).

struct Params {
    n: u32,
    ci: u32,
    h: u32,
    w: u32,
    co: u32,
    kh: u32,
    kw: u32,
    oh: u32,
    ow: u32,
    stride: u32,
    pad: u32,
    // Forward: y = max(y, floor) as it is stored: 0 for a ReLU right after the convolution,
    // -inf (no change) otherwise. A max, not a branch on a uniform: cheaper on lavapipe.
    floor: f32,
}

const WG: u32 = 64u;
const BLOCK: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;
@group(0) @binding(8) var<storage, read_write> db: array<f32>;
@group(0) @binding(9) var<storage, read> dy4: array<vec4<f32>>;

var<workgroup> partial: array<f32, WG>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// Input value at (plane base, iy, ix) or 0 in the padding.
fn x_at(base: u32, iy: i32, ix: i32) -> f32 {
    let inside = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let idx = base + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w + u32(clamp(ix, 0, i32(p.w) - 1));
    return select(0.0, x[idx], inside);
}

// One invocation: image n, 4 output channels, one output row, 4 output columns.
@compute @workgroup_size(WG)
fn conv2d_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let co_blocks = (p.co + BLOCK - 1u) / BLOCK;
    let ow_blocks = (p.ow + BLOCK - 1u) / BLOCK;
    var i = linear_id(gid, nwg);
    if (i >= p.n * co_blocks * p.oh * ow_blocks) { return; }
    let owb = i % ow_blocks; i /= ow_blocks;
    let oy = i % p.oh; i /= p.oh;
    let cob = i % co_blocks;
    let n = i / co_blocks;
    let co0 = cob * BLOCK;
    let ox0 = owb * BLOCK;
    let kk = p.ci * p.kh * p.kw;
    let w0 = min(co0, p.co - 1u) * kk;
    let w1 = min(co0 + 1u, p.co - 1u) * kk;
    let w2 = min(co0 + 2u, p.co - 1u) * kk;
    let w3 = min(co0 + 3u, p.co - 1u) * kk;
    let s = i32(p.stride);
    let pad = i32(p.pad);
    let ix0 = i32(ox0) * s - pad;
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    for (var ci = 0u; ci < p.ci; ci++) {
        let base = (n * p.ci + ci) * p.h * p.w;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy) * s - pad + i32(ky);
            if (iy < 0 || iy >= i32(p.h)) { continue; }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = ix0 + i32(kx);
                let xv = vec4<f32>(
                    x_at(base, iy, ix),
                    x_at(base, iy, ix + s),
                    x_at(base, iy, ix + 2 * s),
                    x_at(base, iy, ix + 3 * s),
                );
                let widx = (ci * p.kh + ky) * p.kw + kx;
                acc0 += wt[w0 + widx] * xv;
                acc1 += wt[w1 + widx] * xv;
                acc2 += wt[w2 + widx] * xv;
                acc3 += wt[w3 + widx] * xv;
            }
        }
    }
    var rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var r = 0u; r < BLOCK; r++) {
        let co = co0 + r;
        if (co >= p.co) { break; }
        let out_base = ((n * p.co + co) * p.oh + oy) * p.ow;
        for (var j = 0u; j < BLOCK; j++) {
            if (ox0 + j < p.ow) {
                let v = rows[r][j] + bias[co];
                y[out_base + ox0 + j] = max(v, p.floor);
            }
        }
    }
}

// Output coordinate that input coordinate `i` meets through kernel tap `k`, or -1.
fn out_coord(i: i32, k: u32) -> i32 {
    let num = i + i32(p.pad) - i32(k);
    let s = i32(p.stride);
    if (num < 0 || num % s != 0) { return -1; }
    return num / s;
}

// dx[n, ci, iy, ix] = sum over co, ky, kx of w[co, ci, ky, kx] * dy[n, co, oy, ox]
// where oy * stride - pad + ky = iy. One invocation: 4 input channels x 4 input columns.
// Taps outside, channels inside: which outputs a tap reaches (a division by the stride)
// is worked out once per tap, not once per channel, and the channel loop is plain loads
// and FMAs (columns a tap does not reach load a clamped address and count 0). With the
// taps inside, SwiftShader's compiler took 6.6 s over this kernel.
@compute @workgroup_size(WG)
fn conv2d_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ci_blocks = (p.ci + BLOCK - 1u) / BLOCK;
    let w_blocks = (p.w + BLOCK - 1u) / BLOCK;
    var i = linear_id(gid, nwg);
    if (i >= p.n * ci_blocks * p.h * w_blocks) { return; }
    let wb = i % w_blocks; i /= w_blocks;
    let iy = i % p.h; i /= p.h;
    let cib = i % ci_blocks;
    let n = i / ci_blocks;
    let ci0 = cib * BLOCK;
    let ix0 = wb * BLOCK;
    let khw = p.kh * p.kw;
    let c0 = min(ci0, p.ci - 1u) * khw;
    let c1 = min(ci0 + 1u, p.ci - 1u) * khw;
    let c2 = min(ci0 + 2u, p.ci - 1u) * khw;
    let c3 = min(ci0 + 3u, p.ci - 1u) * khw;
    let plane = p.oh * p.ow;
    let w_stride = p.ci * khw;
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    for (var ky = 0u; ky < p.kh; ky++) {
        let oy = out_coord(i32(iy), ky);
        if (oy < 0 || oy >= i32(p.oh)) { continue; }
        for (var kx = 0u; kx < p.kw; kx++) {
            let ox = vec4<i32>(
                out_coord(i32(ix0), kx),
                out_coord(i32(ix0 + 1u), kx),
                out_coord(i32(ix0 + 2u), kx),
                out_coord(i32(ix0 + 3u), kx),
            );
            let reached = (ox >= vec4<i32>(0)) & (ox < vec4<i32>(i32(p.ow)));
            if (!any(reached)) { continue; }
            let mask = select(vec4<f32>(0.0), vec4<f32>(1.0), reached);
            let col = vec4<u32>(clamp(ox, vec4<i32>(0), vec4<i32>(i32(p.ow) - 1)));
            let row = n * p.co * plane + u32(oy) * p.ow;
            let o = vec4<u32>(row) + col;
            var tap = ky * p.kw + kx;
            for (var co = 0u; co < p.co; co++) {
                let d = co * plane;
                let dv = vec4<f32>(dy[o.x + d], dy[o.y + d], dy[o.z + d], dy[o.w + d]) * mask;
                acc0 += wt[tap + c0] * dv;
                acc1 += wt[tap + c1] * dv;
                acc2 += wt[tap + c2] * dv;
                acc3 += wt[tap + c3] * dv;
                tap += w_stride;
            }
        }
    }
    var rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var r = 0u; r < BLOCK; r++) {
        let ci = ci0 + r;
        if (ci >= p.ci) { break; }
        let base = ((n * p.ci + ci) * p.h + iy) * p.w;
        for (var j = 0u; j < BLOCK; j++) {
            if (ix0 + j < p.w) {
                dx[base + ix0 + j] = rows[r][j];
            }
        }
    }
}

// dw[co, ci, ky, kx] = sum over n, oy, ox of dy[n, co, oy, ox] * x[n, ci, iy, ix].
// One invocation: 4 output channels of one (ci, ky, kx) tap.
@compute @workgroup_size(WG)
fn conv2d_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let co_blocks = (p.co + BLOCK - 1u) / BLOCK;
    var i = linear_id(gid, nwg);
    if (i >= co_blocks * p.ci * p.kh * p.kw) { return; }
    let kx = i % p.kw; i /= p.kw;
    let ky = i % p.kh; i /= p.kh;
    let ci = i % p.ci;
    let cob = i / p.ci;
    let co0 = cob * BLOCK;
    let plane = p.oh * p.ow;
    let d0 = min(co0, p.co - 1u) * plane;
    let d1 = min(co0 + 1u, p.co - 1u) * plane;
    let d2 = min(co0 + 2u, p.co - 1u) * plane;
    let d3 = min(co0 + 3u, p.co - 1u) * plane;
    let s = i32(p.stride);
    let pad = i32(p.pad);
    var acc = vec4<f32>();
    for (var n = 0u; n < p.n; n++) {
        let x_base = (n * p.ci + ci) * p.h * p.w;
        let dy_base = n * p.co * plane;
        for (var oy = 0u; oy < p.oh; oy++) {
            let iy = i32(oy) * s - pad + i32(ky);
            if (iy < 0 || iy >= i32(p.h)) { continue; }
            for (var ox = 0u; ox < p.ow; ox++) {
                let ix = i32(ox) * s - pad + i32(kx);
                if (ix < 0 || ix >= i32(p.w)) { continue; }
                let xv = x[x_base + u32(iy) * p.w + u32(ix)];
                let o = dy_base + oy * p.ow + ox;
                acc += xv * vec4<f32>(dy[o + d0], dy[o + d1], dy[o + d2], dy[o + d3]);
            }
        }
    }
    let tap = (ci * p.kh + ky) * p.kw + kx;
    let kk = p.ci * p.kh * p.kw;
    for (var r = 0u; r < BLOCK; r++) {
        if (co0 + r < p.co) {
            dw[(co0 + r) * kk + tap] = acc[r];
        }
    }
}

// db[co] = sum over n, oy, ox of dy[n, co, oy, ox]. One workgroup per output channel,
// a tree reduction in workgroup memory (deterministic order).
@compute @workgroup_size(WG)
fn conv2d_backward_bias(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    store_bias_grad(lid.x, wid.x, bias_sum(lid.x, wid.x));
}

// This invocation's share of channel co's sum: whole (n, co) planes, no per-element division.
fn bias_sum(lid: u32, co: u32) -> f32 {
    let plane = p.oh * p.ow;
    var s = 0.0;
    for (var n = 0u; n < p.n; n++) {
        let base = (n * p.co + co) * plane;
        for (var j = lid; j < plane; j += WG) {
            s += dy[base + j];
        }
    }
    return s;
}

// Sums the workgroup's partial sums (a tree in workgroup memory) into db[co].
fn store_bias_grad(lid: u32, co: u32, s: f32) {
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u && co < p.co) {
        db[co] = partial[0];
    }
}

// As conv2d_backward_bias for output planes of whole vec4s (oh * ow % 4 == 0): a vec4 load
// costs a CPU adapter about two scalar ones.
@compute @workgroup_size(WG)
fn conv2d_backward_bias4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    store_bias_grad(lid.x, wid.x, bias_sum4(lid.x, wid.x));
}

fn bias_sum4(lid: u32, co: u32) -> f32 {
    let plane4 = p.oh * p.ow / 4u;
    var s = vec4<f32>(0.0);
    for (var n = 0u; n < p.n; n++) {
        let base = (n * p.co + co) * plane4;
        for (var j = lid; j < plane4; j += WG) {
            s += dy4[base + j];
        }
    }
    return s.x + s.y + s.z + s.w;
}

// ---------------------------------------------------------------------------------------
// Fast path for 3x3 kernels with stride 1 (every preset's convolutions).
//
// conv2d_pack_weights lays the weights out as packed[(i, ky, kx), o] with o padded to a
// multiple of 8, so the 8 output channels of a block load as two vec4s. With `flip` set it
// packs the weights of the backward-to-input convolution instead: in = dy (CO channels),
// out = dx (CI channels), taps mirrored, padding k - 1 - pad. conv2d_forward_3x3 then
// computes out[n, o, y, x] = bias[o] + sum packed[(i, ky, kx), o] * in[n, i, y+ky-pad, x+kx-pad]
// for 8 output channels x 8 columns per invocation, sliding a 10-wide input row through
// the three taps of each kernel row, all in registers.

struct Params3 {
    n: u32,
    ic: u32,
    ih: u32,
    iw: u32,
    oc: u32,
    oh: u32,
    ow: u32,
    pad: u32,
    // Output channels padded to a multiple of 8 (row length of the packed weights).
    oc_pad: u32,
    // 3x3 forward: add the bias. conv2d_reduce_partials_bias: the first workgroup row of
    // the bias gradient.
    has_bias: u32,
    flip: u32,
    // Batch images per partial sum in conv2d_backward_weight_3x3.
    chunk: u32,
    // 3x3 forward: out = max(out, floor) as it is stored (Params' floor).
    floor: f32,
    // Tiled weight gradient: 1 when the bias gradient rides as one more column.
    bias_column: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(20) var<uniform> q: Params3;
@group(0) @binding(21) var<storage, read> packed: array<vec4<f32>>;
@group(0) @binding(22) var<storage, read_write> packed_out: array<f32>;
@group(0) @binding(23) var<storage, read> src: array<f32>;
@group(0) @binding(24) var<storage, read_write> dst: array<f32>;
@group(0) @binding(25) var<storage, read_write> partials: array<f32>;

// Element i of the packed weights of a convolution with `ic` inputs and `oc` outputs whose
// weights start at wt[base]; padding channels get 0.
// Forward:  packed[(ci*9 + t), co] = w[co, ci, t]
// Flipped:  packed[(co*9 + t), ci] = w[co, ci, 8 - t]
fn packed_weight(i: u32, ic: u32, oc: u32, oc_pad: u32, flip: u32, base: u32) -> f32 {
    let o = i % oc_pad;
    let row = i / oc_pad;
    let inner = row / 9u;
    let t = row % 9u;
    if (o >= oc) { return 0.0; }
    if (flip == 0u) {
        return wt[base + (o * ic + inner) * 9u + t];
    }
    // o is the conv's input channel ci, inner its output channel co.
    return wt[base + (inner * oc + o) * 9u + (8u - t)];
}

// One element of the packed weights per invocation.
@compute @workgroup_size(WG)
fn conv2d_pack_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= q.ic * 9u * q.oc_pad) { return; }
    packed_out[i] = packed_weight(i, q.ic, q.oc, q.oc_pad, q.flip, 0u);
}

// Every 3x3 convolution of a step packed in one dispatch (kernels::conv2d::WeightPacker):
// wt is the whole parameter arena, packed_out the buffer of every packed slice, and the
// invocations run over the jobs' elements one job after another.
struct PackJob {
    start: u32,
    count: u32,
    w_offset: u32,
    ic: u32,
    oc: u32,
    oc_pad: u32,
    flip: u32,
    _pad: u32,
}

@group(0) @binding(26) var<storage, read> pack_jobs: array<PackJob>;

@compute @workgroup_size(WG)
fn conv2d_pack_weights_all(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    var i = linear_id(gid, nwg);
    for (var j = 0u; j < arrayLength(&pack_jobs); j++) {
        let job = pack_jobs[j];
        if (i < job.count) {
            packed_out[job.start + i] = packed_weight(i, job.ic, job.oc, job.oc_pad, job.flip, job.w_offset);
            return;
        }
        i -= job.count;
    }
}

struct Acc {
    a0: vec4<f32>, b0: vec4<f32>, a1: vec4<f32>, b1: vec4<f32>,
    a2: vec4<f32>, b2: vec4<f32>, a3: vec4<f32>, b3: vec4<f32>,
    a4: vec4<f32>, b4: vec4<f32>, a5: vec4<f32>, b5: vec4<f32>,
    a6: vec4<f32>, b6: vec4<f32>, a7: vec4<f32>, b7: vec4<f32>,
}

// acc[c] += w[c] * x for 8 channels (w = wl ++ wh) and 8 columns (x = xl ++ xh).
fn tap8(acc: ptr<function, Acc>, wl: vec4<f32>, wh: vec4<f32>, xl: vec4<f32>, xh: vec4<f32>) {
    (*acc).a0 += wl.x * xl; (*acc).b0 += wl.x * xh;
    (*acc).a1 += wl.y * xl; (*acc).b1 += wl.y * xh;
    (*acc).a2 += wl.z * xl; (*acc).b2 += wl.z * xh;
    (*acc).a3 += wl.w * xl; (*acc).b3 += wl.w * xh;
    (*acc).a4 += wh.x * xl; (*acc).b4 += wh.x * xh;
    (*acc).a5 += wh.y * xl; (*acc).b5 += wh.y * xh;
    (*acc).a6 += wh.z * xl; (*acc).b6 += wh.z * xh;
    (*acc).a7 += wh.w * xl; (*acc).b7 += wh.w * xh;
}

// src at column x of the row starting at `row`, or 0 in the padding: one clamp and one
// compare (clamping changes x exactly when it is outside).
fn src_col(row: u32, x: i32) -> f32 {
    let xc = clamp(x, 0, i32(q.iw) - 1);
    return select(0.0, src[row + u32(xc)], x == xc);
}

fn store8(n: u32, o: u32, y: u32, x0: u32, l: vec4<f32>, h: vec4<f32>) {
    if (o >= q.oc) { return; }
    var b = 0.0;
    if (q.has_bias != 0u) { b = bias[o]; }
    let base = ((n * q.oc + o) * q.oh + y) * q.ow + x0;
    let v = array<f32, 8>(l.x, l.y, l.z, l.w, h.x, h.y, h.z, h.w);
    for (var j = 0u; j < 8u; j++) {
        let r = v[j] + b;
        if (x0 + j < q.ow) { dst[base + j] = max(r, q.floor); }
    }
}

@compute @workgroup_size(WG)
fn conv2d_forward_3x3(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o_blocks = q.oc_pad / 8u;
    let x_blocks = (q.ow + 7u) / 8u;
    var i = linear_id(gid, nwg);
    if (i >= q.n * o_blocks * q.oh * x_blocks) { return; }
    let xb = i % x_blocks; i /= x_blocks;
    let y = i % q.oh; i /= q.oh;
    let ob = i % o_blocks;
    let n = i / o_blocks;
    let o0 = ob * 8u;
    let x0 = i32(xb * 8u) - i32(q.pad);
    let row_pitch = q.oc_pad / 4u;
    var acc: Acc;
    for (var ci = 0u; ci < q.ic; ci++) {
        let base = (n * q.ic + ci) * q.ih * q.iw;
        for (var ky = 0u; ky < 3u; ky++) {
            let yy = i32(y + ky) - i32(q.pad);
            if (yy < 0 || yy >= i32(q.ih)) { continue; }
            // The row is inside (checked above); only columns can fall in the padding.
            let row = base + u32(yy) * q.iw;
            let r0 = vec4<f32>(src_col(row, x0), src_col(row, x0 + 1), src_col(row, x0 + 2), src_col(row, x0 + 3));
            let r1 = vec4<f32>(src_col(row, x0 + 4), src_col(row, x0 + 5), src_col(row, x0 + 6), src_col(row, x0 + 7));
            let r8 = src_col(row, x0 + 8);
            let r9 = src_col(row, x0 + 9);
            let w = ((ci * 9u + ky * 3u) * q.oc_pad + o0) / 4u;
            tap8(&acc, packed[w], packed[w + 1u], r0, r1);
            tap8(&acc, packed[w + row_pitch], packed[w + row_pitch + 1u],
                 vec4<f32>(r0.yzw, r1.x), vec4<f32>(r1.yzw, r8));
            tap8(&acc, packed[w + 2u * row_pitch], packed[w + 2u * row_pitch + 1u],
                 vec4<f32>(r0.zw, r1.xy), vec4<f32>(r1.zw, r8, r9));
        }
    }
    let xs = xb * 8u;
    store8(n, o0, y, xs, acc.a0, acc.b0);
    store8(n, o0 + 1u, y, xs, acc.a1, acc.b1);
    store8(n, o0 + 2u, y, xs, acc.a2, acc.b2);
    store8(n, o0 + 3u, y, xs, acc.a3, acc.b3);
    store8(n, o0 + 4u, y, xs, acc.a4, acc.b4);
    store8(n, o0 + 5u, y, xs, acc.a5, acc.b5);
    store8(n, o0 + 6u, y, xs, acc.a6, acc.b6);
    store8(n, o0 + 7u, y, xs, acc.a7, acc.b7);
}

// Weight gradient of a 3x3, stride-1 convolution, split over the batch for parallelism:
// partials[chunk, co, ci, t] = sum over the chunk's images and all outputs of
// dy[n, co, y, x] * x[n, ci, y + ky - pad, x + kx - pad]. One invocation: 4 output channels
// of one input channel, all 9 taps, sliding a 3x3 input window along each output row, so
// each step loads one new input column (3 loads) and 4 of dy for 36 products. Padding is a
// 0/1 mask per row (once per output row) and per column (one compare per step) on clamped
// loads, not a bounds check per load: with those, SwiftShader's compiler took a minute over
// the 9 accumulators. Uses p (Params) for the shape and q.chunk for the split.
@compute @workgroup_size(WG)
fn conv2d_backward_weight_3x3(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let co_blocks = (p.co + 3u) / 4u;
    let chunks = (p.n + q.chunk - 1u) / q.chunk;
    var i = linear_id(gid, nwg);
    if (i >= chunks * co_blocks * p.ci) { return; }
    let ci = i % p.ci; i /= p.ci;
    let cob = i % co_blocks;
    let chunk = i / co_blocks;
    let co0 = cob * 4u;
    let plane = p.oh * p.ow;
    let d0 = min(co0, p.co - 1u) * plane;
    let d1 = min(co0 + 1u, p.co - 1u) * plane;
    let d2 = min(co0 + 2u, p.co - 1u) * plane;
    let d3 = min(co0 + 3u, p.co - 1u) * plane;
    var t0 = vec4<f32>(); var t1 = vec4<f32>(); var t2 = vec4<f32>();
    var t3 = vec4<f32>(); var t4 = vec4<f32>(); var t5 = vec4<f32>();
    var t6 = vec4<f32>(); var t7 = vec4<f32>(); var t8 = vec4<f32>();
    let n_end = min(p.n, (chunk + 1u) * q.chunk);
    for (var n = chunk * q.chunk; n < n_end; n++) {
        let xb = (n * p.ci + ci) * p.h * p.w;
        let db = n * p.co * plane;
        for (var y = 0u; y < p.oh; y++) {
            // Input rows y - pad + k; u32 wraps a negative row past h, so one compare tests
            // both ends. A row outside the image loads row 0 (or h - 1) times 0.
            let y0 = y - p.pad;
            let row = vec3<u32>(y0, y0 + 1u, y0 + 2u);
            let rmask = select(vec3<f32>(0.0), vec3<f32>(1.0), row < vec3<u32>(p.h));
            let r0 = xb + min(row.x, p.h - 1u) * p.w;
            let r1 = xb + min(row.y, p.h - 1u) * p.w;
            let r2 = xb + min(row.z, p.h - 1u) * p.w;
            var l = column(r0, r1, r2, 0u - p.pad) * rmask;
            var m = column(r0, r1, r2, 1u - p.pad) * rmask;
            for (var c = 0u; c < p.ow; c++) {
                let r = column(r0, r1, r2, c + 2u - p.pad) * rmask;
                let o = db + y * p.ow + c;
                let g = vec4<f32>(dy[o + d0], dy[o + d1], dy[o + d2], dy[o + d3]);
                t0 += l.x * g; t1 += m.x * g; t2 += r.x * g;
                t3 += l.y * g; t4 += m.y * g; t5 += r.y * g;
                t6 += l.z * g; t7 += m.z * g; t8 += r.z * g;
                l = m;
                m = r;
            }
        }
    }
    let kk = p.ci * 9u;
    let out = chunk * p.co * kk + ci * 9u;
    for (var r = 0u; r < 4u; r++) {
        if (co0 + r >= p.co) { break; }
        let o = out + (co0 + r) * kk;
        partials[o] = lane(t0, r); partials[o + 1u] = lane(t1, r); partials[o + 2u] = lane(t2, r);
        partials[o + 3u] = lane(t3, r); partials[o + 4u] = lane(t4, r); partials[o + 5u] = lane(t5, r);
        partials[o + 6u] = lane(t6, r); partials[o + 7u] = lane(t7, r); partials[o + 8u] = lane(t8, r);
    }
}

// Input column col (wrapped past w when negative) of the rows starting at r0, r1, r2, or 0
// outside the image.
fn column(r0: u32, r1: u32, r2: u32, col: u32) -> vec3<f32> {
    let c = min(col, p.w - 1u);
    return select(vec3<f32>(0.0), vec3<f32>(x[r0 + c], x[r1 + c], x[r2 + c]), col < p.w);
}

// v[r] for r < 4, without indexing a vector dynamically.
fn lane(v: vec4<f32>, r: u32) -> f32 {
    return select(select(select(v.x, v.y, r == 1u), v.z, r == 2u), v.w, r == 3u);
}

// dw[j] = sum over chunks of partials[chunk, j], in chunk order (deterministic).
@compute @workgroup_size(WG)
fn conv2d_reduce_partials(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    reduce_partials(linear_id(gid, nwg));
}

fn reduce_partials(j: u32) {
    let len = p.co * p.ci * p.kh * p.kw;
    if (j >= len) { return; }
    let chunks = (p.n + q.chunk - 1u) / q.chunk;
    var s = 0.0;
    for (var c = 0u; c < chunks; c++) {
        s += partials[c * len + j];
    }
    dw[j] = s;
}

// The combine of conv2d_backward_weight_tiled's partials with its bias column: after the
// weights' sums, db[co] = the sum over chunks of the chunk's bias column, in chunk order.
@compute @workgroup_size(WG)
fn conv2d_reduce_partials_bias_column(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_id(gid, nwg);
    let len = p.co * p.ci * p.kh * p.kw;
    if (j < len) {
        reduce_partials(j);
        return;
    }
    let co = j - len;
    if (co >= p.co) { return; }
    let chunks = (p.n + q.chunk - 1u) / q.chunk;
    var s = 0.0;
    for (var c = 0u; c < chunks; c++) {
        s += partials[chunks * len + c * p.co + co];
    }
    db[co] = s;
}

// The combine with the bias gradient in the same dispatch: workgroup rows from q.has_bias
// on are conv2d_backward_bias's workgroups (one per output channel, the same sums), so the
// bias needs no dispatch of its own. The branch is uniform per workgroup, so the bias
// workgroups' barriers are reached by all their invocations.
@compute @workgroup_size(WG)
fn conv2d_reduce_partials_bias(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (wid.y < q.has_bias) {
        reduce_partials(linear_id(gid, nwg));
        return;
    }
    let co = (wid.y - q.has_bias) * nwg.x + wid.x;
    if (co >= p.co) { return; }
    store_bias_grad(lid.x, co, bias_sum(lid.x, co));
}

@compute @workgroup_size(WG)
fn conv2d_reduce_partials_bias4(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (wid.y < q.has_bias) {
        reduce_partials(linear_id(gid, nwg));
        return;
    }
    let co = (wid.y - q.has_bias) * nwg.x + wid.x;
    if (co >= p.co) { return; }
    store_bias_grad(lid.x, co, bias_sum4(lid.x, co));
}
