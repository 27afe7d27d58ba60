// 3x3, stride-1 convolution for adapters whose subgroups are exactly 8 invocations wide
// (lavapipe): the conv2d family's fastest variant there. Needs the SUBGROUP feature, so it
// lives apart from conv2d.wgsl, whose kernels run everywhere.
//
// Why subgroups: on a CPU adapter each invocation is one lane of an 8-wide SIMD vector, and a
// load whose address differs per lane costs ~30 cycles (one scalar load per lane) while an
// FMA costs ~1. So every value several lanes need is loaded once, by one lane, and
// broadcast (a register shuffle). Work is laid out so that all 8 lanes of a subgroup share
// one operand: the weights in the forward pass, the output gradient in the weight gradient.
// Accumulators are updated by one long FMA chain each (9 taps, or 4 pixels) so that they
// are loaded and stored once per chain when they spill. Lanes never return early: a
// broadcast needs all 8; lanes past the end compute a duplicate and store nothing.
//
// Entry points (outputs overwritten):
//   conv2d_forward_3x3_subgroup: out[n, o, y, x] = bias[o] + sum packed[(i*9 + t), o] * in[...]
//     over the packed weights of conv2d_pack_weights (conv2d.wgsl) with oc_pad a multiple of
//     32; serves the forward pass and, with flipped weights, the gradient to the input.
//   conv2d_backward_weight_3x3_subgroup: partials[chunk, co, ci, t] as in conv2d.wgsl's
//     conv2d_backward_weight_3x3 (reduced by conv2d_reduce_partials).

// Same layout as Params3 in conv2d.wgsl. For the weight gradient: ic = CI, ih/iw = the
// input's size, oc = CO, oh/ow = dy's size, pad = the convolution's padding.
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
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 64u;
// Subgroups per workgroup (the kernels are only used where subgroups are 8 wide).
const SUBGROUPS: u32 = 8u;

@group(0) @binding(20) var<uniform> q: Params3;
@group(0) @binding(21) var<storage, read> packed: array<vec4<f32>>;
@group(0) @binding(23) var<storage, read> src: array<f32>;
@group(0) @binding(24) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(25) var<storage, read_write> partials: array<f32>;

// lane0 .. lane7 (broadcasts of a vec4 from one lane) come from shaders/subgroup.wgsl.

// A 3x3 input window for 4 adjacent output columns: tKX_KY holds, for each of the 4
// columns, the input under tap (ky, kx).
struct Window {
    t00: vec4<f32>, t01: vec4<f32>, t02: vec4<f32>,
    t10: vec4<f32>, t11: vec4<f32>, t12: vec4<f32>,
    t20: vec4<f32>, t21: vec4<f32>, t22: vec4<f32>,
}

// src at column x of the row starting at `row`, or 0 in the padding: one clamp and one
// compare, no branch (a branch would make every later write a masked one).
fn src_col(row: u32, x: i32) -> f32 {
    let xc = clamp(x, 0, i32(q.iw) - 1);
    return select(0.0, src[row + u32(xc)], x == xc);
}

// Row yy (possibly in the padding) of the plane at `plane`, columns x0 .. x0 + 5, as the
// three tap vectors of one kernel row.
fn window_row(plane: u32, yy: i32, x0: i32) -> array<vec4<f32>, 3> {
    let inside = vec4<bool>(yy >= 0 && yy < i32(q.ih));
    let row = plane + u32(clamp(yy, 0, i32(q.ih) - 1)) * q.iw;
    let a = vec4<f32>(src_col(row, x0), src_col(row, x0 + 1), src_col(row, x0 + 2), src_col(row, x0 + 3));
    let b4 = src_col(row, x0 + 4);
    let b5 = src_col(row, x0 + 5);
    let zero = vec4<f32>(0.0);
    return array<vec4<f32>, 3>(
        select(zero, a, inside),
        select(zero, vec4<f32>(a.yzw, b4), inside),
        select(zero, vec4<f32>(a.zw, b4, b5), inside),
    );
}

