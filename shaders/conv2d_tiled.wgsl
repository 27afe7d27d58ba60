// Workgroup-tiled 2-D convolutions for hardware GPUs (the `tiled` variant of
// src/kernels/select.rs). Same tensors, layouts and bindings as conv2d.wgsl.

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
    // Forward: y = max(y, floor) as it is stored (conv2d.wgsl's Params).
    floor: f32,
}

// Only `chunk` is read here: batch images per partial sum of the weight gradient.
struct Params3 {
    n: u32,
    ic: u32,
    ih: u32,
    iw: u32,
    oc: u32,
    oh: u32,
    ow: u32,
    pad: u32,
    oc_pad: u32,
    has_bias: u32,
    flip: u32,
    chunk: u32,
    // Forward: out = max(out, floor) as it is stored (conv2d.wgsl's Params3).
    floor: f32,
    // Tiled weight gradient: 1 when the bias gradient rides as one more column.
    bias_column: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(20) var<uniform> q: Params3;
@group(0) @binding(25) var<storage, read_write> partials: array<f32>;

// Each pass as an implicit matrix product. A
// 16x16 workgroup computes a 64x64 tile of the output, each invocation a 4x4 block,
// staging 64x16 slices of both operands in workgroup memory (gathered from the tensors on
// the fly, zero in the padding) so every element is fetched from global memory once per
// tile. Any kernel size, stride and padding. On lavapipe barriers cost more than they save
// (DESIGN §6), so it is chosen for hardware adapters only; the tests run it everywhere.
//
//   forward:          rows co,  columns output pixels (n, oy, ox), sum over (ci, ky, kx)
//   input gradient:   rows ci,  columns input pixels (n, iy, ix),  sum over (co, ky, kx)
//   weight gradient:  rows co,  columns taps (ci, ky, kx), sum over the output pixels of
//                     one batch chunk (workgroup_id.z), into partials as
//                     conv2d_backward_weight_3x3 does.

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;

// tile_a's rows are padded by one: its stores walk k (consecutive invocations, consecutive
// k), and a row pitch of 64 floats would put 16 of them in one shared-memory bank.
const A_PITCH: u32 = 65u;
var<workgroup> tile_a: array<f32, 1040>; // [TILE_K][A_PITCH]: A(m, k) at k * A_PITCH + m
var<workgroup> tile_b: array<f32, 1024>; // [TILE_K][TILE]: B(k, n) at k * TILE + n

struct Micro {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

// acc += this invocation's 4x4 block of the product of the staged slices.
fn multiply_tiles(acc: Micro, lid: vec3<u32>) -> Micro {
    var a = acc;
    for (var kk = 0u; kk < TILE_K; kk++) {
        let ao = kk * A_PITCH + lid.y * 4u;
        let bo = kk * TILE + lid.x * 4u;
        let av = vec4<f32>(tile_a[ao], tile_a[ao + 1u], tile_a[ao + 2u], tile_a[ao + 3u]);
        let bv = vec4<f32>(tile_b[bo], tile_b[bo + 1u], tile_b[bo + 2u], tile_b[bo + 3u]);
        a.r0 += av.x * bv;
        a.r1 += av.y * bv;
        a.r2 += av.z * bv;
        a.r3 += av.w * bv;
    }
    return a;
}

// Output or input pixel index -> (image, row, column) for planes of rows x cols.
fn pixel(i: u32, rows: u32, cols: u32) -> vec3<u32> {
    return vec3<u32>(i / (rows * cols), (i / cols) % rows, i % cols);
}

// Input element x[n, ci, iy, ix] under tap (ky, kx) of output pixel o, 0 in the padding.
fn im2col(o: vec3<u32>, ci: u32, ky: u32, kx: u32) -> f32 {
    let iy = i32(o.y * p.stride + ky) - i32(p.pad);
    let ix = i32(o.z * p.stride + kx) - i32(p.pad);
    if (iy < 0 || iy >= i32(p.h) || ix < 0 || ix >= i32(p.w)) { return 0.0; }
    return x[((o.x * p.ci + ci) * p.h + u32(iy)) * p.w + u32(ix)];
}

@compute @workgroup_size(16, 16)
fn conv2d_forward_tiled(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let kk_taps = p.kh * p.kw;
    let k_len = p.ci * kk_taps;
    let pixels = p.n * p.oh * p.ow;
    let co_base = wid.y * TILE;
    // Pixel tiles run along x, continued along z past the device's workgroup limit; the
    // tiles past the last pixel load and store nothing.
    let px_base = (wid.x + wid.z * nwg.x) * TILE;
    let t = lid.y * 16u + lid.x;
    var acc: Micro;
    for (var k0 = 0u; k0 < k_len; k0 += TILE_K) {
        for (var r = 0u; r < 4u; r++) {
            let e = t + r * 256u;
            // A = weights [co, (ci, ky, kx)]: consecutive invocations walk k.
            let am = co_base + e / TILE_K;
            let ak = k0 + e % TILE_K;
            var av = 0.0;
            if (am < p.co && ak < k_len) { av = wt[am * k_len + ak]; }
            tile_a[(e % TILE_K) * A_PITCH + e / TILE_K] = av;
            // B = the input under each tap: consecutive invocations walk pixels.
            let bk = k0 + e / TILE;
            let bp = px_base + e % TILE;
            var bv = 0.0;
            if (bk < k_len && bp < pixels) {
                bv = im2col(pixel(bp, p.oh, p.ow), bk / kk_taps, (bk / p.kw) % p.kh, bk % p.kw);
            }
            tile_b[e] = bv;
        }
        workgroupBarrier();
        acc = multiply_tiles(acc, lid);
        workgroupBarrier();
    }
    let rows = array<vec4<f32>, 4>(acc.r0, acc.r1, acc.r2, acc.r3);
    for (var i = 0u; i < 4u; i++) {
        let co = co_base + lid.y * 4u + i;
        if (co >= p.co) { break; }
        for (var j = 0u; j < 4u; j++) {
            let px = px_base + lid.x * 4u + j;
            if (px < pixels) {
                let o = pixel(px, p.oh, p.ow);
                let v = rows[i][j] + bias[co];
                y[((o.x * p.co + co) * p.oh + o.y) * p.ow + o.z] = max(v, p.floor);
            }
        }
    }
}

// dy[n, co, oy, ox] where oy * stride - pad + ky = iy (likewise x), 0 where no output
// pixel reaches input pixel i through tap (ky, kx).
fn col2im(i: vec3<u32>, co: u32, ky: u32, kx: u32) -> f32 {
    let ny = i32(i.y + p.pad) - i32(ky);
    let nx = i32(i.z + p.pad) - i32(kx);
    let s = i32(p.stride);
    if (ny < 0 || nx < 0 || ny % s != 0 || nx % s != 0) { return 0.0; }
    let oy = u32(ny / s);
    let ox = u32(nx / s);
    if (oy >= p.oh || ox >= p.ow) { return 0.0; }
    return dy[((i.x * p.co + co) * p.oh + oy) * p.ow + ox];
}

@compute @workgroup_size(16, 16)
fn conv2d_backward_input_tiled(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let kk_taps = p.kh * p.kw;
    let k_len = p.co * kk_taps;
    let pixels = p.n * p.h * p.w;
    let ci_base = wid.y * TILE;
    // Pixel tiles run along x, continued along z past the device's workgroup limit; the
    // tiles past the last pixel load and store nothing.
    let px_base = (wid.x + wid.z * nwg.x) * TILE;
    let t = lid.y * 16u + lid.x;
    var acc: Micro;
    for (var k0 = 0u; k0 < k_len; k0 += TILE_K) {
        for (var r = 0u; r < 4u; r++) {
            let e = t + r * 256u;
            // A(ci, (co, ky, kx)) = w[co, ci, ky, kx].
            let am = ci_base + e / TILE_K;
            let ak = k0 + e % TILE_K;
            var av = 0.0;
            if (am < p.ci && ak < k_len) {
                av = wt[((ak / kk_taps) * p.ci + am) * kk_taps + ak % kk_taps];
            }
            tile_a[(e % TILE_K) * A_PITCH + e / TILE_K] = av;
            let bk = k0 + e / TILE;
            let bp = px_base + e % TILE;
            var bv = 0.0;
            if (bk < k_len && bp < pixels) {
                bv = col2im(pixel(bp, p.h, p.w), bk / kk_taps, (bk / p.kw) % p.kh, bk % p.kw);
            }
            tile_b[e] = bv;
        }
        workgroupBarrier();
        acc = multiply_tiles(acc, lid);
        workgroupBarrier();
    }
    let rows = array<vec4<f32>, 4>(acc.r0, acc.r1, acc.r2, acc.r3);
    for (var i = 0u; i < 4u; i++) {
        let ci = ci_base + lid.y * 4u + i;
        if (ci >= p.ci) { break; }
        for (var j = 0u; j < 4u; j++) {
            let px = px_base + lid.x * 4u + j;
            if (px < pixels) {
                let o = pixel(px, p.h, p.w);
                dx[((o.x * p.ci + ci) * p.h + o.y) * p.w + o.z] = rows[i][j];
            }
        }
    }
}

// Partial weight gradient over the images of chunk workgroup_id.z (q.chunk per chunk).
// With q.bias_column, column n_len of B is all ones, so that column of the product is the
// chunk's bias gradient (the sum of dy): stored after every chunk's weights, at
// partials[chunks * co * n_len + chunk * co + co], for conv2d_reduce_partials_bias_column.
@compute @workgroup_size(16, 16)
fn conv2d_backward_weight_tiled(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let kk_taps = p.kh * p.kw;
    let n_len = p.ci * kk_taps;
    let n_cols = n_len + q.bias_column;
    let plane = p.oh * p.ow;
    let px_first = wid.z * q.chunk * plane;
    let px_end = min(p.n, (wid.z + 1u) * q.chunk) * plane;
    let co_base = wid.y * TILE;
    let tap_base = wid.x * TILE;
    let t = lid.y * 16u + lid.x;
    var acc: Micro;
    for (var k0 = px_first; k0 < px_end; k0 += TILE_K) {
        for (var r = 0u; r < 4u; r++) {
            let e = t + r * 256u;
            // A(co, pixel) = dy: consecutive invocations walk pixels.
            let am = co_base + e / TILE_K;
            let ak = k0 + e % TILE_K;
            var av = 0.0;
            if (am < p.co && ak < px_end) {
                let o = pixel(ak, p.oh, p.ow);
                av = dy[((o.x * p.co + am) * p.oh + o.y) * p.ow + o.z];
            }
            tile_a[(e % TILE_K) * A_PITCH + e / TILE_K] = av;
            // B(pixel, (ci, ky, kx)) = the input under that tap (1 in the bias column).
            let bk = k0 + e / TILE;
            let bn = tap_base + e % TILE;
            var bv = 0.0;
            if (bk < px_end && bn < n_len) {
                bv = im2col(pixel(bk, p.oh, p.ow), bn / kk_taps, (bn / p.kw) % p.kh, bn % p.kw);
            } else if (bk < px_end && bn < n_cols) {
                bv = 1.0;
            }
            tile_b[e] = bv;
        }
        workgroupBarrier();
        acc = multiply_tiles(acc, lid);
        workgroupBarrier();
    }
    let rows = array<vec4<f32>, 4>(acc.r0, acc.r1, acc.r2, acc.r3);
    let out = wid.z * p.co * n_len;
    let chunks = (p.n + q.chunk - 1u) / q.chunk;
    for (var i = 0u; i < 4u; i++) {
        let co = co_base + lid.y * 4u + i;
        if (co >= p.co) { break; }
        for (var j = 0u; j < 4u; j++) {
            let tap = tap_base + lid.x * 4u + j;
            if (tap < n_len) {
                partials[out + co * n_len + tap] = rows[i][j];
            } else if (tap < n_cols) {
                partials[chunks * p.co * n_len + wid.z * p.co + co] = rows[i][j];
            }
        }
    }
}
