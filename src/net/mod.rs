//! A model on the GPU. `fuse` compiles the layer list into steps; `Network` holds the
//! parameter tensors (with gradients and optimizer state); `Buffers` the activations and
//! gradients of one batch size, laid out by the steps; `plan` records the dispatches of the
//! forward and backward passes and `steps` composes them into a training or evaluation
//! step, built once and recorded many times.

mod average;
pub mod buffers;
pub mod fuse;
pub mod plan;
pub mod shapes;
mod step_plans;
mod steps;
pub use step_plans::StepPlans;
mod summary;

pub use average::Average;
pub use buffers::{check_batch, check_memory, check_model, Buffers, MemoryNeed};
pub use fuse::{Mode, Op, Step};
pub use steps::{
    eval_step, eval_step_flip_tta, forward, gradient_step, train_step, update, PlanInputs, Source,
};
pub use summary::summary;

use crate::gpu::{Gpu, Result, Tensor};
use crate::model::{Layer, LayerParams, ModelSpec, OptimizerKind};
use std::collections::BTreeMap;

/// Optimizer moments by parameter name (`{i}.weight`), and the step count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimState {
    pub kind: Option<OptimizerKind>,
    pub step: u64,
    /// SGD momentum buffer or Adam first moment.
    pub m1: BTreeMap<String, Vec<f32>>,
    /// Adam second moment.
    pub m2: BTreeMap<String, Vec<f32>>,
    /// With `--ema`, whose averages are the model's tensors: the raw (trained) value of
    /// every model tensor, parameters and running statistics, by state-dict name.
    pub raw: BTreeMap<String, Vec<f32>>,
}

/// A trainable tensor with its gradient and optimizer moments.
pub struct Param {
    pub value: Tensor,
    pub grad: Tensor,
    /// SGD momentum buffer / Adam first moment.
    pub m1: Tensor,
    /// Adam second moment.
    pub m2: Tensor,
}

/// Every trainable tensor's value, gradient and moments as slices of four buffers (one
/// group of them per `ParamArena`), so the optimizer updates a whole group in one dispatch.
pub struct ParamArena {
    pub value: Tensor,
    pub grad: Tensor,
    pub m1: Tensor,
    pub m2: Tensor,
    /// Which tensors (in `Network::params` order) it holds.
    pub params: std::ops::Range<usize>,
}

/// Groups consecutive tensors so that each group fits one binding (`Gpu::arena_fits`): one
/// group for any model whose parameters fit one binding together.
fn arena_groups(gpu: &Gpu, lens: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut groups = vec![];
    let mut start = 0;
    for end in 1..=lens.len() {
        if end > start + 1 && !gpu.arena_fits(lens[start..end].iter().copied()) {
            groups.push(start..end - 1);
            start = end - 1;
        }
    }
    if start < lens.len() {
        groups.push(start..lens.len());
    }
    groups
}

/// The parameters `(name, values)` laid out in arenas: their `Param`s in order, and the
/// arenas the optimizer updates.
fn allocate_params(gpu: &Gpu, named: &[(String, &[f32])]) -> Result<(Vec<Param>, Vec<ParamArena>)> {
    let lens: Vec<usize> = named.iter().map(|(_, d)| d.len()).collect();
    let (mut params, mut arenas) = (vec![], vec![]);
    for (g, range) in arena_groups(gpu, &lens).into_iter().enumerate() {
        let tensors = |suffix: &str| -> Vec<(String, usize)> {
            named[range.clone()]
                .iter()
                .map(|(name, d)| (format!("{name}{suffix}"), d.len()))
                .collect()
        };
        let value = gpu.arena(&format!("parameters {g}"), &tensors(""))?;
        let grad = gpu.arena(&format!("gradients {g}"), &tensors(".grad"))?;
        let m1 = gpu.arena(&format!("first moments {g}"), &tensors(".m1"))?;
        let m2 = gpu.arena(&format!("second moments {g}"), &tensors(".m2"))?;
        let slices = value
            .slices
            .into_iter()
            .zip(grad.slices)
            .zip(m1.slices)
            .zip(m2.slices);
        for ((((value, grad), m1), m2), (_, data)) in slices.zip(&named[range.clone()]) {
            gpu.write(&value, data)?;
            params.push(Param {
                value,
                grad,
                m1,
                m2,
            });
        }
        arenas.push(ParamArena {
            value: value.whole,
            grad: grad.whole,
            m1: m1.whole,
            m2: m2.whole,
            params: range,
        });
    }
    Ok((params, arenas))
}

/// GPU state of one layer (empty for layers without parameters).
#[derive(Default)]
pub struct LayerState {
    pub weight: Option<Param>,
    pub bias: Option<Param>,
    pub running_mean: Option<Tensor>,
    pub running_var: Option<Tensor>,
}

/// Optimizer settings for the whole network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    pub l1: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

pub struct Network {
    pub spec: ModelSpec,
    pub layers: Vec<LayerState>,
    /// Where the parameters of `layers` live (see `ParamArena`).
    pub arenas: Vec<ParamArena>,
    /// [global step, step at which the current index list starts]; see shaders/data.wgsl.
    pub counter: Tensor,
    /// Every batch norm's running statistics, which `LayerState`s slice: one buffer, so
    /// that `--ema`'s update averages them all in the optimizer's dispatch.
    pub stats: Tensor,
    /// `--ema`: the moving average of the parameters and statistics.
    pub average: Option<Average>,
}