fn window(plane: u32, y0: i32, x0: i32) -> Window {
    let r0 = window_row(plane, y0, x0);
    let r1 = window_row(plane, y0 + 1, x0);
    let r2 = window_row(plane, y0 + 2, x0);
    return Window(r0[0], r0[1], r0[2], r1[0], r1[1], r1[2], r2[0], r2[1], r2[2]);
}

// ---- forward (and gradient to the input) ----

// The 9 taps of 4 output channels: one vec4 (4 channels) per tap.
struct Taps {
    t0: vec4<f32>, t1: vec4<f32>, t2: vec4<f32>,
    t3: vec4<f32>, t4: vec4<f32>, t5: vec4<f32>,
    t6: vec4<f32>, t7: vec4<f32>, t8: vec4<f32>,
}

fn taps_of_lane0(w: Taps) -> Taps { return Taps(lane0(w.t0), lane0(w.t1), lane0(w.t2), lane0(w.t3), lane0(w.t4), lane0(w.t5), lane0(w.t6), lane0(w.t7), lane0(w.t8)); }
fn taps_of_lane1(w: Taps) -> Taps { return Taps(lane1(w.t0), lane1(w.t1), lane1(w.t2), lane1(w.t3), lane1(w.t4), lane1(w.t5), lane1(w.t6), lane1(w.t7), lane1(w.t8)); }
fn taps_of_lane2(w: Taps) -> Taps { return Taps(lane2(w.t0), lane2(w.t1), lane2(w.t2), lane2(w.t3), lane2(w.t4), lane2(w.t5), lane2(w.t6), lane2(w.t7), lane2(w.t8)); }
fn taps_of_lane3(w: Taps) -> Taps { return Taps(lane3(w.t0), lane3(w.t1), lane3(w.t2), lane3(w.t3), lane3(w.t4), lane3(w.t5), lane3(w.t6), lane3(w.t7), lane3(w.t8)); }
fn taps_of_lane4(w: Taps) -> Taps { return Taps(lane4(w.t0), lane4(w.t1), lane4(w.t2), lane4(w.t3), lane4(w.t4), lane4(w.t5), lane4(w.t6), lane4(w.t7), lane4(w.t8)); }
fn taps_of_lane5(w: Taps) -> Taps { return Taps(lane5(w.t0), lane5(w.t1), lane5(w.t2), lane5(w.t3), lane5(w.t4), lane5(w.t5), lane5(w.t6), lane5(w.t7), lane5(w.t8)); }
fn taps_of_lane6(w: Taps) -> Taps { return Taps(lane6(w.t0), lane6(w.t1), lane6(w.t2), lane6(w.t3), lane6(w.t4), lane6(w.t5), lane6(w.t6), lane6(w.t7), lane6(w.t8)); }
fn taps_of_lane7(w: Taps) -> Taps { return Taps(lane7(w.t0), lane7(w.t1), lane7(w.t2), lane7(w.t3), lane7(w.t4), lane7(w.t5), lane7(w.t6), lane7(w.t7), lane7(w.t8)); }

// 4 output channels x 4 columns.
struct Out4 {
    c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>,
}

// 32 output channels x 4 columns: lane K's slice of the weights feeds o4_K.
struct Out32 {
    o0: Out4, o1: Out4, o2: Out4, o3: Out4, o4: Out4, o5: Out4, o6: Out4, o7: Out4,
}

// acc += sum over the 9 taps of w_t * x_t, as one chain.
fn chain9(acc: vec4<f32>, w0: f32, w1: f32, w2: f32, w3: f32, w4: f32, w5: f32, w6: f32, w7: f32, w8: f32, x: Window) -> vec4<f32> {
    var a = fma(vec4<f32>(w0), x.t00, acc);
    a = fma(vec4<f32>(w1), x.t01, a);
    a = fma(vec4<f32>(w2), x.t02, a);
    a = fma(vec4<f32>(w3), x.t10, a);
    a = fma(vec4<f32>(w4), x.t11, a);
    a = fma(vec4<f32>(w5), x.t12, a);
    a = fma(vec4<f32>(w6), x.t20, a);
    a = fma(vec4<f32>(w7), x.t21, a);
    return fma(vec4<f32>(w8), x.t22, a);
}

