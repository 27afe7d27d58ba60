// Max pooling, NCHW, square window k with stride s, no padding, floor mode
// (PyTorch nn.MaxPool2d(k, s)). Forward overwrites y and records, per output, the index of
// its maximum within the input plane (the first one on ties, as PyTorch does). Backward
// overwrites dx by gathering from the outputs whose window covers each input: no scatter,
// no atomics, and correct when windows overlap (s < k).

struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    k: u32,
    stride: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dx1: array<f32>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// One invocation per output row (plane, oy): one index division per row rather than three
// per output (integer division is scalarised on CPU adapters), and no branch per element.
@compute @workgroup_size(WG)
fn maxpool_forward_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = min(linear_id(gid, nwg), p.n * p.c * p.oh - 1u);
    let plane = r / p.oh;
    let oy = r - plane * p.oh;
    let top = plane * p.h * p.w + oy * p.stride * p.w;
    let first = oy * p.stride * p.w;
    for (var ox = 0u; ox < p.ow; ox++) {
        let x0 = ox * p.stride;
        var best = x[top + x0];
        var best_idx = first + x0;
        for (var ky = 0u; ky < p.k; ky++) {
            for (var kx = 0u; kx < p.k; kx++) {
                let idx = ky * p.w + x0 + kx;
                let v = x[top + idx];
                // Strictly greater: the first maximum wins ties, as in PyTorch.
                best_idx = select(best_idx, first + idx, v > best);
                best = select(best, v, v > best);
            }
        }
        if (linear_id(gid, nwg) < p.n * p.c * p.oh) {
            y[r * p.ow + ox] = best;
            argmax[r * p.ow + ox] = best_idx;
        }
    }
}

@compute @workgroup_size(WG)
fn maxpool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i >= p.n * p.c * p.oh * p.ow) { return; }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let plane = i / (p.ow * p.oh);
    let base = plane * p.h * p.w;
    let y0 = oy * p.stride;
    let x0 = ox * p.stride;
    var best = x[base + y0 * p.w + x0];
    var best_idx = y0 * p.w + x0;
    for (var ky = 0u; ky < p.k; ky++) {
        for (var kx = 0u; kx < p.k; kx++) {
            let idx = (y0 + ky) * p.w + x0 + kx;
            let v = x[base + idx];
            if (v > best) {
                best = v;
                best_idx = idx;
            }
        }
    }
    y[i] = best;
    argmax[i] = best_idx;
}

// Gradient of one input element: the sum of dy over the outputs whose window holds it and
// whose argmax it is.
fn input_grad(e: u32) -> f32 {
    let ix = e % p.w;
    let iy = (e / p.w) % p.h;
    let plane = e / (p.w * p.h);
    let here = iy * p.w + ix;
    // Outputs whose window [o*s, o*s + k) contains this input.
    let oy_lo = select(0u, (iy + p.stride - p.k) / p.stride, iy + p.stride >= p.k);
    let oy_hi = min(iy / p.stride, p.oh - 1u);
    let ox_lo = select(0u, (ix + p.stride - p.k) / p.stride, ix + p.stride >= p.k);
    let ox_hi = min(ix / p.stride, p.ow - 1u);
    var g = 0.0;
    for (var oy = oy_lo; oy <= oy_hi; oy++) {
        for (var ox = ox_lo; ox <= ox_hi; ox++) {
            let o = (plane * p.oh + oy) * p.ow + ox;
            if (argmax[o] == here) {
                g += dy[o];
            }
        }
    }
    return g;
}

// Four consecutive input elements per invocation (dx is padded to a multiple of 4).
@compute @workgroup_size(WG)
fn maxpool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    let n = p.n * p.c * p.h * p.w;
    let e = i * 4u;
    if (e >= n) { return; }
    // Elements past the end (padding) read a clamped, valid position; their value is unused.
    dx[i] = vec4<f32>(input_grad(e), input_grad(min(e + 1u, n - 1u)), input_grad(min(e + 2u, n - 1u)), input_grad(min(e + 3u, n - 1u)));
}

// Windows that tile the input (stride == k), one invocation per output row: it writes the
// k input rows under it (dy at each window's argmax, 0 elsewhere), extended to the plane's
// bottom edge when it is the last row (floor mode leaves those rows outside every window).
@compute @workgroup_size(WG)
fn maxpool_backward_tiled_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_id(gid, nwg);
    if (r >= p.n * p.c * p.oh) { return; }
    let plane = r / p.oh;
    let oy = r - plane * p.oh;
    let base = plane * p.h * p.w;
    let y_end = select(oy * p.k + p.k, p.h, oy == p.oh - 1u);
    for (var y = oy * p.k; y < y_end; y++) {
        let row = y * p.w;
        for (var ox = 0u; ox < p.ow; ox++) {
            let g = dy[r * p.ow + ox];
            let hit = argmax[r * p.ow + ox];
            for (var x = ox * p.k; x < ox * p.k + p.k; x++) {
                dx1[base + row + x] = select(0.0, g, row + x == hit);
            }
        }
        // Columns right of the last window.
        for (var x = p.ow * p.k; x < p.w; x++) {
            dx1[base + row + x] = 0.0;
        }
    }
}

// Windows that tile the input (stride == k): one invocation per output writes its whole
// k x k window (dy at the argmax, 0 elsewhere). The last output row and column also clear
// the input rows/columns that floor mode leaves outside every window.
@compute @workgroup_size(WG)
fn maxpool_backward_tiled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_id(gid, nwg);
    if (o >= p.n * p.c * p.oh * p.ow) { return; }
    let ox = o % p.ow;
    let oy = (o / p.ow) % p.oh;
    let plane = o / (p.ow * p.oh);
    let base = plane * p.h * p.w;
    let g = dy[o];
    let hit = argmax[o];
    // Rows and columns this invocation owns: its window, extended to the edge when last.
    let y_end = select(oy * p.k + p.k, p.h, oy == p.oh - 1u);
    let x_end = select(ox * p.k + p.k, p.w, ox == p.ow - 1u);
    for (var y = oy * p.k; y < y_end; y++) {
        for (var x = ox * p.k; x < x_end; x++) {
            let here = y * p.w + x;
            dx1[base + here] = select(0.0, g, here == hit);
        }
    }
}
