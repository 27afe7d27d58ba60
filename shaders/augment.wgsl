// Data augmentation fused into batch assembly (see src/kernels/augment.rs for the grammar
// and torchvision's semantics; that file's `example_reference` and
// `gather_augmented_reference` are the CPU twins of these kernels, draw for draw).
//
// augment_params:   one thread per example: the homography (output -> input, continuous
//                   coordinates, pixel centres at i + 0.5) composed from the geometric items,
//                   and the photometric draws, into example[b * 16 ..].
// gather_pointwise: one thread per image row: bilinear sample through the homography with
//                   zero fill, brightness, Gaussian noise and erasing, the normalisation.
// With contrast (the image mean) or blur (neighbours), which need the whole image, the
// same work is split into passes:
// sample_pointwise: a row per thread: the sampled, brightened pixels in [0, 1] into the
//                   output, and (contrast) each image's sum into the scratch;
// blur_rows:        a row per thread: the contrasted image blurred along rows (reflect
//                   padding) into the scratch (unblurred where the example drew no blur);
// finish_pointwise: a strip of 4 columns per thread: the column blur (or contrast alone),
//                   noise, erasing, the normalisation.

struct Params {
    batch: u32,
    count: u32,
    seed: u32,
    stride: u32,
    mean: f32,
    inv_std: f32,
    shift: u32,
    photometric: u32,
    flip: f32,
    vflip: f32,
    brightness: f32,
    contrast: f32,
    noise: f32,
    blur_k: u32,
    _pad0: u32,
    _pad1: u32,
    // (p, scale lo, scale hi, log ratio lo, log ratio hi)
    resized_crop: array<vec4<f32>, 2>,
    // (p, degrees, translate, scale lo, scale hi, shear degrees)
    affine: array<vec4<f32>, 2>,
    // (p, distortion)
    perspective: vec4<f32>,
    // (p, kernel size, sigma lo, sigma hi)
    blur: vec4<f32>,
    // (p, scale lo, scale hi, log ratio lo, log ratio hi, value)
    erase: array<vec4<f32>, 2>,
}

const PIXELS: u32 = 784u;
const SIDE: f32 = 28.0;
const PER_EXAMPLE: u32 = 16u;
// The gather passes run a row (28 pixels) or a strip of 4 columns per thread.
const ROW_WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> indices: array<u32>;
@group(0) @binding(4) var<storage, read_write> counter: array<u32>;
// Binding 5 is free: every pass writes the batch through out_x4.
@group(0) @binding(6) var<storage, read_write> out_labels: array<u32>;
// The per-example draws (PER_EXAMPLE each), then one image sum per example (vec4-aligned
// slots, fixed point), then a batch of images for the row-blurred pass.
@group(0) @binding(7) var<storage, read_write> example: array<f32>;
// The same buffer as `example`, for the image sums' atomic adds.
@group(0) @binding(8) var<storage, read_write> sums: array<atomic<u32>>;
// The batch's pixels, and `example` again, 4 floats at a time: a thread's 4 pixels are one
// aligned vec4 (784 and every offset in the scratch are multiples of 4).
@group(0) @binding(9) var<storage, read_write> out_x4: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> example4: array<vec4<f32>>;

// Contrast's image sum in fixed point: pixels are in [0, 1], so 784 of them at 2^20 fit in a
// u32, and integer adds give the same sum in any order (runs stay bit-reproducible).
const SUM_SCALE: f32 = 1048576.0;

fn mean_at(b: u32) -> u32 {
    return p.batch * PER_EXAMPLE + 4u * b;
}

fn rows_at(b: u32) -> u32 {
    return p.batch * (PER_EXAMPLE + 4u) + b * PIXELS;
}

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>, wg: u32) -> u32 {
    return gid.x + gid.y * nwg.x * wg;
}

// The hash stream of example slot b's item `salt`: hash(salt ^ example_stream(b)), the
// per-example part computed once where a thread draws for many pixels (noise).
fn example_stream(b: u32) -> u32 {
    return hash(b ^ hash(counter[0] ^ hash(p.seed ^ 0xa1160000u)));
}

fn stream(b: u32, salt: u32) -> u32 {
    return hash(salt ^ example_stream(b));
}

fn draw(h: u32, n: u32) -> f32 {
    return f32(hash(h ^ (n * 0x9e3779b9u)) >> 8u) * (1.0 / 16777216.0);
}

