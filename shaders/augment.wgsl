// Data augmentation fused into batch assembly (see src/kernels/augment.rs for the grammar
// and torchvision's semantics; that file's `example_reference` and
// `gather_augmented_reference` are the CPU twins of these kernels, draw for draw).
//
// augment_params:   one thread per example: the homography (output -> input, continuous
//                   coordinates, pixel centres at i + 0.5) composed from the geometric items,
//                   and the photometric draws, into example[b * 16 ..].
// gather_pointwise: one thread per image row: bilinear sample through the homography with
//                   zero fill, brightness, Gaussian noise and erasing, the normalisation.
// The sampling reads the images from a texture atlas (see `Atlas` in augment.rs): a
// textureGather returns a bilinear footprint's 4 texels at once.
// With contrast (the image mean) or blur (neighbours), which need the whole image, the
// same work is split into passes:
// sample_pointwise: a row per thread: the sampled, brightened pixels in [0, 1] into the
//                   output, and (contrast) each image's sum into the scratch;
// finish_pointwise: 4 rows per thread: contrast, the blur along rows and columns, noise,
//                   erasing, the normalisation.

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
    // The atlas's layout: images side by side in a row, images in a layer.
    atlas_per_row: u32,
    atlas_per_layer: u32,
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
// The gather passes run a row (28 pixels) per thread, the last pass with blur 4 rows.
const ROW_WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
// The images, 28x28 each in cells of CELL texels (zero between them), as R8 unorm.
@group(0) @binding(1) var atlas: texture_2d_array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> indices: array<u32>;
@group(0) @binding(4) var<storage, read> counter: array<u32>;
// Gathers ignore the filter; any sampler does.
@group(0) @binding(5) var atlas_sampler: sampler;
@group(0) @binding(6) var<storage, read_write> out_labels: array<u32>;
// The per-example draws (PER_EXAMPLE each), then one image sum per example (vec4-aligned
// slots, fixed point), then (contrast or blur) the batch's sampled images: the last pass
// reads its neighbours' pixels, so it cannot read them from the output it writes.
@group(0) @binding(7) var<storage, read_write> example: array<f32>;
// The same buffer as `example`, for the image sums' atomic adds.
@group(0) @binding(8) var<storage, read_write> sums: array<atomic<u32>>;
// The batch's pixels, 4 floats at a time: a thread's 4 pixels are one aligned vec4.
@group(0) @binding(9) var<storage, read_write> out_x4: array<vec4<f32>>;
// The scratch's sampled images, 4 pixels to a vec2<u32> as 16-bit unorm pairs: storage
// accesses are what the passes with contrast or blur spend their time on (lavapipe runs a
// per-lane loop for each component), and 16 bits keep the [0, 1] pixels to 8e-6.
@group(0) @binding(10) var<storage, read_write> sampled: array<vec2<u32>>;

// Contrast's image sum in fixed point: pixels are in [0, 1], so 784 of them at 2^20 fit in a
// u32, and integer adds give the same sum in any order (runs stay bit-reproducible).
const SUM_SCALE: f32 = 1048576.0;

fn mean_at(b: u32) -> u32 {
    return p.batch * PER_EXAMPLE + 4u * b;
}

// Where example b's sampled image starts in `sampled` (after the draws and the sums).
fn sampled_at(b: u32) -> u32 {
    return p.batch * (PER_EXAMPLE + 4u) / 2u + b * 196u;
}

fn pack_quad(v: vec4<f32>) -> vec2<u32> {
    return vec2<u32>(pack2x16unorm(v.xy), pack2x16unorm(v.zw));
}

