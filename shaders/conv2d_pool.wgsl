// A first-layer block in one pass: a 3x3, stride-1 convolution of a 1-channel input, an
// optional ReLU and a 2x2, stride-2 max pool (cnn1's `conv(32,3) relu maxpool(2)`). The
// convolution's output is never written: on lavapipe every store and load costs ~4 ns per
// lane, and with one input channel the separate kernels spend nearly all their time writing
// 32 planes of convolution output and reading them back for the pool; here each thread
// reads a 4x4 input patch once and writes only the pooled value and its argmax, in the
// layout and with the flags of pool.wgsl's maxpool_forward (its backward runs unchanged).
// The weights come from a uniform buffer (a vec4 at a uniform index costs ~1 ns, a storage
// load ~4 ns per lane even when every lane reads the same address).
//
// conv2d_pool_pack:    packed[3 co .. 3 co + 2] = (w0..w3), (w4..w7), (w8, bias, 0, 0)
// conv2d_relu_maxpool: one thread per pooled output (image, row, column), every channel.

struct Params {
    n: u32,
    h: u32,
    w: u32,
    pad: u32,
    co: u32,
    // The convolution's output plane (the pool's input).
    oh: u32,
    ow: u32,
    // The pooled plane.
    ph: u32,
    pw: u32,
    relu: u32,
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 64u;
// Channels the uniform weight table holds (3 vec4s each).
const MAX_CO: u32 = 64u;
// Top bit of an argmax entry: no gradient reaches the argmax (the ReLU gave 0), as pool.wgsl.
const BLOCKED: u32 = 0x80000000u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> table: array<vec4<f32>, 192>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read> bias: array<f32>;
@group(0) @binding(7) var<storage, read_write> packed: array<vec4<f32>>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn conv2d_pool_pack(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = linear_id(gid, nwg);
    if (c >= MAX_CO) { return; }
    if (c >= p.co) {
        packed[3u * c] = vec4<f32>(0.0);
        packed[3u * c + 1u] = vec4<f32>(0.0);
        packed[3u * c + 2u] = vec4<f32>(0.0);
        return;
    }
    let w = 9u * c;
    packed[3u * c] = vec4<f32>(weight[w], weight[w + 1u], weight[w + 2u], weight[w + 3u]);
    packed[3u * c + 1u] = vec4<f32>(weight[w + 4u], weight[w + 5u], weight[w + 6u], weight[w + 7u]);
    packed[3u * c + 2u] = vec4<f32>(weight[w + 8u], bias[c], 0.0, 0.0);
}

// Input pixel (iy, ix) of image n, 0 in the padding.
fn pixel(n: u32, iy: i32, ix: i32) -> f32 {
    let inside = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let i = n * p.h * p.w + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w + u32(clamp(ix, 0, i32(p.w) - 1));
    return select(0.0, x[i], inside);
}

// One 3x3 tap sum: the bias, then the taps row by row (as conv2d.wgsl's kernels add them).
fn conv3x3(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, r0: vec3<f32>, r1: vec3<f32>, r2: vec3<f32>) -> f32 {
    var s = c.y;
    s = fma(a.x, r0.x, s);
    s = fma(a.y, r0.y, s);
    s = fma(a.z, r0.z, s);
    s = fma(a.w, r1.x, s);
    s = fma(b.x, r1.y, s);
    s = fma(b.y, r1.z, s);
    s = fma(b.z, r2.x, s);
    s = fma(b.w, r2.y, s);
    s = fma(c.x, r2.z, s);
    return s;
}

@compute @workgroup_size(WG)
fn conv2d_relu_maxpool(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n * p.ph * p.pw) { return; }
    let px = i % p.pw;
    let py = (i / p.pw) % p.ph;
    let n = i / (p.pw * p.ph);
    // The 4x4 input patch under the window's 2x2 convolution outputs.
    let y0 = i32(2u * py) - i32(p.pad);
    let x0 = i32(2u * px) - i32(p.pad);
    var rows: array<vec4<f32>, 4>;
    for (var r = 0; r < 4; r++) {
        rows[r] = vec4<f32>(pixel(n, y0 + r, x0), pixel(n, y0 + r, x0 + 1), pixel(n, y0 + r, x0 + 2), pixel(n, y0 + r, x0 + 3));
    }
    let r0 = rows[0];
    let r1 = rows[1];
    let r2 = rows[2];
    let r3 = rows[3];
    // Plane indices of the window's four outputs, in the order the pool scans them.
    let first = 2u * py * p.ow + 2u * px;
    let at = array<u32, 4>(first, first + 1u, first + p.ow, first + p.ow + 1u);
    let plane_out = p.ph * p.pw;
    let out0 = n * p.co * plane_out + py * p.pw + px;
    for (var c = 0u; c < p.co; c++) {
        let a = table[3u * c];
        let b = table[3u * c + 1u];
        let k = table[3u * c + 2u];
        var v = vec4<f32>(
            conv3x3(a, b, k, r0.xyz, r1.xyz, r2.xyz),
            conv3x3(a, b, k, r0.yzw, r1.yzw, r2.yzw),
            conv3x3(a, b, k, r1.xyz, r2.xyz, r3.xyz),
            conv3x3(a, b, k, r1.yzw, r2.yzw, r3.yzw));
        // Selects, not branches, on the ReLU flag: lavapipe recompiles kernels whose
        // branches read uniforms whenever the values change (README, "a trap").
        v = select(v, max(v, vec4<f32>(0.0)), p.relu != 0u);
        // Strictly greater: the first maximum wins ties, as in PyTorch and pool.wgsl.
        var best = v.x;
        var best_k = 0u;
        for (var j = 1u; j < 4u; j++) {
            best_k = select(best_k, j, v[j] > best);
            best = select(best, v[j], v[j] > best);
        }
        let flags = select(0u, select(BLOCKED, 0u, best > 0.0), p.relu != 0u);
        let o = out0 + c * plane_out;
        y[o] = best;
        argmax[o] = at[best_k] | flags;
    }
}