// Row-major 3x3 (as the Rust reference writes it) as a WGSL matrix (column-major).
fn rows(r0: vec3<f32>, r1: vec3<f32>, r2: vec3<f32>) -> mat3x3<f32> {
    return transpose(mat3x3<f32>(r0, r1, r2));
}

// torchvision's box draw: up to ten tries; (x, y, w, h), w = 0 when none fits. `crop`: the
// RandomResizedCrop test (0 < side <= 28), else RandomErasing's (1 <= side < 28).
fn random_box(h: u32, s0: f32, s1: f32, r0: f32, r1: f32, crop: bool) -> vec4<f32> {
    for (var attempt = 0u; attempt < 10u; attempt++) {
        let n = 1u + attempt * 4u;
        let area = SIDE * SIDE * (s0 + (s1 - s0) * draw(h, n));
        let aspect = exp(r0 + (r1 - r0) * draw(h, n + 1u));
        let w = round(sqrt(area * aspect));
        let hh = round(sqrt(area / aspect));
        var fits = w >= 1.0 && w < SIDE && hh >= 1.0 && hh < SIDE;
        if (crop) {
            fits = w > 0.0 && w <= SIDE && hh > 0.0 && hh <= SIDE;
        }
        if (fits) {
            let x = floor(draw(h, n + 2u) * (SIDE - w + 1.0));
            let y = floor(draw(h, n + 3u) * (SIDE - hh + 1.0));
            return vec4<f32>(x, y, w, hh);
        }
    }
    return vec4<f32>(0.0);
}

// torchvision's _get_perspective_coeffs: the 8x8 system solved by Gauss-Jordan elimination
// with partial pivoting; maps output to input index coordinates.
fn perspective_matrix(end: array<vec2<f32>, 4>) -> mat3x3<f32> {
    let start = array<vec2<f32>, 4>(vec2<f32>(0.0, 0.0), vec2<f32>(27.0, 0.0), vec2<f32>(27.0, 27.0), vec2<f32>(0.0, 27.0));
    var a: array<array<f32, 9>, 8>;
    for (var i = 0u; i < 4u; i++) {
        let x = end[i].x;
        let y = end[i].y;
        let u = start[i].x;
        let v = start[i].y;
        a[2u * i] = array<f32, 9>(x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u);
        a[2u * i + 1u] = array<f32, 9>(0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v);
    }
    for (var col = 0u; col < 8u; col++) {
        var pivot = col;
        for (var r = col + 1u; r < 8u; r++) {
            if (abs(a[r][col]) > abs(a[pivot][col])) {
                pivot = r;
            }
        }
        let tmp = a[col];
        a[col] = a[pivot];
        a[pivot] = tmp;
        let d = a[col][col];
        if (abs(d) < 1e-12) {
            return mat3x3<f32>(vec3<f32>(1.0, 0.0, 0.0), vec3<f32>(0.0, 1.0, 0.0), vec3<f32>(0.0, 0.0, 1.0));
        }
        for (var r = 0u; r < 8u; r++) {
            if (r != col) {
                let f = a[r][col] / d;
                for (var c = col; c < 9u; c++) {
                    a[r][c] -= f * a[col][c];
                }
            }
        }
    }
    var c: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        c[i] = a[i][8] / a[i][i];
    }
    return rows(vec3<f32>(c[0], c[1], c[2]), vec3<f32>(c[3], c[4], c[5]), vec3<f32>(c[6], c[7], 1.0));
}

