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
    has_bias: u32,
    a_stride_m: u32,
    a_stride_k: u32,
    b_stride_k: u32,
    b_stride_n: u32,
    // 0: none, 1: ReLU, 2: ReLU's gradient mask (see `epilogue`).
    epilogue: u32,
    // != 0: workgroup rows from here on compute row sums of A (matmul_row_sums.wgsl).
    row_sums_at: u32,
    // Split-K: the terms of K each slice sums (matmul_split_partials).
    k_chunk: u32,
    _pad: u32,
}

const WG_X: u32 = 8u;
const WG_Y: u32 = 8u;
const BLOCK: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
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

// The epilogue applied to every stored value (after the bias), so the linear layer's ReLU and
// the gradient through it need no dispatch of their own: 1 = ReLU; 2 = keep where
// mask[m, n] > 0 (mask: the ReLU's output, same shape as C), else 0.
@group(0) @binding(10) var<storage, read> mask: array<f32>;

fn epilogue(m: u32, n: u32, v: vec4<f32>) -> vec4<f32> {
    if (p.epilogue == 1u) {
        return max(v, vec4<f32>(0.0));
    }
    if (p.epilogue == 2u) {
        let base = m * p.n + n;
        let last = p.m * p.n - 1u;
        let g = vec4<f32>(mask[min(base, last)], mask[min(base + 1u, last)], mask[min(base + 2u, last)], mask[min(base + 3u, last)]);
        return select(vec4<f32>(0.0), v, g > vec4<f32>(0.0));
    }
    return v;
}

fn store_row(m: u32, n0: u32, v: vec4<f32>) {
    if (m >= p.m) { return; }
    let row = epilogue(m, n0, v);
    let base = m * p.n;
    for (var j = 0u; j < BLOCK; j++) {
        if (n0 + j < p.n) {
            c[base + n0 + j] = row[j];
        }
    }
}

// C = A * B
@compute @workgroup_size(WG_X, WG_Y)
fn matmul(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (row_sums(wid, nwg, li, WG_X * WG_Y)) { return; }
    let n0 = gid.x * BLOCK;
    let m0 = gid.y * BLOCK;
    if (m0 >= p.m || n0 >= p.n) { return; }
    let acc = block_product(m0, n0);
    store_row(m0, n0, acc.r0);
    store_row(m0 + 1u, n0, acc.r1);
    store_row(m0 + 2u, n0, acc.r2);
    store_row(m0 + 3u, n0, acc.r3);
}

// bias[n0 .. n0 + 4], clamped to the last column (columns past N are not stored).
fn bias4(n0: u32) -> vec4<f32> {
    return vec4<f32>(bias[min(n0, p.n - 1u)], bias[min(n0 + 1u, p.n - 1u)], bias[min(n0 + 2u, p.n - 1u)], bias[min(n0 + 3u, p.n - 1u)]);
}

// C = A * B + bias (bias broadcast over rows): the linear layer's forward.
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_bias(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (row_sums(wid, nwg, li, WG_X * WG_Y)) { return; }
    let n0 = gid.x * BLOCK;
    let m0 = gid.y * BLOCK;
    if (m0 >= p.m || n0 >= p.n) { return; }
    let acc = block_product(m0, n0);
    let bv = bias4(n0);
    store_row(m0, n0, acc.r0 + bv);
    store_row(m0 + 1u, n0, acc.r1 + bv);
    store_row(m0 + 2u, n0, acc.r2 + bv);
    store_row(m0 + 3u, n0, acc.r3 + bv);
}

// ---------------------------------------------------------------------------------------
// vec4 variants for the three layouts of the linear layer, used when the contiguous
// dimensions are multiples of 4 (tensors are padded to 16 bytes, so vec4 views are valid).
// Loading 4 floats per access and accumulating 32-64 outputs per invocation is what makes
// matmul fast on lavapipe (DESIGN §6); the strided kernel above covers every other shape.
// p.has_bias != 0 adds bias[n] (matmul_nt4 only).

@group(0) @binding(7) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> b4: array<vec4<f32>>;

fn dot4(a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
}

fn store4(m: u32, n0: u32, x: vec4<f32>) {
    if (m >= p.m) { return; }
    let v = epilogue(m, n0, x);
    let base = m * p.n + n0;
    if (n0 < p.n) { c[base] = v.x; }
    if (n0 + 1u < p.n) { c[base + 1u] = v.y; }
    if (n0 + 2u < p.n) { c[base + 2u] = v.z; }
    if (n0 + 3u < p.n) { c[base + 3u] = v.w; }
}

