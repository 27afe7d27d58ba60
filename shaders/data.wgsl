// Batch assembly on the GPU: gathers the examples of the current step from the u8 data set
// (uploaded once, 4 pixels per u32), normalises them to f32 and optionally augments them
// (random horizontal flip, random shift with zero fill), and writes their labels as u32.
//
// The examples of step s are indices[(counter[0] - counter[1]) * stride + b]: counter[0] is the
// global step and counter[1] the step at which the current index list starts, both on the
// GPU, so a whole epoch can be recorded without per-step uploads. Outputs are overwritten.

struct Params {
    batch: u32,
    count: u32,
    flip: u32,
    max_shift: u32,
    mean: f32,
    inv_std: f32,
    seed: u32,
    // Examples per full step: the partial last batch starts at (step - start) * stride.
    stride: u32,
}

const WG: u32 = 256u;
const SIDE: u32 = 28u;
const PIXELS: u32 = 784u;
const QUADS: u32 = 196u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> indices: array<u32>;
@group(0) @binding(4) var<storage, read> counter: array<u32>;
@group(0) @binding(5) var<storage, read_write> out_x: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> out_labels: array<u32>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

fn byte_at(base: u32, i: u32) -> u32 {
    let b = base + i;
    return (images[b / 4u] >> (8u * (b % 4u))) & 0xffu;
}

// One thread per 4 horizontally adjacent pixels (28 = 7 * 4, so a quad never leaves its row):
// the example's index, the step and the augmentation draw are read once per quad, and an
// unaugmented quad is one aligned u32 of the data set. Per-pixel threads spent most of their
// time on those shared loads on lavapipe.
@compute @workgroup_size(WG)
fn gather_batch(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let q = linear_id(gid, nwg);
    if (q >= p.batch * QUADS) { return; }
    let b = q / QUADS;
    let px = (q % QUADS) * 4u;
    let step = counter[0];
    let slot = min((step - counter[1]) * p.stride + b, p.count - 1u);
    let example = indices[slot];
    let y = i32(px / SIDE);
    let x = i32(px % SIDE);
    var v: vec4<f32>;
    if (p.flip != 0u || p.max_shift != 0u) {
        let h = hash(b ^ hash(step ^ hash(p.seed ^ 0xa1160000u)));
        let span = 2u * p.max_shift + 1u;
        let dx = i32((h >> 8u) % span) - i32(p.max_shift);
        let sy = y - (i32((h >> 16u) % span) - i32(p.max_shift));
        let flip = p.flip == 2u || (p.flip == 1u && (h & 1u) == 1u);
        for (var k = 0; k < 4; k++) {
            var sx = x + k;
            if (flip) {
                sx = i32(SIDE) - 1 - sx;
            }
            sx -= dx;
            var value = 0.0;
            if (sx >= 0 && sx < i32(SIDE) && sy >= 0 && sy < i32(SIDE)) {
                value = f32(byte_at(example * PIXELS, u32(sy) * SIDE + u32(sx)));
            }
            v[k] = value;
        }
    } else {
        let word = images[example * (PIXELS / 4u) + px / 4u];
        v = vec4<f32>(vec4<u32>(word, word >> 8u, word >> 16u, word >> 24u) & vec4<u32>(0xffu));
    }
    out_x[q] = (v / 255.0 - p.mean) * p.inv_std;
    if (px == 0u) {
        out_labels[b] = (labels[example / 4u] >> (8u * (example % 4u))) & 0xffu;
    }
}