impl Network {
    pub fn new(gpu: &Gpu, spec: ModelSpec, params: &[LayerParams]) -> Result<Network> {
        buffers::check_model(gpu, &spec)?;
        let mut named: Vec<(String, &[f32])> = vec![];
        for (i, (layer, p)) in spec.layers.iter().zip(params).enumerate() {
            if matches!(
                layer,
                Layer::Conv { .. } | Layer::Linear { .. } | Layer::BatchNorm
            ) {
                named.push((format!("{i}.weight"), &p.weight));
                named.push((format!("{i}.bias"), &p.bias));
            }
        }
        let (all, arenas) = allocate_params(gpu, &named)?;
        let mut stat_names = vec![];
        for (i, layer) in spec.layers.iter().enumerate() {
            if matches!(layer, Layer::BatchNorm) {
                let c = spec.input(i).c;
                stat_names.push((format!("{i}.running_mean"), c));
                stat_names.push((format!("{i}.running_var"), c));
            }
        }
        let stats = gpu.arena("running statistics", &stat_names)?;
        let mut stat_slices = stats.slices.into_iter();
        let mut all = all.into_iter();
        let mut layers = Vec::with_capacity(spec.layers.len());
        for (layer, p) in spec.layers.iter().zip(params) {
            let mut st = LayerState::default();
            if matches!(
                layer,
                Layer::Conv { .. } | Layer::Linear { .. } | Layer::BatchNorm
            ) {
                st.weight = all.next();
                st.bias = all.next();
            }
            if matches!(layer, Layer::BatchNorm) {
                let (mean, var) = (stat_slices.next(), stat_slices.next());
                for (t, v) in [(&mean, &p.running_mean), (&var, &p.running_var)] {
                    if let Some(t) = t {
                        gpu.write(t, v)?;
                    }
                }
                (st.running_mean, st.running_var) = (mean, var);
            }
            layers.push(st);
        }
        Ok(Network {
            spec,
            layers,
            arenas,
            counter: crate::kernels::optim::step_counter(gpu, "step counter")?,
            stats: stats.whole,
            average: None,
        })
    }

    /// Copies every parameter and running statistic back to the host.
    pub fn download(&self, gpu: &Gpu) -> Result<Vec<LayerParams>> {
        pollster::block_on(self.download_async(gpu))
    }

    /// `download`, awaiting each readback (what a browser needs).
    pub async fn download_async(&self, gpu: &Gpu) -> Result<Vec<LayerParams>> {
        let mut out = Vec::with_capacity(self.layers.len());
        for st in &self.layers {
            let tensors = [
                st.weight.as_ref().map(|p| &p.value),
                st.bias.as_ref().map(|p| &p.value),
                st.running_mean.as_ref(),
                st.running_var.as_ref(),
            ];
            let mut values = Vec::with_capacity(4);
            for t in tensors {
                values.push(match t {
                    Some(t) => gpu.read_async(t).await?,
                    None => vec![],
                });
            }
            let [weight, bias, running_mean, running_var]: [Vec<f32>; 4] =
                values.try_into().expect("four tensors");
            out.push(LayerParams {
                weight,
                bias,
                running_mean,
                running_var,
            });
        }
        Ok(out)
    }

    /// Every trainable tensor.
    pub fn params(&self) -> impl Iterator<Item = &Param> {
        self.layers
            .iter()
            .flat_map(|l| l.weight.iter().chain(l.bias.iter()))
    }

    /// Trainable tensors with their state-dict names (`{i}.weight`, `{i}.bias`).
    pub fn named_params(&self) -> impl Iterator<Item = (String, &Param)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| {
            l.weight
                .iter()
                .map(move |p| (format!("{i}.weight"), p))
                .chain(l.bias.iter().map(move |p| (format!("{i}.bias"), p)))
        })
    }

    /// The optimizer moments on the host (for checkpoints).
    pub fn download_optim(&self, gpu: &Gpu, kind: OptimizerKind, step: u64) -> Result<OptimState> {
        let mut o = OptimState {
            kind: Some(kind),
            step,
            ..Default::default()
        };
        for (name, p) in self.named_params() {
            o.m1.insert(name.clone(), gpu.read(&p.m1)?);
            if kind != OptimizerKind::Sgd {
                o.m2.insert(name, gpu.read(&p.m2)?);
            }
        }
        Ok(o)
    }

    /// A layer's weight and bias (conv, linear; batch norm's gamma and beta).
    pub fn param_pair(&self, layer: usize) -> (&Param, &Param) {
        let st = &self.layers[layer];
        match (&st.weight, &st.bias) {
            (Some(w), Some(b)) => (w, b),
            _ => panic!(
                "layer {layer} ({}) has no parameters",
                self.spec.layers[layer]
            ),
        }
    }

    /// Restores the optimizer moments (for `--resume`; the step counter is set by the
    /// trainer at each epoch's start).
    pub fn upload_optim(&self, gpu: &Gpu, o: &OptimState) -> Result<()> {
        for (name, p) in self.named_params() {
            if let Some(v) = o.m1.get(&name) {
                gpu.write(&p.m1, v)?;
            }
            if let Some(v) = o.m2.get(&name) {
                gpu.write(&p.m2, v)?;
            }
        }
        Ok(())
    }
}
