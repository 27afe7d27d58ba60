//! Optimizer updates (`shaders/optim.wgsl`), torch.optim semantics: SGD with momentum,
//! nesterov, L2 weight decay and L1; Adam and AdamW. The learning rate for step t is
//! `lr[min(t, len-1)]`, with t on the GPU, so steps can be recorded in bulk.
//!
//! The step counter (`[u32; 4]`): `[0]` is the step the kernels of a training step read,
//! `[1]` where the current index list starts, `[2]` the copy of `[0]` the training loss
//! dispatch makes. The update reads t from `[2]`, and the step's last update (`ends_step`)
//! also writes `[0] = t + 1`, so that no dispatch of its own ends the step.

use super::{check_len, dim};
use crate::gpu::{Dispatch, Gpu, GpuError, Result, Tensor, OPTIM};
use bytemuck::{Pod, Zeroable};

/// Binding numbers of optim.wgsl, named as the WGSL names them.
#[allow(dead_code)]
mod binding {
    pub const P: u32 = 0;
    pub const W: u32 = 1;
    pub const GRAD: u32 = 2;
    pub const M1: u32 = 3;
    pub const M2: u32 = 4;
    pub const AVERAGE: u32 = 5;
    pub const LR: u32 = 6;
    pub const COUNTER_RW: u32 = 7;
    pub const STATS: u32 = 8;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
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
    /// 1 - beta and ln(beta) from the betas' decimal values in f64, as torch (whose betas are
    /// Python floats) computes them: see `torch_scalars`.
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    ln_beta1: f32,
    ln_beta2: f32,
    ends_step: u32,
    ema_rate: f32,
    stats_n: u32,
    _pad: [u32; 3],
}

/// An f32 setting as the decimal the user wrote (its shortest representation), in f64:
/// 0.999f32 is 0.99900001287, but torch's beta2 is the Python float 0.999.
fn decimal(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(x as f64)
}

/// (1 - beta1, 1 - beta2, ln beta1, ln beta2) in f64 then rounded, as torch's Adam uses
/// them: its bias corrections 1 - beta^t are f64 Python arithmetic, where 1 - 0.999^t in
/// f32 would cancel most of its digits (an error of 6e-5 in the first update's size).
fn torch_scalars(beta1: f32, beta2: f32) -> [f32; 4] {
    let (b1, b2) = (decimal(beta1), decimal(beta2));
    [
        (1.0 - b1) as f32,
        (1.0 - b2) as f32,
        b1.ln() as f32,
        b2.ln() as f32,
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    pub l1: f32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub l1: f32,
    /// AdamW: decay the weights directly instead of adding wd*w to the gradient.
    pub decoupled: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            l1: 0.0,
            decoupled: false,
        }
    }
}

/// `--ema`: the update also moves an average toward the new weights and toward running
/// statistics that live outside the optimizer (batch norm's): torch's
/// `AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)`,
/// updated after every optimizer step; its first update (step 0) copies.
#[derive(Clone, Copy)]
pub struct Averaging<'a> {
    pub decay: f32,
    /// The weights' average (`ceil(w.len / 4) * 4` elements), then `stats`' (`stats.len`).
    pub average: &'a Tensor,
    /// Running statistics to average after the weights.
    pub stats: Option<&'a Tensor>,
}

impl Averaging<'_> {
    /// lerp's weight, 1 - decay, from the decay's decimal in f64 as torch's Python float.
    fn rate(&self) -> f32 {
        (1.0 - decimal(self.decay)) as f32
    }
}

