// Matrix products C[M,N] = A(M,K) * B(K,N) (+ bias[N]) for adapters whose subgroups are
// exactly 8 invocations wide (lavapipe): the matmul family's fastest variant there. Needs the
// SUBGROUP feature, so it lives apart from matmul.wgsl. Same Params and strides.
//
// A subgroup computes an 8-row x 32-column tile of C; each lane owns 4 columns. The 8 rows
// of A are loaded once per subgroup, spread over the lanes, and broadcast (a register
// shuffle), so each lane only loads its own columns of B: on a CPU adapter every load whose
// address differs per lane costs ~30 cycles, an FMA ~1 (see conv2d_subgroup.wgsl). Lanes
// never return early (a broadcast needs all 8); those past the edge compute on clamped,
// valid addresses and store nothing. C is overwritten.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // != 0: add bias[n] (the linear layer's forward).
    has_bias: u32,
    a_stride_m: u32,
    a_stride_k: u32,
    b_stride_k: u32,
    b_stride_n: u32,
    // 0: none, 1: ReLU, 2: ReLU's gradient mask (see `epilogue`).
    epilogue: u32,
    // != 0: workgroup rows from here on compute row sums of A (matmul_row_sums.wgsl).
    row_sums_at: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 64u;
// Subgroups per workgroup (the kernels are only used where subgroups are 8 wide).
const SUBGROUPS: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<storage, read_write> db: array<f32>;
@group(0) @binding(7) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> b4: array<vec4<f32>>;
// C as vec4s, for the NN kernel (N % 4 == 0, so rows start on a vec4).
@group(0) @binding(9) var<storage, read_write> c4: array<vec4<f32>>;

// lane0 .. lane7 (broadcasts of a vec4 from one lane) come from shaders/subgroup.wgsl.

// 8 rows x this lane's 4 columns of C.
struct Tile {
    r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>,
    r4: vec4<f32>, r5: vec4<f32>, r6: vec4<f32>, r7: vec4<f32>,
}

struct Item {
    m0: u32,
    // This lane's first column.
    n: u32,
    valid: bool,
}

// Which tile of `rows` x 32 this subgroup computes. Tiles run along M fastest, so the
// subgroups that read the same columns of B (the weights, often larger than the caches) run
// one after the other.
// `t`: the subgroup's index in the dispatch.
fn item(t: u32, lane: u32, rows: u32) -> Item {
    let m_tiles = (p.m + rows - 1u) / rows;
    let total = m_tiles * ((p.n + 31u) / 32u);
    let tc = min(t, total - 1u);
    return Item((tc % m_tiles) * rows, (tc / m_tiles) * 32u + lane * 4u, t < total);
}