// (Values in and out rather than a pointer to a struct member: naga 30's SPIR-V writer
// panics on the latter.)
fn accumulate4(a: Out4, w: Taps, x: Window) -> Out4 {
    return Out4(
        chain9(a.c0, w.t0.x, w.t1.x, w.t2.x, w.t3.x, w.t4.x, w.t5.x, w.t6.x, w.t7.x, w.t8.x, x),
        chain9(a.c1, w.t0.y, w.t1.y, w.t2.y, w.t3.y, w.t4.y, w.t5.y, w.t6.y, w.t7.y, w.t8.y, x),
        chain9(a.c2, w.t0.z, w.t1.z, w.t2.z, w.t3.z, w.t4.z, w.t5.z, w.t6.z, w.t7.z, w.t8.z, x),
        chain9(a.c3, w.t0.w, w.t1.w, w.t2.w, w.t3.w, w.t4.w, w.t5.w, w.t6.w, w.t7.w, w.t8.w, x),
    );
}

fn store_column_block(n: u32, o: u32, y: u32, x0: u32, v: vec4<f32>) {
    if (o >= q.oc) { return; }
    var b = 0.0;
    if (q.has_bias != 0u) { b = bias[o]; }
    let out = ((n * q.oc + o) * q.oh + y) * q.ow + x0;
    let r = max(v + b, vec4<f32>(q.floor));
    if (x0 < q.ow) { dst[out] = r.x; }
    if (x0 + 1u < q.ow) { dst[out + 1u] = r.y; }
    if (x0 + 2u < q.ow) { dst[out + 2u] = r.z; }
    if (x0 + 3u < q.ow) { dst[out + 3u] = r.w; }
}

fn store4(n: u32, o: u32, y: u32, x0: u32, a: Out4) {
    store_column_block(n, o, y, x0, a.c0);
    store_column_block(n, o + 1u, y, x0, a.c1);
    store_column_block(n, o + 2u, y, x0, a.c2);
    store_column_block(n, o + 3u, y, x0, a.c3);
}