/// The update of `w` (and `--ema`'s average): the dispatch and its invocation count.
fn update_dispatch(
    gpu: &Gpu,
    kernel: &str,
    mut p: Params,
    bindings: &[(u32, &Tensor)],
    average: Option<Averaging>,
) -> Result<Dispatch> {
    let n = p.n as usize;
    let groups = n.div_ceil(4);
    let mut all: Vec<(u32, &dyn crate::gpu::Bindable)> =
        bindings.iter().map(|(b, t)| (*b, *t as _)).collect();
    let (entry, invocations, desc) = match average {
        None => (kernel.to_string(), groups, format!("n={n}")),
        Some(a) => {
            let stats = a.stats.map_or(0, |t| t.len);
            check_len(kernel, "the average", a.average, groups * 4 + stats)?;
            p.ema_rate = a.rate();
            p.stats_n = dim(kernel, stats)?;
            all.push((binding::AVERAGE, a.average));
            // A binding needs a buffer even with no statistics (none is read then), and not
            // one bound writable: the gradient.
            let grad = bindings.iter().find(|(b, _)| *b == binding::GRAD);
            match a.stats.or(grad.map(|(_, t)| *t)) {
                Some(t) => all.push((binding::STATS, t)),
                None => unreachable!("every update binds its gradient"),
            }
            (
                format!("{kernel}_averaged"),
                groups + stats.div_ceil(4),
                format!("n={n} stats={stats}"),
            )
        }
    };
    let params = gpu.uniform(&format!("{kernel} params"), &p);
    all.push((binding::P, &params));
    gpu.dispatch(&OPTIM, &entry, &desc, &all, gpu.caps.grid(invocations, WG))
}

const WG: u32 = 256;

/// A step counter at step 0 (the layout in the module's doc).
pub fn step_counter(gpu: &Gpu, label: &str) -> Result<Tensor> {
    gpu.upload(label, &[0u32; 4])
}

fn check_lr(lr: &Tensor) -> Result<u32> {
    if lr.len == 0 {
        return Err(GpuError::Shape {
            label: lr.label.clone(),
            message: "the learning-rate table is empty".into(),
        });
    }
    dim("optim", lr.len)
}

/// One SGD step over `w` in place; `velocity` is the momentum buffer (zeros at the start).
/// `ends_step`: also advance the step counter (the step's last update); `average`: `--ema`'s.
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    gpu: &Gpu,
    cfg: SgdConfig,
    w: &Tensor,
    grad: &Tensor,
    velocity: &Tensor,
    counter: &Tensor,
    lr: &Tensor,
    ends_step: bool,
    average: Option<Averaging>,
) -> Result<Dispatch> {
    check_len("optim", "the step counter", counter, 4)?;
    let n = w.len;
    let desc = format!("n={n}");
    check_len("sgd_step", &desc, grad, n)?;
    check_len("sgd_step", &desc, velocity, n)?;
    let p = Params {
        n: dim("sgd", n)?,
        nesterov: cfg.nesterov as u32,
        decoupled: 0,
        lr_len: check_lr(lr)?,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        l1: cfg.l1,
        beta1: 0.0,
        beta2: 0.0,
        eps: 0.0,
        one_minus_beta1: 0.0,
        one_minus_beta2: 0.0,
        ln_beta1: 0.0,
        ln_beta2: 0.0,
        ends_step: ends_step as u32,
        ema_rate: 0.0,
        stats_n: 0,
        _pad: [0; 3],
    };
    update_dispatch(
        gpu,
        "sgd_step",
        p,
        &[
            (binding::W, w),
            (binding::GRAD, grad),
            (binding::M1, velocity),
            (binding::COUNTER_RW, counter),
            (binding::LR, lr),
        ],
        average,
    )
    // w, grad, velocity read; w, velocity written (and the average read and written).
    .map(|d| d.with_cost(5.0 * n as f64, average_bytes(20.0, n, average)))
}

/// Bytes moved: `per_element` for each weight, plus the average's read and write.
fn average_bytes(per_element: f64, n: usize, average: Option<Averaging>) -> f64 {
    let stats = average.and_then(|a| a.stats).map_or(0, |t| t.len);
    let extra = average.map_or(0.0, |_| 8.0 * (n + stats) as f64 + 4.0 * stats as f64);
    per_element * n as f64 + extra
}