fn bias4(n: u32) -> vec4<f32> {
    if (p.has_bias == 0u) { return vec4<f32>(0.0); }
    let last = p.n - 1u;
    return vec4<f32>(bias[min(n, last)], bias[min(n + 1u, last)], bias[min(n + 2u, last)], bias[min(n + 3u, last)]);
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

fn store_row(m: u32, n: u32, v: vec4<f32>) {
    if (m >= p.m) { return; }
    let r = epilogue(m, n, v + bias4(n));
    let base = m * p.n + n;
    if (n < p.n) { c[base] = r.x; }
    if (n + 1u < p.n) { c[base + 1u] = r.y; }
    if (n + 2u < p.n) { c[base + 2u] = r.z; }
    if (n + 3u < p.n) { c[base + 3u] = r.w; }
}

fn store_tile(it: Item, t: Tile) {
    if (!it.valid) { return; }
    store_row(it.m0, it.n, t.r0);
    store_row(it.m0 + 1u, it.n, t.r1);
    store_row(it.m0 + 2u, it.n, t.r2);
    store_row(it.m0 + 3u, it.n, t.r3);
    store_row(it.m0 + 4u, it.n, t.r4);
    store_row(it.m0 + 5u, it.n, t.r5);
    store_row(it.m0 + 6u, it.n, t.r6);
    store_row(it.m0 + 7u, it.n, t.r7);
}

// ---- "NT": A(m, k) and B(k, n) both contiguous along k; K, a_stride_m, b_stride_n % 4 == 0.
// Lane R loads row m0 + R of A, 4 k at a time; every lane takes dot products of each
// broadcast row with its 4 columns of B.

// One row of the tile: 4 dot products of a (4 k of A's row) with the columns' 4 k of B.
fn row_dots(acc: vec4<f32>, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    return acc + vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
}

// All 8 rows of the tile: row R takes the 4 k of A that lane R loaded (broadcast).
fn tile_dots(t: Tile, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> Tile {
    return Tile(
        row_dots(t.r0, lane0(a), b0, b1, b2, b3), row_dots(t.r1, lane1(a), b0, b1, b2, b3),
        row_dots(t.r2, lane2(a), b0, b1, b2, b3), row_dots(t.r3, lane3(a), b0, b1, b2, b3),
        row_dots(t.r4, lane4(a), b0, b1, b2, b3), row_dots(t.r5, lane5(a), b0, b1, b2, b3),
        row_dots(t.r6, lane6(a), b0, b1, b2, b3), row_dots(t.r7, lane7(a), b0, b1, b2, b3),
    );
}

@compute @workgroup_size(WG)
fn matmul_nt_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_id) sid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (row_sums(wid, nwg, li, WG)) { return; }
    let it = item(wid.x * SUBGROUPS + sid, lane, 8u);
    let sa = p.a_stride_m / 4u;
    let sb = p.b_stride_n / 4u;
    let ar = min(it.m0 + lane, p.m - 1u) * sa;
    let last = p.n - 1u;
    let c0 = min(it.n, last) * sb;
    let c1 = min(it.n + 1u, last) * sb;
    let c2 = min(it.n + 2u, last) * sb;
    let c3 = min(it.n + 3u, last) * sb;
    var t: Tile;
    for (var k = 0u; k < p.k / 4u; k++) {
        t = tile_dots(t, a4[ar + k], b4[c0 + k], b4[c1 + k], b4[c2 + k], b4[c3 + k]);
    }
    store_tile(it, t);
}

// The same for 32 rows (M >= 32): each B load feeds 32 rows instead of 8 (lane R loads rows
// R, R + 8, R + 16 and R + 24), and a workgroup is one subgroup, so that a product with few
// tiles (mlp's 32 x 128 is 4) still spreads over the CPU's threads: on lavapipe 2.1x
// faster for cnn1's first linear forward (64 x 128 x 1600), 1.6x for mlp's first layer.
@compute @workgroup_size(8)
fn matmul_nt_subgroup32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (row_sums(wid, nwg, li, 8u)) { return; }
    let it = item(wid.x, lane, 32u);
    let sa = p.a_stride_m / 4u;
    let sb = p.b_stride_n / 4u;
    let last_m = p.m - 1u;
    let a0 = min(it.m0 + lane, last_m) * sa;
    let a1 = min(it.m0 + 8u + lane, last_m) * sa;
    let a2 = min(it.m0 + 16u + lane, last_m) * sa;
    let a3 = min(it.m0 + 24u + lane, last_m) * sa;
    let last = p.n - 1u;
    let c0 = min(it.n, last) * sb;
    let c1 = min(it.n + 1u, last) * sb;
    let c2 = min(it.n + 2u, last) * sb;
    let c3 = min(it.n + 3u, last) * sb;
    var t0: Tile;
    var t1: Tile;
    var t2: Tile;
    var t3: Tile;
    for (var k = 0u; k < p.k / 4u; k++) {
        let b0 = b4[c0 + k];
        let b1 = b4[c1 + k];
        let b2 = b4[c2 + k];
        let b3 = b4[c3 + k];
        t0 = tile_dots(t0, a4[a0 + k], b0, b1, b2, b3);
        t1 = tile_dots(t1, a4[a1 + k], b0, b1, b2, b3);
        t2 = tile_dots(t2, a4[a2 + k], b0, b1, b2, b3);
        t3 = tile_dots(t3, a4[a3 + k], b0, b1, b2, b3);
    }
    store_tile(it, t0);
    store_tile(Item(it.m0 + 8u, it.n, it.valid), t1);
    store_tile(Item(it.m0 + 16u, it.n, it.valid), t2);
    store_tile(Item(it.m0 + 24u, it.n, it.valid), t3);
}