// One invocation: 4 adjacent columns of two adjacent output rows. One subgroup (indeed the
// whole workgroup): the same 32 output channels (workgroup_id.y), whose weights lane K loads
// for channels 4K .. 4K + 3 and broadcasts. Two rows share the broadcast weights and two of
// their four input rows: on lavapipe every load from a buffer costs ~4 ns per lane, ~100
// lane-FMAs' worth, so loads per output decide the speed (one row: 18 + 36 per input channel
// for 4 outputs per channel; two rows: 24 + 36 for 8).
@compute @workgroup_size(WG)
fn conv2d_forward_3x3_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let x_blocks = (q.ow + 3u) / 4u;
    let y_groups = (q.oh + 3u) / 4u;
    let total = q.n * y_groups * x_blocks;
    // Items run along x, then z (past the device's limit on x); y is the channel block.
    let item = (wid.z * nwg.x + wid.x) * WG + lid;
    let i = min(item, total - 1u);
    let xb = i % x_blocks;
    let y = ((i / x_blocks) % y_groups) * 4u;
    let n = i / (x_blocks * y_groups);
    let o0 = wid.y * 32u;
    let x0 = i32(xb * 4u) - i32(q.pad);
    let y0 = i32(y) - i32(q.pad);
    // packed[(ci*9 + t) * oc_pad + o] as vec4s: tap t of this lane's 4 channels.
    let pitch = q.oc_pad / 4u;
    var r0: Out32;
    var r1: Out32;
    var r2: Out32;
    var r3: Out32;
    for (var ci = 0u; ci < q.ic; ci++) {
        let plane = (n * q.ic + ci) * q.ih * q.iw;
        let w0_ = window_row(plane, y0 + 0, x0);
        let w1_ = window_row(plane, y0 + 1, x0);
        let w2_ = window_row(plane, y0 + 2, x0);
        let w3_ = window_row(plane, y0 + 3, x0);
        let w4_ = window_row(plane, y0 + 4, x0);
        let w5_ = window_row(plane, y0 + 5, x0);
        let x0 = Window(w0_[0], w0_[1], w0_[2], w1_[0], w1_[1], w1_[2], w2_[0], w2_[1], w2_[2]);
        let x1 = Window(w1_[0], w1_[1], w1_[2], w2_[0], w2_[1], w2_[2], w3_[0], w3_[1], w3_[2]);
        let x2 = Window(w2_[0], w2_[1], w2_[2], w3_[0], w3_[1], w3_[2], w4_[0], w4_[1], w4_[2]);
        let x3 = Window(w3_[0], w3_[1], w3_[2], w4_[0], w4_[1], w4_[2], w5_[0], w5_[1], w5_[2]);
        let wb = ci * 9u * pitch + o0 / 4u + lane;
        let w = Taps(packed[wb], packed[wb + pitch], packed[wb + 2u * pitch],
                     packed[wb + 3u * pitch], packed[wb + 4u * pitch], packed[wb + 5u * pitch],
                     packed[wb + 6u * pitch], packed[wb + 7u * pitch], packed[wb + 8u * pitch]);
        let t0 = taps_of_lane0(w);
        r0.o0 = accumulate4(r0.o0, t0, x0);
        r1.o0 = accumulate4(r1.o0, t0, x1);
        r2.o0 = accumulate4(r2.o0, t0, x2);
        r3.o0 = accumulate4(r3.o0, t0, x3);
        let t1 = taps_of_lane1(w);
        r0.o1 = accumulate4(r0.o1, t1, x0);
        r1.o1 = accumulate4(r1.o1, t1, x1);
        r2.o1 = accumulate4(r2.o1, t1, x2);
        r3.o1 = accumulate4(r3.o1, t1, x3);
        let t2 = taps_of_lane2(w);
        r0.o2 = accumulate4(r0.o2, t2, x0);
        r1.o2 = accumulate4(r1.o2, t2, x1);
        r2.o2 = accumulate4(r2.o2, t2, x2);
        r3.o2 = accumulate4(r3.o2, t2, x3);
        let t3 = taps_of_lane3(w);
        r0.o3 = accumulate4(r0.o3, t3, x0);
        r1.o3 = accumulate4(r1.o3, t3, x1);
        r2.o3 = accumulate4(r2.o3, t3, x2);
        r3.o3 = accumulate4(r3.o3, t3, x3);
        let t4 = taps_of_lane4(w);
        r0.o4 = accumulate4(r0.o4, t4, x0);
        r1.o4 = accumulate4(r1.o4, t4, x1);
        r2.o4 = accumulate4(r2.o4, t4, x2);
        r3.o4 = accumulate4(r3.o4, t4, x3);
        let t5 = taps_of_lane5(w);
        r0.o5 = accumulate4(r0.o5, t5, x0);
        r1.o5 = accumulate4(r1.o5, t5, x1);
        r2.o5 = accumulate4(r2.o5, t5, x2);
        r3.o5 = accumulate4(r3.o5, t5, x3);
        let t6 = taps_of_lane6(w);
        r0.o6 = accumulate4(r0.o6, t6, x0);
        r1.o6 = accumulate4(r1.o6, t6, x1);
        r2.o6 = accumulate4(r2.o6, t6, x2);
        r3.o6 = accumulate4(r3.o6, t6, x3);
        let t7 = taps_of_lane7(w);
        r0.o7 = accumulate4(r0.o7, t7, x0);
        r1.o7 = accumulate4(r1.o7, t7, x1);
        r2.o7 = accumulate4(r2.o7, t7, x2);
        r3.o7 = accumulate4(r3.o7, t7, x3);
    }
    if (item >= total) { return; }
    let xs = xb * 4u;
    store32(n, o0, y, xs, r0);
    if (y + 1u < q.oh) { store32(n, o0, y + 1u, xs, r1); }
    if (y + 2u < q.oh) { store32(n, o0, y + 2u, xs, r2); }
    if (y + 3u < q.oh) { store32(n, o0, y + 3u, xs, r3); }
}