/// One Adam/AdamW step over `w` in place with moment buffers `m` and `v` (zeros at start);
/// `ends_step` as `sgd_step`'s.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    gpu: &Gpu,
    cfg: AdamConfig,
    w: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    counter: &Tensor,
    lr: &Tensor,
    ends_step: bool,
    average: Option<Averaging>,
) -> Result<Dispatch> {
    check_len("optim", "the step counter", counter, 4)?;
    let n = w.len;
    let desc = format!("n={n}");
    for t in [grad, m, v] {
        check_len("adam_step", &desc, t, n)?;
    }
    let scalars = torch_scalars(cfg.beta1, cfg.beta2);
    let p = Params {
        n: dim("adam", n)?,
        nesterov: 0,
        decoupled: cfg.decoupled as u32,
        lr_len: check_lr(lr)?,
        momentum: 0.0,
        weight_decay: cfg.weight_decay,
        l1: cfg.l1,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        one_minus_beta1: scalars[0],
        one_minus_beta2: scalars[1],
        ln_beta1: scalars[2],
        ln_beta2: scalars[3],
        ends_step: ends_step as u32,
        ema_rate: 0.0,
        stats_n: 0,
        _pad: [0; 3],
    };
    update_dispatch(
        gpu,
        "adam_step",
        p,
        &[
            (binding::W, w),
            (binding::GRAD, grad),
            (binding::M1, m),
            (binding::M2, v),
            (binding::COUNTER_RW, counter),
            (binding::LR, lr),
        ],
        average,
    )
    // w, grad, m, v read; w, m, v written (and the average read and written).
    .map(|d| d.with_cost(12.0 * n as f64, average_bytes(28.0, n, average)))
}

fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

pub fn sgd_step_reference(
    w: &mut [f32],
    velocity: &mut [f32],
    grad: &[f32],
    cfg: SgdConfig,
    lr: f32,
) {
    for i in 0..w.len() {
        let mut g = grad[i] + cfg.weight_decay * w[i] + cfg.l1 * sign(w[i]);
        if cfg.momentum != 0.0 {
            velocity[i] = cfg.momentum * velocity[i] + g;
            g = if cfg.nesterov {
                g + cfg.momentum * velocity[i]
            } else {
                velocity[i]
            };
        }
        w[i] -= lr * g;
    }
}

/// `step` is the number of steps already taken (t = step + 1), as torch counts from 1.
pub fn adam_step_reference(
    w: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grad: &[f32],
    cfg: AdamConfig,
    lr: f32,
    step: u32,
) {
    let t = step as f64 + 1.0;
    // torch: the betas are decimals (Python floats); the decays multiply by them rounded to
    // f32, the (1 - beta) factors and the bias corrections are f64 arithmetic.
    let (b1, b2) = (decimal(cfg.beta1), decimal(cfg.beta2));
    let bc1 = 1.0 - b1.powf(t);
    let bc2 = 1.0 - b2.powf(t);
    for i in 0..w.len() {
        let w0 = w[i] as f64;
        let mut g = grad[i] as f64 + cfg.l1 as f64 * sign(w[i]) as f64;
        let mut wd = w0;
        if cfg.decoupled {
            wd = w0 * (1.0 - lr as f64 * cfg.weight_decay as f64);
        } else {
            g += cfg.weight_decay as f64 * w0;
        }
        let mi = cfg.beta1 as f64 * m[i] as f64 + (1.0 - b1) * g;
        let vi = cfg.beta2 as f64 * v[i] as f64 + (1.0 - b2) * g * g;
        m[i] = mi as f32;
        v[i] = vi as f32;
        let denom = vi.sqrt() / bc2.sqrt() + cfg.eps as f64;
        w[i] = (wd - lr as f64 / bc1 * mi / denom) as f32;
    }
}

/// `--ema`'s update of `average` toward `x` (the new weights or the running statistics)
/// after optimizer step `step` (0-based): a copy at step 0, else torch's
/// `lerp(average, x, 1 - decay)`.
pub fn average_reference(average: &mut [f32], x: &[f32], decay: f32, step: u32) {
    let rate = (1.0 - decimal(decay)) as f32;
    for (a, &x) in average.iter_mut().zip(x) {
        *a = if step == 0 { x } else { *a + rate * (x - *a) };
    }
}