// "NT": A(m, k) and B(k, n) both contiguous along k (A rows of stride a_stride_m, B "rows"
// of stride b_stride_n). 8 rows x 4 columns of C per invocation. K % 4 == 0.
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_nt4(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (row_sums(wid, nwg, li, WG_X * WG_Y)) { return; }
    let n0 = gid.x * 4u;
    let m0 = gid.y * 8u;
    if (m0 >= p.m || n0 >= p.n) { return; }
    let sa = p.a_stride_m / 4u;
    let sb = p.b_stride_n / 4u;
    let a0 = min(m0, p.m - 1u) * sa;
    let a1 = min(m0 + 1u, p.m - 1u) * sa;
    let a2 = min(m0 + 2u, p.m - 1u) * sa;
    let a3 = min(m0 + 3u, p.m - 1u) * sa;
    let a4i = min(m0 + 4u, p.m - 1u) * sa;
    let a5 = min(m0 + 5u, p.m - 1u) * sa;
    let a6 = min(m0 + 6u, p.m - 1u) * sa;
    let a7 = min(m0 + 7u, p.m - 1u) * sa;
    let rb0 = min(n0, p.n - 1u) * sb;
    let rb1 = min(n0 + 1u, p.n - 1u) * sb;
    let rb2 = min(n0 + 2u, p.n - 1u) * sb;
    let rb3 = min(n0 + 3u, p.n - 1u) * sb;
    var c0 = vec4<f32>(); var c1 = vec4<f32>(); var c2 = vec4<f32>(); var c3 = vec4<f32>();
    var c4 = vec4<f32>(); var c5 = vec4<f32>(); var c6 = vec4<f32>(); var c7 = vec4<f32>();
    for (var k = 0u; k < p.k / 4u; k++) {
        let b0 = b4[rb0 + k];
        let b1 = b4[rb1 + k];
        let b2 = b4[rb2 + k];
        let b3 = b4[rb3 + k];
        c0 += dot4(a4[a0 + k], b0, b1, b2, b3);
        c1 += dot4(a4[a1 + k], b0, b1, b2, b3);
        c2 += dot4(a4[a2 + k], b0, b1, b2, b3);
        c3 += dot4(a4[a3 + k], b0, b1, b2, b3);
        c4 += dot4(a4[a4i + k], b0, b1, b2, b3);
        c5 += dot4(a4[a5 + k], b0, b1, b2, b3);
        c6 += dot4(a4[a6 + k], b0, b1, b2, b3);
        c7 += dot4(a4[a7 + k], b0, b1, b2, b3);
    }
    var bv = vec4<f32>();
    if (p.has_bias != 0u) {
        bv = bias4(n0);
    }
    store4(m0, n0, c0 + bv);
    store4(m0 + 1u, n0, c1 + bv);
    store4(m0 + 2u, n0, c2 + bv);
    store4(m0 + 3u, n0, c3 + bv);
    store4(m0 + 4u, n0, c4 + bv);
    store4(m0 + 5u, n0, c5 + bv);
    store4(m0 + 6u, n0, c6 + bv);
    store4(m0 + 7u, n0, c7 + bv);
}

// "NN": A(m, k) read as scalars (any strides), B(k, n) contiguous along n with
// b_stride_k % 4 == 0 and N % 4 == 0. 4 rows x 8 columns of C per invocation.
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_nn4(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (row_sums(wid, nwg, li, WG_X * WG_Y)) { return; }
    let n0 = gid.x * 8u;
    let m0 = gid.y * 4u;
    if (m0 >= p.m || n0 >= p.n) { return; }
    let r0 = min(m0, p.m - 1u) * p.a_stride_m;
    let r1 = min(m0 + 1u, p.m - 1u) * p.a_stride_m;
    let r2 = min(m0 + 2u, p.m - 1u) * p.a_stride_m;
    let r3 = min(m0 + 3u, p.m - 1u) * p.a_stride_m;
    // The upper 4 columns may lie past N: read the lower ones again (not stored).
    let hi = select(n0 / 4u, n0 / 4u + 1u, n0 + 4u < p.n);
    let sb = p.b_stride_k / 4u;
    var l0 = vec4<f32>(); var h0 = vec4<f32>(); var l1 = vec4<f32>(); var h1 = vec4<f32>();
    var l2 = vec4<f32>(); var h2 = vec4<f32>(); var l3 = vec4<f32>(); var h3 = vec4<f32>();
    for (var k = 0u; k < p.k; k++) {
        let bl = b4[k * sb + n0 / 4u];
        let bh = b4[k * sb + hi];
        let ak = k * p.a_stride_k;
        let x0 = a[r0 + ak]; let x1 = a[r1 + ak]; let x2 = a[r2 + ak]; let x3 = a[r3 + ak];
        l0 += x0 * bl; h0 += x0 * bh;
        l1 += x1 * bl; h1 += x1 * bh;
        l2 += x2 * bl; h2 += x2 * bh;
        l3 += x3 * bl; h3 += x3 * bh;
    }
    store4(m0, n0, l0); store4(m0, n0 + 4u, h0);
    store4(m0 + 1u, n0, l1); store4(m0 + 1u, n0 + 4u, h1);
    store4(m0 + 2u, n0, l2); store4(m0 + 2u, n0 + 4u, h2);
    store4(m0 + 3u, n0, l3); store4(m0 + 3u, n0 + 4u, h3);
}