fn store32(n: u32, o0: u32, y: u32, xs: u32, acc: Out32) {
    store4(n, o0, y, xs, acc.o0);
    store4(n, o0 + 4u, y, xs, acc.o1);
    store4(n, o0 + 8u, y, xs, acc.o2);
    store4(n, o0 + 12u, y, xs, acc.o3);
    store4(n, o0 + 16u, y, xs, acc.o4);
    store4(n, o0 + 20u, y, xs, acc.o5);
    store4(n, o0 + 24u, y, xs, acc.o6);
    store4(n, o0 + 28u, y, xs, acc.o7);
}

// ---- gradient to the weights ----

// The 9 taps of 4 output channels: tT holds dL/dw[c, t] for the 4 channels.
struct TapSums {
    t0: vec4<f32>, t1: vec4<f32>, t2: vec4<f32>,
    t3: vec4<f32>, t4: vec4<f32>, t5: vec4<f32>,
    t6: vec4<f32>, t7: vec4<f32>, t8: vec4<f32>,
}

// 32 output channels: g_K holds channels 4K .. 4K + 3.
struct TapSums32 {
    g0: TapSums, g1: TapSums, g2: TapSums, g3: TapSums,
    g4: TapSums, g5: TapSums, g6: TapSums, g7: TapSums,
}

// Column j of m is dy of 4 channels at pixel j of the block, so (m * x_t)[c] sums
// dy[c, pixel] * x_t[pixel] over the block's 4 pixels: one FMA chain per channel and tap.
fn accumulate_taps(a: TapSums, m: mat4x4<f32>, x: Window) -> TapSums {
    return TapSums(
        a.t0 + m * x.t00, a.t1 + m * x.t01, a.t2 + m * x.t02,
        a.t3 + m * x.t10, a.t4 + m * x.t11, a.t5 + m * x.t12,
        a.t6 + m * x.t20, a.t7 + m * x.t21, a.t8 + m * x.t22,
    );
}

// dy[n, c, at] for 4 channels from c0, 0 past the last channel or when `valid` is false.
fn dy4(at: u32, c0: u32, valid: bool) -> vec4<f32> {
    let plane = q.oh * q.ow;
    let last = q.oc - 1u;
    let v = vec4<f32>(dy[at + min(c0, last) * plane], dy[at + min(c0 + 1u, last) * plane],
                      dy[at + min(c0 + 2u, last) * plane], dy[at + min(c0 + 3u, last) * plane]);
    return select(vec4<f32>(0.0), v, vec4<bool>(valid) & (vec4<u32>(c0) + vec4<u32>(0u, 1u, 2u, 3u) <= vec4<u32>(last)));
}

fn store_taps(out: u32, kk: u32, c0: u32, s: TapSums) {
    let t = array<vec4<f32>, 9>(s.t0, s.t1, s.t2, s.t3, s.t4, s.t5, s.t6, s.t7, s.t8);
    for (var c = 0u; c < 4u; c++) {
        if (c0 + c >= q.oc) { return; }
        for (var k = 0u; k < 9u; k++) {
            partials[out + (c0 + c) * kk + k] = t[k][c];
        }
    }
}

