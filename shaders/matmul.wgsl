// General matrix product C[M,N] = A(M,K) * B(K,N) (+ bias[N]) with arbitrary element strides
// for A and B, so one kernel serves the linear layer's forward (X * W^T), backward to the
// input (dY * W) and backward to the weight (dY^T * X) without transposed copies.
// C is row-major [M,N] and is overwritten (weight gradients are written, not accumulated).
//
// Each invocation computes a 4x4 block of C in registers: on lavapipe, register blocking pays
// far more than workgroup-memory tiling (DESIGN §6). Out-of-range rows/columns load a clamped
// (valid) address and are simply not stored, which keeps the inner loop branch-free.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad0: u32,
    a_stride_m: u32,
    a_stride_k: u32,
    b_stride_k: u32,
    b_stride_n: u32,
}

const WG_X: u32 = 8u;
const WG_Y: u32 = 8u;
const BLOCK: u32 = 4u;
const WG_BIAS: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> db: array<f32>;

struct Block {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

fn block_product(m0: u32, n0: u32) -> Block {
    let a0 = min(m0, p.m - 1u) * p.a_stride_m;
    let a1 = min(m0 + 1u, p.m - 1u) * p.a_stride_m;
    let a2 = min(m0 + 2u, p.m - 1u) * p.a_stride_m;
    let a3 = min(m0 + 3u, p.m - 1u) * p.a_stride_m;
    let b0 = min(n0, p.n - 1u) * p.b_stride_n;
    let b1 = min(n0 + 1u, p.n - 1u) * p.b_stride_n;
    let b2 = min(n0 + 2u, p.n - 1u) * p.b_stride_n;
    let b3 = min(n0 + 3u, p.n - 1u) * p.b_stride_n;
    var acc: Block;
    for (var kk = 0u; kk < p.k; kk++) {
        let ak = kk * p.a_stride_k;
        let bk = kk * p.b_stride_k;
        let bv = vec4<f32>(b[bk + b0], b[bk + b1], b[bk + b2], b[bk + b3]);
        acc.r0 += a[a0 + ak] * bv;
        acc.r1 += a[a1 + ak] * bv;
        acc.r2 += a[a2 + ak] * bv;
        acc.r3 += a[a3 + ak] * bv;
    }
    return acc;
}

fn store_row(m: u32, n0: u32, row: vec4<f32>) {
    if (m >= p.m) { return; }
    let base = m * p.n;
    for (var j = 0u; j < BLOCK; j++) {
        if (n0 + j < p.n) {
            c[base + n0 + j] = row[j];
        }
    }
}

// C = A * B
@compute @workgroup_size(WG_X, WG_Y)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * BLOCK;
    let m0 = gid.y * BLOCK;
    if (m0 >= p.m || n0 >= p.n) { return; }
    let acc = block_product(m0, n0);
    store_row(m0, n0, acc.r0);
    store_row(m0 + 1u, n0, acc.r1);
    store_row(m0 + 2u, n0, acc.r2);
    store_row(m0 + 3u, n0, acc.r3);
}

// C = A * B + bias (bias broadcast over rows): the linear layer's forward.
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_bias(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * BLOCK;
    let m0 = gid.y * BLOCK;
    if (m0 >= p.m || n0 >= p.n) { return; }
    let acc = block_product(m0, n0);
    let bv = vec4<f32>(
        bias[min(n0, p.n - 1u)],
        bias[min(n0 + 1u, p.n - 1u)],
        bias[min(n0 + 2u, p.n - 1u)],
        bias[min(n0 + 3u, p.n - 1u)],
    );
    store_row(m0, n0, acc.r0 + bv);
    store_row(m0 + 1u, n0, acc.r1 + bv);
    store_row(m0 + 2u, n0, acc.r2 + bv);
    store_row(m0 + 3u, n0, acc.r3 + bv);
}

// db[n] = sum over rows m of dy[m, n]   (uses p.m, p.n). Overwrites db.
@compute @workgroup_size(WG_BIAS)
fn bias_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    if (col >= p.n) { return; }
    var s = 0.0;
    for (var m = 0u; m < p.m; m++) {
        s += dy[m * p.n + col];
    }
    db[col] = s;
}