// "TN": A stored transposed (A(m, k) = a[k * a_stride_k + m]) and B(k, n) contiguous along n;
// M, N, a_stride_k and b_stride_k multiples of 4. 8 x 8 outer products per k.
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_tn4(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (row_sums(wid, nwg, li, WG_X * WG_Y)) { return; }
    let n0 = gid.x * 8u;
    let m0 = gid.y * 8u;
    if (m0 >= p.m || n0 >= p.n) { return; }
    let am_hi = select(m0 / 4u, m0 / 4u + 1u, m0 + 4u < p.m);
    let bn_hi = select(n0 / 4u, n0 / 4u + 1u, n0 + 4u < p.n);
    let sa = p.a_stride_k / 4u;
    let sb = p.b_stride_k / 4u;
    var l0 = vec4<f32>(); var h0 = vec4<f32>(); var l1 = vec4<f32>(); var h1 = vec4<f32>();
    var l2 = vec4<f32>(); var h2 = vec4<f32>(); var l3 = vec4<f32>(); var h3 = vec4<f32>();
    var l4 = vec4<f32>(); var h4 = vec4<f32>(); var l5 = vec4<f32>(); var h5 = vec4<f32>();
    var l6 = vec4<f32>(); var h6 = vec4<f32>(); var l7 = vec4<f32>(); var h7 = vec4<f32>();
    for (var k = 0u; k < p.k; k++) {
        let al = a4[k * sa + m0 / 4u];
        let ah = a4[k * sa + am_hi];
        let bl = b4[k * sb + n0 / 4u];
        let bh = b4[k * sb + bn_hi];
        l0 += al.x * bl; h0 += al.x * bh;
        l1 += al.y * bl; h1 += al.y * bh;
        l2 += al.z * bl; h2 += al.z * bh;
        l3 += al.w * bl; h3 += al.w * bh;
        l4 += ah.x * bl; h4 += ah.x * bh;
        l5 += ah.y * bl; h5 += ah.y * bh;
        l6 += ah.z * bl; h6 += ah.z * bh;
        l7 += ah.w * bl; h7 += ah.w * bh;
    }
    store4(m0, n0, l0); store4(m0, n0 + 4u, h0);
    store4(m0 + 1u, n0, l1); store4(m0 + 1u, n0 + 4u, h1);
    store4(m0 + 2u, n0, l2); store4(m0 + 2u, n0 + 4u, h2);
    store4(m0 + 3u, n0, l3); store4(m0 + 3u, n0 + 4u, h3);
    store4(m0 + 4u, n0, l4); store4(m0 + 4u, n0 + 4u, h4);
    store4(m0 + 5u, n0, l5); store4(m0 + 5u, n0 + 4u, h5);
    store4(m0 + 6u, n0, l6); store4(m0 + 6u, n0 + 4u, h6);
    store4(m0 + 7u, n0, l7); store4(m0 + 7u, n0 + 4u, h7);
}

// ---------------------------------------------------------------------------------------
// Workgroup-tiled variant for real GPUs: a 16x16 workgroup computes a 64x64 tile of C, each
// invocation a 4x4 block, staging 64x16 slices of A and 16x64 slices of B in workgroup
// memory so every element is fetched from global memory once per tile. Any strides.
// On lavapipe barriers cost more than they save (DESIGN §6), so it is chosen for hardware
// adapters only; the tests run it everywhere. p.has_bias != 0 adds bias[n].

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;

// tile_a's rows are padded by one: its stores walk k (consecutive invocations, consecutive
// k), and a row pitch of 64 floats would put 16 of them in one shared-memory bank.
const A_PITCH: u32 = 65u;
var<workgroup> tile_a: array<f32, 1040>; // [TILE_K][A_PITCH]: A(m, k) at k * A_PITCH + m
var<workgroup> tile_b: array<f32, 1024>; // [TILE_K][TILE]: B(k, n) at k * TILE + n