// One subgroup: 8 input channels (one per lane) x 32 output channels x the images of one
// batch chunk. The subgroup walks the output in blocks of 4 pixels of a row; lane L loads dy
// at pixel L % 4 for 16 of the 32 channels (L / 4 picks which 16), and the broadcasts
// rebuild, for every lane, dy of all 32 channels at all 4 pixels. Each lane loads its own
// input channel's window.
@compute @workgroup_size(WG)
fn conv2d_backward_weight_3x3_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let ci_blocks = (q.ic + 7u) / 8u;
    let co_blocks = (q.oc + 31u) / 32u;
    let chunks = (q.n + q.chunk - 1u) / q.chunk;
    let total = chunks * co_blocks * ci_blocks;
    let item = (wid.y * nwg.x + wid.x) * SUBGROUPS + sid;
    let g = min(item, total - 1u);
    let cib = g % ci_blocks;
    let cob = (g / ci_blocks) % co_blocks;
    let chunk = g / (ci_blocks * co_blocks);
    let ci = min(cib * 8u + lane, q.ic - 1u);
    let co0 = cob * 32u;
    let my_co = co0 + (lane / 4u) * 16u;
    let pad = i32(q.pad);
    var acc: TapSums32;
    let n_end = min(q.n, (chunk + 1u) * q.chunk);
    for (var n = chunk * q.chunk; n < n_end; n++) {
        let plane = (n * q.ic + ci) * q.ih * q.iw;
        let dy_image = n * q.oc * q.oh * q.ow;
        for (var y = 0u; y < q.oh; y++) {
            for (var x0 = 0u; x0 < q.ow; x0 += 4u) {
                let px = x0 + lane % 4u;
                let at = dy_image + y * q.ow + min(px, q.ow - 1u);
                let valid = px < q.ow;
                let d0 = dy4(at, my_co, valid);
                let d1 = dy4(at, my_co + 4u, valid);
                let d2 = dy4(at, my_co + 8u, valid);
                let d3 = dy4(at, my_co + 12u, valid);
                let x = window(plane, i32(y) - pad, i32(x0) - pad);
                acc.g0 = accumulate_taps(acc.g0, mat4x4<f32>(lane0(d0), lane1(d0), lane2(d0), lane3(d0)), x);
                acc.g1 = accumulate_taps(acc.g1, mat4x4<f32>(lane0(d1), lane1(d1), lane2(d1), lane3(d1)), x);
                acc.g2 = accumulate_taps(acc.g2, mat4x4<f32>(lane0(d2), lane1(d2), lane2(d2), lane3(d2)), x);
                acc.g3 = accumulate_taps(acc.g3, mat4x4<f32>(lane0(d3), lane1(d3), lane2(d3), lane3(d3)), x);
                acc.g4 = accumulate_taps(acc.g4, mat4x4<f32>(lane4(d0), lane5(d0), lane6(d0), lane7(d0)), x);
                acc.g5 = accumulate_taps(acc.g5, mat4x4<f32>(lane4(d1), lane5(d1), lane6(d1), lane7(d1)), x);
                acc.g6 = accumulate_taps(acc.g6, mat4x4<f32>(lane4(d2), lane5(d2), lane6(d2), lane7(d2)), x);
                acc.g7 = accumulate_taps(acc.g7, mat4x4<f32>(lane4(d3), lane5(d3), lane6(d3), lane7(d3)), x);
            }
        }
    }
    if (item >= total || cib * 8u + lane >= q.ic) { return; }
    let kk = q.ic * 9u;
    let out = chunk * q.oc * kk + ci * 9u;
    store_taps(out, kk, co0, acc.g0);
    store_taps(out, kk, co0 + 4u, acc.g1);
    store_taps(out, kk, co0 + 8u, acc.g2);
    store_taps(out, kk, co0 + 12u, acc.g3);
    store_taps(out, kk, co0 + 16u, acc.g4);
    store_taps(out, kk, co0 + 20u, acc.g5);
    store_taps(out, kk, co0 + 24u, acc.g6);
    store_taps(out, kk, co0 + 28u, acc.g7);
}