// One vec4 store per row (N % 4 == 0: a lane's 4 columns are all inside or all outside),
// half the cost of 4 scalar stores on a CPU adapter.
fn store_row4(m: u32, n: u32, v: vec4<f32>) {
    if (m < p.m) { c4[(m * p.n + n) / 4u] = epilogue(m, n, v + bias4(n)); }
}

fn store_tile4(it: Item, t: Tile) {
    if (!it.valid || it.n >= p.n) { return; }
    store_row4(it.m0, it.n, t.r0);
    store_row4(it.m0 + 1u, it.n, t.r1);
    store_row4(it.m0 + 2u, it.n, t.r2);
    store_row4(it.m0 + 3u, it.n, t.r3);
    store_row4(it.m0 + 4u, it.n, t.r4);
    store_row4(it.m0 + 5u, it.n, t.r5);
    store_row4(it.m0 + 6u, it.n, t.r6);
    store_row4(it.m0 + 7u, it.n, t.r7);
}

// ---- "NN": B(k, n) contiguous along n (N, b_stride_k % 4 == 0), A with any strides.
// A tile of 16 rows (twice the NT tile: each B load feeds 16 rows, and the NN layouts are
// the gradients, whose B loads dominate). Lane L loads A(m0 .. m0 + 16, k0 + L) (0 past K);
// step K broadcasts column k0 + K of the tile's A block and adds its outer product with row
// k0 + K of the lane's B columns.

struct Tile16 {
    lo: Tile,
    hi: Tile,
}

// t += (column of A: rows 0..3, 4..7, 8..11, 12..15) x (row of B, 4 columns).
fn outer8(t: Tile, a0: vec4<f32>, a1: vec4<f32>, b: vec4<f32>) -> Tile {
    return Tile(
        fma(vec4<f32>(a0.x), b, t.r0), fma(vec4<f32>(a0.y), b, t.r1),
        fma(vec4<f32>(a0.z), b, t.r2), fma(vec4<f32>(a0.w), b, t.r3),
        fma(vec4<f32>(a1.x), b, t.r4), fma(vec4<f32>(a1.y), b, t.r5),
        fma(vec4<f32>(a1.z), b, t.r6), fma(vec4<f32>(a1.w), b, t.r7),
    );
}

fn outer16(t: Tile16, a: array<vec4<f32>, 4>, b: vec4<f32>) -> Tile16 {
    return Tile16(outer8(t.lo, a[0], a[1], b), outer8(t.hi, a[2], a[3], b));
}

// A(m, k), or 0 outside the matrix (read at a clamped, valid address).
fn a_at(m: u32, k: u32) -> f32 {
    let v = a[min(m, p.m - 1u) * p.a_stride_m + min(k, p.k - 1u) * p.a_stride_k];
    return select(0.0, v, m < p.m && k < p.k);
}

// Rows m .. m + 3 of A's column k.
fn a_col4(m: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(a_at(m, k), a_at(m + 1u, k), a_at(m + 2u, k), a_at(m + 3u, k));
}

// The A column that lane K loaded, in every lane.
fn col_of_lane0(a: array<vec4<f32>, 4>) -> array<vec4<f32>, 4> { return array<vec4<f32>, 4>(lane0(a[0]), lane0(a[1]), lane0(a[2]), lane0(a[3])); }
fn col_of_lane1(a: array<vec4<f32>, 4>) -> array<vec4<f32>, 4> { return array<vec4<f32>, 4>(lane1(a[0]), lane1(a[1]), lane1(a[2]), lane1(a[3])); }
fn col_of_lane2(a: array<vec4<f32>, 4>) -> array<vec4<f32>, 4> { return array<vec4<f32>, 4>(lane2(a[0]), lane2(a[1]), lane2(a[2]), lane2(a[3])); }
fn col_of_lane3(a: array<vec4<f32>, 4>) -> array<vec4<f32>, 4> { return array<vec4<f32>, 4>(lane3(a[0]), lane3(a[1]), lane3(a[2]), lane3(a[3])); }
fn col_of_lane4(a: array<vec4<f32>, 4>) -> array<vec4<f32>, 4> { return array<vec4<f32>, 4>(lane4(a[0]), lane4(a[1]), lane4(a[2]), lane4(a[3])); }
fn col_of_lane5(a: array<vec4<f32>, 4>) -> array<vec4<f32>, 4> { return array<vec4<f32>, 4>(lane5(a[0]), lane5(a[1]), lane5(a[2]), lane5(a[3])); }
fn col_of_lane6(a: array<vec4<f32>, 4>) -> array<vec4<f32>, 4> { return array<vec4<f32>, 4>(lane6(a[0]), lane6(a[1]), lane6(a[2]), lane6(a[3])); }
fn col_of_lane7(a: array<vec4<f32>, 4>) -> array<vec4<f32>, 4> { return array<vec4<f32>, 4>(lane7(a[0]), lane7(a[1]), lane7(a[2]), lane7(a[3])); }