// This invocation's 4x4 block of the tile at (m_base, n_base), summed over k_begin..k_end.
fn tiled_block(m_base: u32, n_base: u32, k_begin: u32, k_end: u32, lid: vec3<u32>) -> Block {
    let t = lid.y * 16u + lid.x;
    var acc: Block;
    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        for (var r = 0u; r < 4u; r++) {
            let e = t + r * 256u;
            // A: row e / 16 of the tile, column e % 16 (consecutive threads walk k).
            let am = m_base + e / TILE_K;
            let ak = k0 + e % TILE_K;
            var av = 0.0;
            if (am < p.m && ak < k_end) { av = a[am * p.a_stride_m + ak * p.a_stride_k]; }
            tile_a[(e % TILE_K) * A_PITCH + e / TILE_K] = av;
            // B: row e / 64, column e % 64 (consecutive threads walk n).
            let bk = k0 + e / TILE;
            let bn = n_base + e % TILE;
            var bv = 0.0;
            if (bk < k_end && bn < p.n) { bv = b[bk * p.b_stride_k + bn * p.b_stride_n]; }
            tile_b[e] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let ao = kk * A_PITCH + lid.y * 4u;
            let bo = kk * TILE + lid.x * 4u;
            let av = vec4<f32>(tile_a[ao], tile_a[ao + 1u], tile_a[ao + 2u], tile_a[ao + 3u]);
            let bv = vec4<f32>(tile_b[bo], tile_b[bo + 1u], tile_b[bo + 2u], tile_b[bo + 3u]);
            acc.r0 += av.x * bv;
            acc.r1 += av.y * bv;
            acc.r2 += av.z * bv;
            acc.r3 += av.w * bv;
        }
        workgroupBarrier();
    }
    return acc;
}

@compute @workgroup_size(16, 16)
fn matmul_tiled(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (row_sums(wid, nwg, li, 256u)) { return; }
    let m_base = wid.y * TILE;
    let n_base = wid.x * TILE;
    let acc = tiled_block(m_base, n_base, 0u, p.k, lid);
    let m0 = m_base + lid.y * 4u;
    let n0 = n_base + lid.x * 4u;
    if (m0 >= p.m || n0 >= p.n) { return; }
    var bv = vec4<f32>();
    if (p.has_bias != 0u) {
        bv = bias4(n0);
    }
    store4(m0, n0, acc.r0 + bv);
    store4(m0 + 1u, n0, acc.r1 + bv);
    store4(m0 + 2u, n0, acc.r2 + bv);
    store4(m0 + 3u, n0, acc.r3 + bv);
}

// ---------------------------------------------------------------------------------------
// Split-K, for products with a long K and few output tiles (a linear layer with thousands of
// inputs at a small batch: a handful of 64x64 tiles would leave a large GPU idle, each
// looping over all of K). matmul_split_partials: the tiled product of K slice wid.z (p.k_chunk
// terms) into partials[wid.z][M][N]; matmul_split_combine: C = the slices' sum in slice
// order (fixed, so the result is deterministic), then bias, epilogue and row sums as the
// other kernels do them.

@group(0) @binding(11) var<storage, read_write> partials: array<f32>;

@compute @workgroup_size(16, 16)
fn matmul_split_partials(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let m_base = wid.y * TILE;
    let n_base = wid.x * TILE;
    let k_begin = wid.z * p.k_chunk;
    let acc = tiled_block(m_base, n_base, k_begin, min(k_begin + p.k_chunk, p.k), lid);
    let m0 = m_base + lid.y * 4u;
    let n0 = n_base + lid.x * 4u;
    let rows = array<vec4<f32>, 4>(acc.r0, acc.r1, acc.r2, acc.r3);
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + i;
        if (m >= p.m) { break; }
        let base = (wid.z * p.m + m) * p.n;
        for (var j = 0u; j < 4u; j++) {
            if (n0 + j < p.n) { partials[base + n0 + j] = rows[i][j]; }
        }
    }
}

// One invocation per 4 consecutive columns of a row of C.
@compute @workgroup_size(256)
fn matmul_split_combine(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (row_sums(wid, nwg, li, 256u)) { return; }
    let quads = (p.n + 3u) / 4u;
    let i = (wid.y * nwg.x + wid.x) * 256u + li;
    if (i >= p.m * quads) { return; }
    let m = i / quads;
    let n0 = (i - m * quads) * 4u;
    let splits = (p.k + p.k_chunk - 1u) / p.k_chunk;
    let last = p.n - 1u;
    var sum = vec4<f32>();
    for (var s = 0u; s < splits; s++) {
        let base = (s * p.m + m) * p.n;
        sum += vec4<f32>(partials[base + n0], partials[base + min(n0 + 1u, last)], partials[base + min(n0 + 2u, last)], partials[base + min(n0 + 3u, last)]);
    }
    if (p.has_bias != 0u) {
        sum += bias4(n0);
    }
    store4(m, n0, sum);
}