fn sampled_quad(i: u32) -> vec4<f32> {
    let s = sampled[i];
    return vec4<f32>(unpack2x16unorm(s.x), unpack2x16unorm(s.y));
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

// sin and cos of x (|x| up to a few thousand) to within 2 ulp on every adapter, as the
// reference's `sin_cos` computes them: Vulkan lets the built-ins err by 2^-11, which
// SwiftShader and GPUs use, and the rotation and noise draws must agree across adapters.
// Cody-Waite reduction by pi/2 in three parts, then Cephes' single-precision polynomials.
fn sin_cos(x: f32) -> vec2<f32> {
    let j = round(x * 0.63661975);
    let r = ((x - j * 1.5703125) - j * 4.8375129699707031e-4) - j * 7.5497899548918821e-8;
    let z = r * r;
    let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
    let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
    let q = i32(j) & 3;
    if (q == 0) { return vec2<f32>(s, c); }
    if (q == 1) { return vec2<f32>(c, -s); }
    if (q == 2) { return vec2<f32>(-s, -c); }
    return vec2<f32>(-c, s);
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
            let rot = sin_cos(angle);
            let sh = sin_cos(shear);
            let tan_shear = sh.x / sh.y;
            let a_ = rot.y;
            let b_ = -rot.y * tan_shear - rot.x;
            let c_ = rot.x;
            let d_ = -rot.x * tan_shear + rot.y;
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

// The example this thread's batch slot gathers.
fn example_index(b: u32) -> u32 {
    let slot = min((counter[0] - counter[1]) * p.stride + b, p.count - 1u);
    return indices[slot];
}

// Texels from one image to the next in the atlas: 28 pixels and a zero column (row).
const CELL: u32 = 29u;

// Where example ex lies in the atlas: its layer, and the texel-space point where the
// texels of its pixels (0, 0), (1, 0), (0, 1), (1, 1) meet (pixel (0, 0) is texel
// (cell x * CELL + 1, ...), its centre at + 0.5), in normalised coordinates per texel.
struct Cell {
    layer: u32,
    corner: vec2<f32>,
    texel: vec2<f32>,
}

fn cell_of(ex: u32) -> Cell {
    let within = ex % p.atlas_per_layer;
    let x = (within % p.atlas_per_row) * CELL + 2u;
    let y = (within / p.atlas_per_row) * CELL + 2u;
    let texel = 1.0 / vec2<f32>(textureDimensions(atlas));
    return Cell(ex / p.atlas_per_layer, vec2<f32>(f32(x), f32(y)), texel);
}

// Output pixel px (in [0, 784)) of the example in `cell` through the homography rows r0..r2:
// bilinear with zero fill.
fn sample(cell: Cell, r0: vec3<f32>, r1: vec3<f32>, r2: vec3<f32>, px: u32) -> f32 {
    let o = vec3<f32>(f32(px % 28u) + 0.5, f32(px / 28u) + 0.5, 1.0);
    let w = dot(r2, o);
    let sx = dot(r0, o) / w - 0.5;
    let sy = dot(r1, o) / w - 0.5;
    let x0 = floor(sx);
    let y0 = floor(sy);
    let fx = sx - x0;
    let fy = sy - y0;
    // A footprint wholly outside the image reads nothing; one reaching a pixel past an edge
    // reads the zero texels around the image. (Written so that NaN lands here too.)
    if (!(x0 >= -1.0 && x0 <= 27.0 && y0 >= -1.0 && y0 <= 27.0)) {
        return 0.0;
    }
    // Gathered at the point its 4 texels share, so the footprint is the same on any rounding
    // of the coordinates; (x0, y0 + 1), (x0 + 1, y0 + 1), (x0 + 1, y0), (x0, y0). Whole-pixel
    // maps (flips, shifts) have fx = fy = 0 and get the one texel exactly.
    let q = textureGather(0, atlas, atlas_sampler, (cell.corner + vec2<f32>(x0, y0)) * cell.texel, cell.layer);
    return (q.w * (1.0 - fx) + q.z * fx) * (1.0 - fy)
        + (q.x * (1.0 - fx) + q.y * fx) * fy;
}

// Output pixels px0 .. px0 + 3 of the example in `cell` through the homography rows r0..r2.
fn sample_quad(cell: Cell, r0: vec3<f32>, r1: vec3<f32>, r2: vec3<f32>, px0: u32) -> vec4<f32> {
    return vec4<f32>(sample(cell, r0, r1, r2, px0), sample(cell, r0, r1, r2, px0 + 1u),
                     sample(cell, r0, r1, r2, px0 + 2u), sample(cell, r0, r1, r2, px0 + 3u));
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
        v = clamp(v + p.noise * sqrt(-2.0 * log(u1)) * sin_cos(6.2831855 * u2).y, 0.0, 1.0);
    }
    let cx = f32(px % 28u);
    let cy = f32(px / 28u);
    if (erase.z > 0.0 && cx >= erase.x && cx < erase.x + erase.z && cy >= erase.y && cy < erase.y + erase.w) {
        v = p.erase[1].y;
    }
    return (v - p.mean) * p.inv_std;
}

// finish for the 4 pixels px0 .. px0 + 3.
fn finish4(base: u32, px0: u32, v: vec4<f32>, erase: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(finish(base, px0, v.x, erase), finish(base, px0 + 1u, v.y, erase),
                     finish(base, px0 + 2u, v.z, erase), finish(base, px0 + 3u, v.w, erase));
}

// What a thread gathering image row q (of the batch) needs of its example: which one, its
// homography and its brightness. The row-0 thread also gathers the label.
struct Row {
    cell: Cell,
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
    return Row(cell_of(ex), homography_row(b, 0u), homography_row(b, 1u), homography_row(b, 2u), example[b * PER_EXAMPLE + 9u]);
}

// No item that needs the whole image (contrast's mean, blur's neighbours): one thread per
// image row, reading the example's draws once and one gather per pixel from the atlas,
// then brightness, noise and erasing pixel by pixel. No workgroup memory
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
        let v = sample_quad(row.cell, row.r0, row.r1, row.r2, px0);
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

// The passes with contrast or blur also run one thread per image row: a thread reads its
// example's draws once for 28 pixels, and contrast's sum takes one atomic add per row (adds
// to one address serialise on lavapipe: one per 4 pixels cost as much as the sampling).
// First pass with contrast or blur, one thread per image row: the sampled, brightened
// pixels in [0, 1] into the scratch, and (contrast) the row's sum into the image's.
@compute @workgroup_size(64)
fn sample_pointwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let q = linear_id(gid, nwg, ROW_WG);
    if (q >= p.batch * 28u) { return; }
    let b = q / 28u;
    let row = row_of(q);
    // Row q of the batch is the quads q * 7 ... of the batch's sampled images.
    let at = sampled_at(0u) + q * 7u;
    var sum = 0u;
    for (var i = 0u; i < 7u; i++) {
        // pack2x16unorm clamps to [0, 1]: brightness's clamp.
        let packed = pack_quad(sample_quad(row.cell, row.r0, row.r1, row.r2, (q % 28u) * 28u + 4u * i) * row.bright);
        sampled[at + i] = packed;
        // The sum of the stored (rounded) pixels, as the reference takes it.
        let out = vec4<f32>(unpack2x16unorm(packed.x), unpack2x16unorm(packed.y));
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

// The row blur of a quad's 4 pixels from the quad q0 and the quads beside it (qm1 .. qp2:
// -1 .. +2 quads away, reflected at the image's edges), weights w0 = (w(0), .., w(3)),
// w1 = (w(4), .., w(7)) for offsets |k|: every index static, so the window can stay in
// registers rather than in a private array indexed at run time.
// Terms in the order k = -r .. r, as the reference adds them.
fn row_blur(qm2: vec4<f32>, qm1: vec4<f32>, q0: vec4<f32>, qp1: vec4<f32>, qp2: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>, r: i32) -> vec4<f32> {
    var s = vec4<f32>(0.0);
    if (r >= 7) { s += w1.w * vec4<f32>(qm2.y, qm2.z, qm2.w, qm1.x); }
    if (r >= 6) { s += w1.z * vec4<f32>(qm2.z, qm2.w, qm1.x, qm1.y); }
    if (r >= 5) { s += w1.y * vec4<f32>(qm2.w, qm1.x, qm1.y, qm1.z); }
    if (r >= 4) { s += w1.x * qm1; }
    if (r >= 3) { s += w0.w * vec4<f32>(qm1.y, qm1.z, qm1.w, q0.x); }
    if (r >= 2) { s += w0.z * vec4<f32>(qm1.z, qm1.w, q0.x, q0.y); }
    if (r >= 1) { s += w0.y * vec4<f32>(qm1.w, q0.x, q0.y, q0.z); }
    s += w0.x * q0;
    if (r >= 1) { s += w0.y * vec4<f32>(q0.y, q0.z, q0.w, qp1.x); }
    if (r >= 2) { s += w0.z * vec4<f32>(q0.z, q0.w, qp1.x, qp1.y); }
    if (r >= 3) { s += w0.w * vec4<f32>(q0.w, qp1.x, qp1.y, qp1.z); }
    if (r >= 4) { s += w1.x * qp1; }
    if (r >= 5) { s += w1.y * vec4<f32>(qp1.y, qp1.z, qp1.w, qp2.x); }
    if (r >= 6) { s += w1.z * vec4<f32>(qp1.z, qp1.w, qp2.x, qp2.y); }
    if (r >= 7) { s += w1.w * vec4<f32>(qp1.w, qp2.x, qp2.y, qp2.z); }
    return s;
}

// Blur's normalised weights by distance |k| = 4 half .. 4 half + 3 (zero beyond r; kernel
// sizes up to 15): exp(-k^2 / 2 sigma^2) over their sum for k = -r .. r.
// This pass passes no array or struct to a function or back: SwiftShader leaked host memory
// on every dispatch (tens of MB a second) while `finish_pointwise` did.
fn blur_weights(r: i32, sigma: f32, half: u32) -> vec4<f32> {
    var total = 0.0;
    for (var k = -r; k <= r; k++) {
        total += gauss(f32(k), sigma);
    }
    let d = vec4<f32>(0.0, 1.0, 2.0, 3.0) + f32(4u * half);
    let w = vec4<f32>(gauss(d.x, sigma), gauss(d.y, sigma), gauss(d.z, sigma), gauss(d.w, sigma));
    return select(vec4<f32>(0.0), w / total, d <= vec4<f32>(f32(r)));
}

fn gauss(k: f32, sigma: f32) -> f32 {
    let t = k / sigma;
    return exp(-0.5 * t * t);
}

// The quads just outside a row of quads q0 .. q6, reflect-padded (pixel -j is pixel j,
// pixel 27 + j is pixel 27 - j): before(q1, q0) is pixels -4 .. -1, before(q2, q1) -8 .. -5,
// after(q6, q5) pixels 28 .. 31, after(q5, q4) 32 .. 35.
fn before(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(a.x, b.w, b.z, b.y);
}

fn after(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(a.z, a.y, a.x, b.w);
}

// Blur's weight for the signed distance d (w0: distances 0..3, w1: 4..7): zero beyond r.
// One-hot dot products rather than a vector indexed by a variable; the zero terms add
// exact zeros.
fn weight_at(w0: vec4<f32>, w1: vec4<f32>, d: i32, r: i32) -> f32 {
    let a = abs(d);
    if (a > r) {
        return 0.0;
    }
    let lanes = vec4<i32>(0, 1, 2, 3);
    return dot(w0, vec4<f32>(lanes == vec4<i32>(a))) + dot(w1, vec4<f32>(lanes + 4 == vec4<i32>(a)));
}

// Output rows per thread in the last pass: a thread loads rows y0 - r .. y0 + 3 + r once
// each (6 rows for 4 at kernel 3) where a row per thread would load 2r + 1 per output row.
const FINISH_ROWS: u32 = 4u;

// Last pass with contrast or blur, one thread per 4 rows of an image: contrast, the blur
// along rows then along columns (reflect padding), noise, erasing and the normalisation.
// Storage accesses cost lavapipe a per-lane loop each, and they are this pass's time, so
// each input row is loaded once per thread and blurred along the row in registers, then
// weighted into the 4 output rows it reaches. (A strip of 4 columns per thread, sliding
// down the strip, loaded the quads beside each strip too, with the edge strips'
// reflections diverging from the middle ones in every SIMD group.)
@compute @workgroup_size(64)
fn finish_pointwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let q = linear_id(gid, nwg, ROW_WG);
    if (q >= p.batch * (28u / FINISH_ROWS)) { return; }
    let b = q / (28u / FINISH_ROWS);
    let y0 = (q % (28u / FINISH_ROWS)) * FINISH_ROWS;
    let erase = erase_box(b);
    let base = example_stream(b);
    let ck = contrast_of(b);
    let sigma = example[b * PER_EXAMPLE + 11u];
    let image = sampled_at(b);
    if (p.blur_k == 0u || sigma <= 0.0) {
        for (var y = y0; y < y0 + FINISH_ROWS; y++) {
            let out = (b * 28u + y) * 7u;
            for (var k = 0u; k < 7u; k++) {
                out_x4[out + k] = finish4(base, y * 28u + 4u * k, contrasted(sampled_quad(image + y * 7u + k), ck), erase);
            }
        }
        return;
    }
    let r = i32(p.blur_k) / 2;
    let w0 = blur_weights(r, sigma, 0u);
    let w1 = blur_weights(r, sigma, 1u);
    // 4 output rows x 7 quads of accumulators, named: no arrays at all in this pass
    // (see blur_weights).
    var a00 = vec4<f32>(0.0); var a01 = vec4<f32>(0.0); var a02 = vec4<f32>(0.0); var a03 = vec4<f32>(0.0); var a04 = vec4<f32>(0.0); var a05 = vec4<f32>(0.0); var a06 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0); var a11 = vec4<f32>(0.0); var a12 = vec4<f32>(0.0); var a13 = vec4<f32>(0.0); var a14 = vec4<f32>(0.0); var a15 = vec4<f32>(0.0); var a16 = vec4<f32>(0.0);
    var a20 = vec4<f32>(0.0); var a21 = vec4<f32>(0.0); var a22 = vec4<f32>(0.0); var a23 = vec4<f32>(0.0); var a24 = vec4<f32>(0.0); var a25 = vec4<f32>(0.0); var a26 = vec4<f32>(0.0);
    var a30 = vec4<f32>(0.0); var a31 = vec4<f32>(0.0); var a32 = vec4<f32>(0.0); var a33 = vec4<f32>(0.0); var a34 = vec4<f32>(0.0); var a35 = vec4<f32>(0.0); var a36 = vec4<f32>(0.0);
    // Input rows in order, so each output adds its terms k = -r .. r as the reference does
    // (the zero weights beyond r add exact zeros).
    for (var i = 0; i < i32(FINISH_ROWS) + 2 * r; i++) {
        let row = image + reflect(i32(y0) - r + i) * 7u;
        // The row's 7 quads, contrasted; its reflections beyond the edges are shuffled from
        // quads already loaded.
        let q0 = contrasted(sampled_quad(row), ck);
        let q1 = contrasted(sampled_quad(row + 1u), ck);
        let q2 = contrasted(sampled_quad(row + 2u), ck);
        let q3 = contrasted(sampled_quad(row + 3u), ck);
        let q4 = contrasted(sampled_quad(row + 4u), ck);
        let q5 = contrasted(sampled_quad(row + 5u), ck);
        let q6 = contrasted(sampled_quad(row + 6u), ck);
        let qm2 = before(q2, q1);
        let qm1 = before(q1, q0);
        let q7 = after(q6, q5);
        let q8 = after(q5, q4);
        let z0 = row_blur(qm2, qm1, q0, q1, q2, w0, w1, r);
        let z1 = row_blur(qm1, q0, q1, q2, q3, w0, w1, r);
        let z2 = row_blur(q0, q1, q2, q3, q4, w0, w1, r);
        let z3 = row_blur(q1, q2, q3, q4, q5, w0, w1, r);
        let z4 = row_blur(q2, q3, q4, q5, q6, w0, w1, r);
        let z5 = row_blur(q3, q4, q5, q6, q7, w0, w1, r);
        let z6 = row_blur(q4, q5, q6, q7, q8, w0, w1, r);
        let c0 = weight_at(w0, w1, i - r, r);
        let c1 = weight_at(w0, w1, i - r - 1, r);
        let c2 = weight_at(w0, w1, i - r - 2, r);
        let c3 = weight_at(w0, w1, i - r - 3, r);
        a00 += c0 * z0; a01 += c0 * z1; a02 += c0 * z2; a03 += c0 * z3; a04 += c0 * z4; a05 += c0 * z5; a06 += c0 * z6;
        a10 += c1 * z0; a11 += c1 * z1; a12 += c1 * z2; a13 += c1 * z3; a14 += c1 * z4; a15 += c1 * z5; a16 += c1 * z6;
        a20 += c2 * z0; a21 += c2 * z1; a22 += c2 * z2; a23 += c2 * z3; a24 += c2 * z4; a25 += c2 * z5; a26 += c2 * z6;
        a30 += c3 * z0; a31 += c3 * z1; a32 += c3 * z2; a33 += c3 * z3; a34 += c3 * z4; a35 += c3 * z5; a36 += c3 * z6;
    }
    let o0 = (b * 28u + y0 + 0u) * 7u;
    let px0 = (y0 + 0u) * 28u;
    out_x4[o0 + 0u] = finish4(base, px0 + 0u, a00, erase);
    out_x4[o0 + 1u] = finish4(base, px0 + 4u, a01, erase);
    out_x4[o0 + 2u] = finish4(base, px0 + 8u, a02, erase);
    out_x4[o0 + 3u] = finish4(base, px0 + 12u, a03, erase);
    out_x4[o0 + 4u] = finish4(base, px0 + 16u, a04, erase);
    out_x4[o0 + 5u] = finish4(base, px0 + 20u, a05, erase);
    out_x4[o0 + 6u] = finish4(base, px0 + 24u, a06, erase);
    let o1 = (b * 28u + y0 + 1u) * 7u;
    let px1 = (y0 + 1u) * 28u;
    out_x4[o1 + 0u] = finish4(base, px1 + 0u, a10, erase);
    out_x4[o1 + 1u] = finish4(base, px1 + 4u, a11, erase);
    out_x4[o1 + 2u] = finish4(base, px1 + 8u, a12, erase);
    out_x4[o1 + 3u] = finish4(base, px1 + 12u, a13, erase);
    out_x4[o1 + 4u] = finish4(base, px1 + 16u, a14, erase);
    out_x4[o1 + 5u] = finish4(base, px1 + 20u, a15, erase);
    out_x4[o1 + 6u] = finish4(base, px1 + 24u, a16, erase);
    let o2 = (b * 28u + y0 + 2u) * 7u;
    let px2 = (y0 + 2u) * 28u;
    out_x4[o2 + 0u] = finish4(base, px2 + 0u, a20, erase);
    out_x4[o2 + 1u] = finish4(base, px2 + 4u, a21, erase);
    out_x4[o2 + 2u] = finish4(base, px2 + 8u, a22, erase);
    out_x4[o2 + 3u] = finish4(base, px2 + 12u, a23, erase);
    out_x4[o2 + 4u] = finish4(base, px2 + 16u, a24, erase);
    out_x4[o2 + 5u] = finish4(base, px2 + 20u, a25, erase);
    out_x4[o2 + 6u] = finish4(base, px2 + 24u, a26, erase);
    let o3 = (b * 28u + y0 + 3u) * 7u;
    let px3 = (y0 + 3u) * 28u;
    out_x4[o3 + 0u] = finish4(base, px3 + 0u, a30, erase);
    out_x4[o3 + 1u] = finish4(base, px3 + 4u, a31, erase);
    out_x4[o3 + 2u] = finish4(base, px3 + 8u, a32, erase);
    out_x4[o3 + 3u] = finish4(base, px3 + 12u, a33, erase);
    out_x4[o3 + 4u] = finish4(base, px3 + 16u, a34, erase);
    out_x4[o3 + 5u] = finish4(base, px3 + 20u, a35, erase);
    out_x4[o3 + 6u] = finish4(base, px3 + 24u, a36, erase);
}