@compute @workgroup_size(WG)
fn matmul_nn_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_id) sid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (row_sums(wid, nwg, li, WG)) { return; }
    let it = item(wid.x * SUBGROUPS + sid, lane, 16u);
    let sb = p.b_stride_k / 4u;
    let col = min(it.n, p.n - 4u) / 4u;
    let last_k = p.k - 1u;
    var t: Tile16;
    for (var k0 = 0u; k0 < p.k; k0 += 8u) {
        let k = k0 + lane;
        let a = array<vec4<f32>, 4>(a_col4(it.m0, k), a_col4(it.m0 + 4u, k), a_col4(it.m0 + 8u, k), a_col4(it.m0 + 12u, k));
        // Rows of B past K meet zeros of A; they are read at the last row.
        t = outer16(t, col_of_lane0(a), b4[min(k0, last_k) * sb + col]);
        t = outer16(t, col_of_lane1(a), b4[min(k0 + 1u, last_k) * sb + col]);
        t = outer16(t, col_of_lane2(a), b4[min(k0 + 2u, last_k) * sb + col]);
        t = outer16(t, col_of_lane3(a), b4[min(k0 + 3u, last_k) * sb + col]);
        t = outer16(t, col_of_lane4(a), b4[min(k0 + 4u, last_k) * sb + col]);
        t = outer16(t, col_of_lane5(a), b4[min(k0 + 5u, last_k) * sb + col]);
        t = outer16(t, col_of_lane6(a), b4[min(k0 + 6u, last_k) * sb + col]);
        t = outer16(t, col_of_lane7(a), b4[min(k0 + 7u, last_k) * sb + col]);
    }
    store_tile4(it, t.lo);
    store_tile4(Item(it.m0 + 8u, it.n, it.valid), t.hi);
}

// ---- NN with 32 rows (M >= 32), one subgroup per workgroup (see matmul_nt_subgroup32).
// Each accumulator takes 8 steps of k in one FMA chain (loaded and stored once per 8, where
// the 16-row kernel's outer products load and store it at every k: the accumulators do not
// fit in the CPU's registers, so that traffic, not the loads of A and B, set its speed).

// acc += sum over 8 steps of k of x_k * r_k (r_k: the lane's 4 columns of B's row k).
fn chain8(acc: vec4<f32>, x0: f32, x1: f32, x2: f32, x3: f32, x4: f32, x5: f32, x6: f32, x7: f32, r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>, r4: vec4<f32>, r5: vec4<f32>, r6: vec4<f32>, r7: vec4<f32>) -> vec4<f32> {
    var a = fma(vec4<f32>(x0), r0, acc);
    a = fma(vec4<f32>(x1), r1, a);
    a = fma(vec4<f32>(x2), r2, a);
    a = fma(vec4<f32>(x3), r3, a);
    a = fma(vec4<f32>(x4), r4, a);
    a = fma(vec4<f32>(x5), r5, a);
    a = fma(vec4<f32>(x6), r6, a);
    a = fma(vec4<f32>(x7), r7, a);
    return a;
}