@compute @workgroup_size(64)
fn augment_params(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = linear_id(gid, nwg, 64u);
    if (b >= p.batch) { return; }
    var m = mat3x3<f32>(vec3<f32>(1.0, 0.0, 0.0), vec3<f32>(0.0, 1.0, 0.0), vec3<f32>(0.0, 0.0, 1.0));
    let legacy = hash(b ^ hash(counter[0] ^ hash(p.seed ^ 0xa1160000u)));
    if (p.flip > 0.0 && draw(stream(b, 1u), 0u) < p.flip) {
        m = m * rows(vec3<f32>(-1.0, 0.0, SIDE), vec3<f32>(0.0, 1.0, 0.0), vec3<f32>(0.0, 0.0, 1.0));
    }
    if (p.vflip > 0.0 && draw(stream(b, 2u), 0u) < p.vflip) {
        m = m * rows(vec3<f32>(1.0, 0.0, 0.0), vec3<f32>(0.0, -1.0, SIDE), vec3<f32>(0.0, 0.0, 1.0));
    }
    if (p.shift > 0u) {
        let span = 2u * p.shift + 1u;
        let dx = f32((legacy >> 8u) % span) - f32(p.shift);
        let dy = f32((legacy >> 16u) % span) - f32(p.shift);
        m = m * rows(vec3<f32>(1.0, 0.0, -dx), vec3<f32>(0.0, 1.0, -dy), vec3<f32>(0.0, 0.0, 1.0));
    }
    let rc0 = p.resized_crop[0];
    let rc1 = p.resized_crop[1];
    if (rc0.x > 0.0) {
        let h = stream(b, 3u);
        if (draw(h, 0u) < rc0.x) {
            var box = random_box(h, rc0.y, rc0.z, rc0.w, rc1.x, true);
            if (box.z == 0.0) {
                box = vec4<f32>(0.0, 0.0, SIDE, SIDE);
            }
            m = m * rows(vec3<f32>(box.z / SIDE, 0.0, box.x), vec3<f32>(0.0, box.w / SIDE, box.y), vec3<f32>(0.0, 0.0, 1.0));
        }
    }
    let af0 = p.affine[0];
    let af1 = p.affine[1];
    if (af0.x > 0.0) {
        let h = stream(b, 4u);
        if (draw(h, 0u) < af0.x) {
            let deg = af0.y;
            let angle = radians(-deg + 2.0 * deg * draw(h, 1u));
            let max_t = af0.z * SIDE;
            let tx = round(-max_t + 2.0 * max_t * draw(h, 2u));
            let ty = round(-max_t + 2.0 * max_t * draw(h, 3u));
            let scale = af0.w + (af1.x - af0.w) * draw(h, 4u);
            let shear = radians(-af1.y + 2.0 * af1.y * draw(h, 5u));
            let a_ = cos(angle);
            let b_ = -cos(angle) * tan(shear) - sin(angle);
            let c_ = sin(angle);
            let d_ = -sin(angle) * tan(shear) + cos(angle);
            let i0 = d_ / scale;
            let i1 = -b_ / scale;
            let i3 = -c_ / scale;
            let i4 = a_ / scale;
            let cx = SIDE / 2.0;
            let i2 = i0 * (-cx - tx) + i1 * (-cx - ty) + cx;
            let i5 = i3 * (-cx - tx) + i4 * (-cx - ty) + cx;
            m = m * rows(vec3<f32>(i0, i1, i2), vec3<f32>(i3, i4, i5), vec3<f32>(0.0, 0.0, 1.0));
        }
    }
    if (p.perspective.x > 0.0) {
        let h = stream(b, 5u);
        if (draw(h, 0u) < p.perspective.x) {
            let dist = floor(p.perspective.y * 14.0);
            let end = array<vec2<f32>, 4>(
                vec2<f32>(floor(draw(h, 1u) * (dist + 1.0)), floor(draw(h, 2u) * (dist + 1.0))),
                vec2<f32>(SIDE - dist - 1.0 + floor(draw(h, 3u) * (dist + 1.0)), floor(draw(h, 4u) * (dist + 1.0))),
                vec2<f32>(SIDE - dist - 1.0 + floor(draw(h, 5u) * (dist + 1.0)), SIDE - dist - 1.0 + floor(draw(h, 6u) * (dist + 1.0))),
                vec2<f32>(floor(draw(h, 7u) * (dist + 1.0)), SIDE - dist - 1.0 + floor(draw(h, 8u) * (dist + 1.0))),
            );
            let to_index = rows(vec3<f32>(1.0, 0.0, -0.5), vec3<f32>(0.0, 1.0, -0.5), vec3<f32>(0.0, 0.0, 1.0));
            let to_cont = rows(vec3<f32>(1.0, 0.0, 0.5), vec3<f32>(0.0, 1.0, 0.5), vec3<f32>(0.0, 0.0, 1.0));
            m = m * (to_cont * (perspective_matrix(end) * to_index));
        }
    }
    let base = b * PER_EXAMPLE;
    // Row-major, as the reference stores it.
    for (var r = 0u; r < 3u; r++) {
        for (var c = 0u; c < 3u; c++) {
            example[base + r * 3u + c] = m[c][r];
        }
    }
    var bright = 1.0;
    if (p.brightness > 0.0) {
        let lo = max(1.0 - p.brightness, 0.0);
        bright = lo + (1.0 + p.brightness - lo) * draw(stream(b, 6u), 0u);
    }
    var contrast = 1.0;
    if (p.contrast > 0.0) {
        let lo = max(1.0 - p.contrast, 0.0);
        contrast = lo + (1.0 + p.contrast - lo) * draw(stream(b, 7u), 0u);
    }
    var sigma = 0.0;
    if (p.blur.x > 0.0) {
        let h = stream(b, 8u);
        if (draw(h, 0u) < p.blur.x) {
            sigma = p.blur.z + (p.blur.w - p.blur.z) * draw(h, 1u);
        }
    }
    var erase = vec4<f32>(0.0);
    let er0 = p.erase[0];
    let er1 = p.erase[1];
    if (er0.x > 0.0) {
        let h = stream(b, 9u);
        if (draw(h, 0u) < er0.x) {
            erase = random_box(h, er0.y, er0.z, -er1.x, -er0.w, false);
        }
    }
    example[base + 9u] = bright;
    example[base + 10u] = contrast;
    example[base + 11u] = sigma;
    example[base + 12u] = erase.x;
    example[base + 13u] = erase.y;
    example[base + 14u] = erase.z;
    example[base + 15u] = erase.w;
    // sample_pointwise accumulates contrast's image sum here (0.0 is the u32 0).
    example[mean_at(b)] = 0.0;
}

