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
//
// The `_averaged` entry points (--ema) also move a moving average toward the new weights and,
// after them in the same buffer, toward the running statistics `stats`: torch's
// AveragedModel(get_ema_multi_avg_fn(decay), use_buffers=True), whose update is
// lerp(avg, x, 1 - decay) = avg + (1 - decay) (x - avg) and whose first update (t = 0) copies.

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
    // 1 - decay (from the decay's decimal in f64, as torch's Python float), and the length of
    // the running statistics averaged after the weights.
    ema_rate: f32,
    stats_n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
// One vec4 per invocation: tensors are padded to a multiple of 4 with zeros, and a zero
// weight with a zero gradient stays zero under every update here.
@group(0) @binding(1) var<storage, read_write> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m1: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> m2: array<vec4<f32>>;
// The weights' average (ceil(n / 4) vec4s), then the statistics' average (stats_n floats).
@group(0) @binding(5) var<storage, read_write> average: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> lr: array<f32>;
@group(0) @binding(7) var<storage, read_write> counter_rw: array<u32>;
@group(0) @binding(8) var<storage, read> stats: array<vec4<f32>>;

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

// Updates element group i (w and its state) and returns its new weights.
fn sgd_update(i: u32) -> vec4<f32> {
    let w0 = w[i];
    var g = grad[i] + p.weight_decay * w0 + p.l1 * sign(w0);
    if (p.momentum != 0.0) {
        let v = p.momentum * m1[i] + g;
        m1[i] = v;
        g = select(v, g + p.momentum * v, p.nesterov != 0u);
    }
    let w1 = w0 - current_lr() * g;
    w[i] = w1;
    return w1;
}

@compute @workgroup_size(WG)
fn sgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    end_step(i);
    if (i * 4u >= p.n) { return; }
    sgd_update(i);
}

@compute @workgroup_size(WG)
fn sgd_step_averaged(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    end_step(i);
    if (i * 4u < p.n) {
        average[i] = averaged(average[i], sgd_update(i));
    } else {
        average_stats(i);
    }
}

// torch's lerp(avg, x, rate) for a small rate; the first step copies.
fn averaged(avg: vec4<f32>, x: vec4<f32>) -> vec4<f32> {
    if (current_step() == 0u) {
        return x;
    }
    return avg + p.ema_rate * (x - avg);
}

// Invocations past the weights average the running statistics.
fn average_stats(i: u32) {
    let weights = (p.n + 3u) / 4u;
    let j = i - weights;
    if (i < weights || j * 4u >= p.stats_n) { return; }
    average[i] = averaged(average[i], stats[j]);
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

// Updates element group i (w and its moments) and returns its new weights.
fn adam_update(i: u32) -> vec4<f32> {
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
    let w1 = wd - (rate / bc1) * m / denom;
    w[i] = w1;
    return w1;
}

@compute @workgroup_size(WG)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    end_step(i);
    if (i * 4u >= p.n) { return; }
    adam_update(i);
}

@compute @workgroup_size(WG)
fn adam_step_averaged(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    end_step(i);
    if (i * 4u < p.n) {
        average[i] = averaged(average[i], adam_update(i));
    } else {
        average_stats(i);
    }
}