// 8 rows of the tile over 8 steps of k: lane K holds rows 0..3 (a0) and 4..7 (a1) of A's
// column k0 + K.
fn rows8(t: Tile, a0: vec4<f32>, a1: vec4<f32>, r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>, r4: vec4<f32>, r5: vec4<f32>, r6: vec4<f32>, r7: vec4<f32>) -> Tile {
    let p0 = lane0(a0); let p1 = lane1(a0); let p2 = lane2(a0); let p3 = lane3(a0);
    let p4 = lane4(a0); let p5 = lane5(a0); let p6 = lane6(a0); let p7 = lane7(a0);
    let q0 = lane0(a1); let q1 = lane1(a1); let q2 = lane2(a1); let q3 = lane3(a1);
    let q4 = lane4(a1); let q5 = lane5(a1); let q6 = lane6(a1); let q7 = lane7(a1);
    return Tile(
        chain8(t.r0, p0.x, p1.x, p2.x, p3.x, p4.x, p5.x, p6.x, p7.x, r0, r1, r2, r3, r4, r5, r6, r7),
        chain8(t.r1, p0.y, p1.y, p2.y, p3.y, p4.y, p5.y, p6.y, p7.y, r0, r1, r2, r3, r4, r5, r6, r7),
        chain8(t.r2, p0.z, p1.z, p2.z, p3.z, p4.z, p5.z, p6.z, p7.z, r0, r1, r2, r3, r4, r5, r6, r7),
        chain8(t.r3, p0.w, p1.w, p2.w, p3.w, p4.w, p5.w, p6.w, p7.w, r0, r1, r2, r3, r4, r5, r6, r7),
        chain8(t.r4, q0.x, q1.x, q2.x, q3.x, q4.x, q5.x, q6.x, q7.x, r0, r1, r2, r3, r4, r5, r6, r7),
        chain8(t.r5, q0.y, q1.y, q2.y, q3.y, q4.y, q5.y, q6.y, q7.y, r0, r1, r2, r3, r4, r5, r6, r7),
        chain8(t.r6, q0.z, q1.z, q2.z, q3.z, q4.z, q5.z, q6.z, q7.z, r0, r1, r2, r3, r4, r5, r6, r7),
        chain8(t.r7, q0.w, q1.w, q2.w, q3.w, q4.w, q5.w, q6.w, q7.w, r0, r1, r2, r3, r4, r5, r6, r7),
    );
}

@compute @workgroup_size(8)
fn matmul_nn_subgroup32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (row_sums(wid, nwg, li, 8u)) { return; }
    let it = item(wid.x, lane, 32u);
    let sb = p.b_stride_k / 4u;
    let col = min(it.n, p.n - 4u) / 4u;
    let last_k = p.k - 1u;
    var t0: Tile;
    var t1: Tile;
    var t2: Tile;
    var t3: Tile;
    for (var k0 = 0u; k0 < p.k; k0 += 8u) {
        let k = k0 + lane;
        // Rows of B past K meet zeros of A; they are read at the last row.
        let r0 = b4[min(k0 + 0u, last_k) * sb + col];
        let r1 = b4[min(k0 + 1u, last_k) * sb + col];
        let r2 = b4[min(k0 + 2u, last_k) * sb + col];
        let r3 = b4[min(k0 + 3u, last_k) * sb + col];
        let r4 = b4[min(k0 + 4u, last_k) * sb + col];
        let r5 = b4[min(k0 + 5u, last_k) * sb + col];
        let r6 = b4[min(k0 + 6u, last_k) * sb + col];
        let r7 = b4[min(k0 + 7u, last_k) * sb + col];
        t0 = rows8(t0, a_col4(it.m0, k), a_col4(it.m0 + 4u, k), r0, r1, r2, r3, r4, r5, r6, r7);
        t1 = rows8(t1, a_col4(it.m0 + 8u, k), a_col4(it.m0 + 12u, k), r0, r1, r2, r3, r4, r5, r6, r7);
        t2 = rows8(t2, a_col4(it.m0 + 16u, k), a_col4(it.m0 + 20u, k), r0, r1, r2, r3, r4, r5, r6, r7);
        t3 = rows8(t3, a_col4(it.m0 + 24u, k), a_col4(it.m0 + 28u, k), r0, r1, r2, r3, r4, r5, r6, r7);
    }
    store_tile4(it, t0);
    store_tile4(Item(it.m0 + 8u, it.n, it.valid), t1);
    store_tile4(Item(it.m0 + 16u, it.n, it.valid), t2);
    store_tile4(Item(it.m0 + 24u, it.n, it.valid), t3);
}