fn source_byte(ex: u32, x: i32, y: i32) -> f32 {
    if (x < 0 || x >= 28 || y < 0 || y >= 28) {
        return 0.0;
    }
    let i = ex * PIXELS + u32(y) * 28u + u32(x);
    return f32((images[i / 4u] >> (8u * (i % 4u))) & 0xffu) / 255.0;
}

// The example this thread's batch slot gathers.
fn example_index(b: u32) -> u32 {
    let slot = min((counter[0] - counter[1]) * p.stride + b, p.count - 1u);
    return indices[slot];
}

// Output pixel px (in [0, 784)) of example `ex` through the homography rows r0..r2:
// bilinear with zero fill.
fn sample(ex: u32, r0: vec3<f32>, r1: vec3<f32>, r2: vec3<f32>, px: u32) -> f32 {
    let o = vec3<f32>(f32(px % 28u) + 0.5, f32(px / 28u) + 0.5, 1.0);
    let w = dot(r2, o);
    let sx = dot(r0, o) / w - 0.5;
    let sy = dot(r1, o) / w - 0.5;
    let x0 = floor(sx);
    let y0 = floor(sy);
    let fx = sx - x0;
    let fy = sy - y0;
    let xi = i32(x0);
    let yi = i32(y0);
    var v = source_byte(ex, xi, yi);
    // Whole-pixel maps (flips, shifts) land on pixel centres: one read is exact.
    if (fx != 0.0 || fy != 0.0) {
        v = (v * (1.0 - fx) + source_byte(ex, xi + 1, yi) * fx) * (1.0 - fy)
            + (source_byte(ex, xi, yi + 1) * (1.0 - fx) + source_byte(ex, xi + 1, yi + 1) * fx) * fy;
    }
    return v;
}

// Output pixels px0 .. px0 + 3 of example ex through the homography rows r0..r2.
fn sample_quad(ex: u32, r0: vec3<f32>, r1: vec3<f32>, r2: vec3<f32>, px0: u32) -> vec4<f32> {
    return vec4<f32>(sample(ex, r0, r1, r2, px0), sample(ex, r0, r1, r2, px0 + 1u),
                     sample(ex, r0, r1, r2, px0 + 2u), sample(ex, r0, r1, r2, px0 + 3u));
}

fn gather_label(b: u32, ex: u32) {
    out_labels[b] = (labels[ex / 4u] >> (8u * (ex % 4u))) & 0xffu;
}

fn homography_row(b: u32, r: u32) -> vec3<f32> {
    let i = b * PER_EXAMPLE + 3u * r;
    return vec3<f32>(example[i], example[i + 1u], example[i + 2u]);
}

fn erase_box(b: u32) -> vec4<f32> {
    let i = b * PER_EXAMPLE + 12u;
    return vec4<f32>(example[i], example[i + 1u], example[i + 2u], example[i + 3u]);
}

