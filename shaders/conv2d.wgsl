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
    _pad0: u32,
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
                y[out_base + ox0 + j] = rows[r][j] + bias[co];
            }
        }
    }
}

// dL/dy at (image-channel plane base, oy, ox) if (oy, ox) is a real output, else 0.
fn dy_at(base: u32, oy: i32, ox: i32) -> f32 {
    let inside = oy >= 0 && oy < i32(p.oh) && ox >= 0 && ox < i32(p.ow);
    let idx = base + u32(clamp(oy, 0, i32(p.oh) - 1)) * p.ow + u32(clamp(ox, 0, i32(p.ow) - 1));
    return select(0.0, dy[idx], inside);
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
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    for (var co = 0u; co < p.co; co++) {
        let dy_base = (n * p.co + co) * p.oh * p.ow;
        let w_base = co * p.ci * khw;
        for (var ky = 0u; ky < p.kh; ky++) {
            let oy = out_coord(i32(iy), ky);
            if (oy < 0 || oy >= i32(p.oh)) { continue; }
            for (var kx = 0u; kx < p.kw; kx++) {
                let dv = vec4<f32>(
                    dy_at(dy_base, oy, out_coord(i32(ix0), kx)),
                    dy_at(dy_base, oy, out_coord(i32(ix0 + 1u), kx)),
                    dy_at(dy_base, oy, out_coord(i32(ix0 + 2u), kx)),
                    dy_at(dy_base, oy, out_coord(i32(ix0 + 3u), kx)),
                );
                let tap = w_base + ky * p.kw + kx;
                acc0 += wt[tap + c0] * dv;
                acc1 += wt[tap + c1] * dv;
                acc2 += wt[tap + c2] * dv;
                acc3 += wt[tap + c3] * dv;
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
    let co = wid.x;
    let plane = p.oh * p.ow;
    let count = p.n * plane;
    var s = 0.0;
    for (var j = lid.x; j < count; j += WG) {
        let n = j / plane;
        s += dy[(n * p.co + co) * plane + j % plane];
    }
    partial[lid.x] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid.x < stride) {
            partial[lid.x] += partial[lid.x + stride];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u && co < p.co) {
        db[co] = partial[0];
    }
}
