// Optimizer updates, torch.optim semantics, one invocation per parameter element.
// The learning rate of step t is lr[min(t, lr_len - 1)] and t is the number of optimizer
// steps already taken, both read on the GPU so a whole epoch can be recorded in bulk.
// The step counter: counter[0] is the step every other kernel of a step reads; the update
// reads t from counter[2], the copy of it the training loss dispatch makes, because the
// update also ends the step: its first invocation writes counter[0] = t + 1 (when
// p.ends_step; the last update of a step) while the others are still reading t. No kernel
// reads counter[0] after the update, and counter[2] is not written during it.
//
// sgd_step:  g += wd*w + l1*sign(w); v = mu*v + g; (nesterov: g += mu*v, else g = v); w -= lr*g
// adam_step: g += wd*w + l1*sign(w) (Adam) or w *= 1 - lr*wd (AdamW, decoupled != 0);
//            m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//            w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)    with t = step + 1
//            (1 - b and 1 - b^t as torch computes them in f64; see bias_correction)
// Parameters and optimizer state are updated in place; gradients are only read.

struct Params {
    n: u32,
    nesterov: u32,
    decoupled: u32,
    lr_len: u32,
    momentum: f32,
    weight_decay: f32,
    l1: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    // From the betas' decimal values in f64 (kernels::optim::torch_scalars).
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    ln_beta1: f32,
    ln_beta2: f32,
    ends_step: u32,
    _pad1: f32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
// One vec4 per invocation: tensors are padded to a multiple of 4 with zeros, and a zero
// weight with a zero gradient stays zero under every update here.
@group(0) @binding(1) var<storage, read_write> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m1: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> m2: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> lr: array<f32>;
@group(0) @binding(7) var<storage, read_write> counter_rw: array<u32>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// t, the steps taken before this one.
fn current_step() -> u32 {
    return counter_rw[2];
}

fn current_lr() -> f32 {
    return lr[min(current_step(), p.lr_len - 1u)];
}

// The step's end, by invocation 0 alone (before any early return).
fn end_step(i: u32) {
    if (p.ends_step != 0u && i == 0u) {
        counter_rw[0] = current_step() + 1u;
    }
}

@compute @workgroup_size(WG)
fn sgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    end_step(i);
    if (i * 4u >= p.n) { return; }
    let w0 = w[i];
    var g = grad[i] + p.weight_decay * w0 + p.l1 * sign(w0);
    if (p.momentum != 0.0) {
        let v = p.momentum * m1[i] + g;
        m1[i] = v;
        g = select(v, g + p.momentum * v, p.nesterov != 0u);
    }
    w[i] = w0 - current_lr() * g;
}

// 1 - beta^t = -expm1(t ln beta), as torch gets it in f64: a series while t ln beta is small
// (where 1 - pow(beta, t) in f32 would cancel most digits: at t = 1, 1 - 0.999 keeps four),
// 1 - exp once it is not.
fn bias_correction(ln_beta: f32, t: u32) -> f32 {
    let x = f32(t) * ln_beta;
    if (x < -0.5) {
        return 1.0 - exp(x);
    }
    var term = x;
    var sum = x;
    for (var k = 2u; k < 14u; k++) {
        term *= x / f32(k);
        sum += term;
    }
    return -sum;
}

@compute @workgroup_size(WG)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    end_step(i);
    if (i * 4u >= p.n) { return; }
    let rate = current_lr();
    let t = current_step() + 1u;
    let w0 = w[i];
    var g = grad[i] + p.l1 * sign(w0);
    var wd = w0;
    if (p.decoupled != 0u) {
        wd = w0 * (1.0 - rate * p.weight_decay);
    } else {
        g += p.weight_decay * w0;
    }
    let m = p.beta1 * m1[i] + p.one_minus_beta1 * g;
    let v = p.beta2 * m2[i] + p.one_minus_beta2 * g * g;
    m1[i] = m;
    m2[i] = v;
    let bc1 = bias_correction(p.ln_beta1, t);
    let bc2 = bias_correction(p.ln_beta2, t);
    let denom = sqrt(v) / sqrt(bc2) + p.eps;
    w[i] = wd - (rate / bc1) * m / denom;
}