// Noise and erasing (the box from erase_box), the items after blur, then the normalisation,
// of the pixel px in [0, 1].
// `base` is example_stream(b).
fn finish(base: u32, px: u32, value: f32, erase: vec4<f32>) -> f32 {
    var v = value;
    if (p.noise > 0.0) {
        let h = hash((10u + px) ^ base);
        let u1 = max(draw(h, 0u), 1e-7);
        let u2 = draw(h, 1u);
        v = clamp(v + p.noise * sqrt(-2.0 * log(u1)) * cos(6.2831855 * u2), 0.0, 1.0);
    }
    let cx = f32(px % 28u);
    let cy = f32(px / 28u);
    if (erase.z > 0.0 && cx >= erase.x && cx < erase.x + erase.z && cy >= erase.y && cy < erase.y + erase.w) {
        v = p.erase[1].y;
    }
    return (v - p.mean) * p.inv_std;
}

// What a thread gathering image row q (of the batch) needs of its example: which one, its
// homography and its brightness. The row-0 thread also gathers the label.
struct Row {
    ex: u32,
    r0: vec3<f32>,
    r1: vec3<f32>,
    r2: vec3<f32>,
    bright: f32,
}

fn row_of(q: u32) -> Row {
    let b = q / 28u;
    let ex = example_index(b);
    if (q % 28u == 0u) {
        gather_label(b, ex);
    }
    return Row(ex, homography_row(b, 0u), homography_row(b, 1u), homography_row(b, 2u), example[b * PER_EXAMPLE + 9u]);
}

// No item that needs the whole image (contrast's mean, blur's neighbours): one thread per
// image row, reading the example's draws once and its 1-4 source bytes per pixel straight
// from the data set, then brightness, noise and erasing pixel by pixel. No workgroup memory
// or barriers, and the per-example loads shared by 28 pixels (a row per thread: 1.5x faster
// than 4 pixels per thread on lavapipe, 2-3x faster than a workgroup per example).
@compute @workgroup_size(64)
fn gather_pointwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let q = linear_id(gid, nwg, ROW_WG);
    if (q >= p.batch * 28u) { return; }
    let b = q / 28u;
    let row = row_of(q);
    let erase = erase_box(b);
    let base = example_stream(b);
    for (var i = 0u; i < 7u; i++) {
        let px0 = (q % 28u) * 28u + 4u * i;
        let v = sample_quad(row.ex, row.r0, row.r1, row.r2, px0);
        var out: vec4<f32>;
        for (var k = 0u; k < 4u; k++) {
            if (p.photometric != 0u) {
                out[k] = finish(base, px0 + k, clamp(v[k] * row.bright, 0.0, 1.0), erase);
            } else {
                out[k] = (v[k] - p.mean) * p.inv_std;
            }
        }
        out_x4[q * 7u + i] = out;
    }
}

// The passes with contrast or blur also run one thread per image row or column strip: a
// thread reads its example's draws once for 28 or 112 pixels, contrast's sum takes one
// atomic add per row (adds to one address serialise on lavapipe: one per 4 pixels cost as
// much as the sampling), and a blur reads each neighbour once.
// First pass with contrast or blur, one thread per image row: the sampled, brightened
// pixels in [0, 1] into the output, and (contrast) the row's sum into the image's.
@compute @workgroup_size(64)
fn sample_pointwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let q = linear_id(gid, nwg, ROW_WG);
    if (q >= p.batch * 28u) { return; }
    let b = q / 28u;
    let row = row_of(q);
    // Row q of the batch is the output's quads q * 7 ...
    var sum = 0u;
    for (var i = 0u; i < 7u; i++) {
        let out = clamp(sample_quad(row.ex, row.r0, row.r1, row.r2, (q % 28u) * 28u + 4u * i) * row.bright, vec4<f32>(0.0), vec4<f32>(1.0));
        out_x4[q * 7u + i] = out;
        sum += u32(round((out.x + out.y + out.z + out.w) * SUM_SCALE));
    }
    if (p.contrast > 0.0) {
        atomicAdd(&sums[mean_at(b)], sum);
    }
}

// Contrast's factor c and offset (1 - c) * mean of example b: v -> clamp(c v + offset).
fn contrast_of(b: u32) -> vec2<f32> {
    if (p.contrast > 0.0) {
        let c = example[b * PER_EXAMPLE + 10u];
        let mean = f32(bitcast<u32>(example[mean_at(b)])) / (SUM_SCALE * f32(PIXELS));
        return vec2<f32>(c, (1.0 - c) * mean);
    }
    return vec2<f32>(1.0, 0.0);
}

fn contrasted(v: vec4<f32>, k: vec2<f32>) -> vec4<f32> {
    if (p.contrast > 0.0) {
        return clamp(k.x * v + k.y, vec4<f32>(0.0), vec4<f32>(1.0));
    }
    return v;
}

fn reflect(i: i32) -> u32 {
    var j = abs(i);
    if (j > 27) {
        j = 54 - j;
    }
    return u32(j);
}

// Blur's normalised weights for offsets -r..r (r <= 7: kernel sizes up to 15).
fn blur_weights(r: i32, sigma: f32) -> array<f32, 15> {
    var w: array<f32, 15>;
    var total = 0.0;
    for (var k = -r; k <= r; k++) {
        let t = f32(k) / sigma;
        w[k + r] = exp(-0.5 * t * t);
        total += w[k + r];
    }
    for (var k = 0; k <= 2 * r; k++) {
        w[k] /= total;
    }
    return w;
}

// With blur, one thread per image row: the contrasted row (read once) blurred along the
// row, reflect padding, into the scratch.
@compute @workgroup_size(64)
fn blur_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let q = linear_id(gid, nwg, ROW_WG);
    if (q >= p.batch * 28u) { return; }
    let b = q / 28u;
    let sigma = example[b * PER_EXAMPLE + 11u];
    let ck = contrast_of(b);
    let at = (rows_at(b) + (q % 28u) * 28u) / 4u;
    var row: array<f32, 28>;
    for (var i = 0u; i < 7u; i++) {
        let v = contrasted(out_x4[q * 7u + i], ck);
        if (sigma <= 0.0) {
            example4[at + i] = v;
        }
        row[4u * i] = v.x;
        row[4u * i + 1u] = v.y;
        row[4u * i + 2u] = v.z;
        row[4u * i + 3u] = v.w;
    }
    if (sigma <= 0.0) { return; }
    let r = i32(p.blur_k - 1u) / 2;
    let w = blur_weights(r, sigma);
    for (var i = 0; i < 7; i++) {
        var s = vec4<f32>(0.0);
        for (var k = -r; k <= r; k++) {
            let x = 4 * i + k;
            s += w[k + r] * vec4<f32>(row[reflect(x)], row[reflect(x + 1)], row[reflect(x + 2)], row[reflect(x + 3)]);
        }
        example4[at + u32(i)] = s;
    }
}

// Last pass with contrast or blur, one thread per strip of 4 columns of an image: the column
// blur of the row-blurred scratch (each of its 28 rows read once) or contrast alone, then
// noise, erasing and the normalisation.
@compute @workgroup_size(64)
fn finish_pointwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let q = linear_id(gid, nwg, ROW_WG);
    if (q >= p.batch * 7u) { return; }
    let b = q / 7u;
    let c = q % 7u;
    let erase = erase_box(b);
    let base = example_stream(b);
    let ck = contrast_of(b);
    let sigma = example[b * PER_EXAMPLE + 11u];
    let blurred = p.blur_k != 0u && sigma > 0.0;
    let r = i32(p.blur_k) / 2;
    var w: array<f32, 15>;
    // The strip's column of vec4s, from the row-blurred scratch (blur) or the sampled output (contrast).
    var col: array<vec4<f32>, 28>;
    let at = rows_at(b) / 4u + c;
    for (var y = 0u; y < 28u; y++) {
        if (p.blur_k == 0u) {
            col[y] = contrasted(out_x4[b * 196u + y * 7u + c], ck);
        } else {
            col[y] = example4[at + y * 7u];
        }
    }
    if (blurred) {
        w = blur_weights(r, sigma);
    }
    for (var y = 0; y < 28; y++) {
        var v = col[y];
        if (blurred) {
            v = vec4<f32>(0.0);
            for (var k = -r; k <= r; k++) {
                v += w[k + r] * col[reflect(y + k)];
            }
        }
        let px0 = u32(y) * 28u + 4u * c;
        var out: vec4<f32>;
        for (var j = 0u; j < 4u; j++) {
            out[j] = finish(base, px0 + j, v[j], erase);
        }
        out_x4[b * 196u + u32(y) * 7u + c] = out;
    }
}
