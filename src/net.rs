//! A model on the GPU: parameter tensors (with gradients and optimizer state), activation
//! buffers for a batch size, and the recorded "plans" (lists of dispatches) for a training
//! step and for an evaluation step. Plans are built once; a step is just their recording.

use crate::gpu::{Dispatch, Gpu, Result, Tensor};
use crate::kernels::{
    batchnorm::{self, BatchNormShape, BatchNormTensors},
    conv2d::{self, Conv2dShape},
    data::{self, GatherConfig},
    dropout::{self, DropoutConfig},
    elementwise,
    matmul::{self, LinearShape},
    optim::{self, AdamConfig, SgdConfig},
    pool::{self, PoolFusion, PoolShape},
    softmax_xent::{self, XentShape},
};
use crate::model::{Layer, LayerParams, ModelSpec, OptimizerKind};

/// A trainable tensor with its gradient and optimizer moments.
pub struct Param {
    pub value: Tensor,
    pub grad: Tensor,
    /// SGD momentum buffer / Adam first moment.
    pub m1: Tensor,
    /// Adam second moment.
    pub m2: Tensor,
}

impl Param {
    fn new(gpu: &Gpu, name: &str, data: &[f32]) -> Result<Param> {
        Ok(Param {
            value: gpu.upload(name, data)?,
            grad: gpu.zeros(&format!("{name}.grad"), data.len())?,
            m1: gpu.zeros(&format!("{name}.m1"), data.len())?,
            m2: gpu.zeros(&format!("{name}.m2"), data.len())?,
        })
    }
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
    /// [global step, step at which the current index list starts]; see shaders/data.wgsl.
    pub counter: Tensor,
}

impl Network {
    pub fn new(gpu: &Gpu, spec: ModelSpec, params: &[LayerParams]) -> Result<Network> {
        let mut layers = Vec::with_capacity(spec.layers.len());
        for (i, (layer, p)) in spec.layers.iter().zip(params).enumerate() {
            let mut st = LayerState::default();
            match layer {
                Layer::Conv { .. } | Layer::Linear { .. } | Layer::BatchNorm => {
                    st.weight = Some(Param::new(gpu, &format!("{i}.weight"), &p.weight)?);
                    st.bias = Some(Param::new(gpu, &format!("{i}.bias"), &p.bias)?);
                }
                _ => {}
            }
            if matches!(layer, Layer::BatchNorm) {
                st.running_mean = Some(gpu.upload(&format!("{i}.running_mean"), &p.running_mean)?);
                st.running_var = Some(gpu.upload(&format!("{i}.running_var"), &p.running_var)?);
            }
            layers.push(st);
        }
        Ok(Network {
            spec,
            layers,
            counter: gpu.upload("step counter", &[0u32, 0u32])?,
        })
    }

    /// Copies every parameter and running statistic back to the host.
    pub fn download(&self, gpu: &Gpu) -> Result<Vec<LayerParams>> {
        let read =
            |t: Option<&Tensor>| -> Result<Vec<f32>> { t.map_or(Ok(vec![]), |t| gpu.read(t)) };
        self.layers
            .iter()
            .map(|st| {
                Ok(LayerParams {
                    weight: read(st.weight.as_ref().map(|p| &p.value))?,
                    bias: read(st.bias.as_ref().map(|p| &p.value))?,
                    running_mean: read(st.running_mean.as_ref())?,
                    running_var: read(st.running_var.as_ref())?,
                })
            })
            .collect()
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
    pub fn download_optim(
        &self,
        gpu: &Gpu,
        kind: OptimizerKind,
        step: u64,
    ) -> Result<crate::checkpoint::OptimState> {
        let mut o = crate::checkpoint::OptimState {
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

    /// Restores optimizer moments and the step counter (for `--resume`).
    pub fn upload_optim(&self, gpu: &Gpu, o: &crate::checkpoint::OptimState) -> Result<()> {
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

/// Whether a plan trains (batch statistics, dropout, backward, update) or evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// Layers next to a max pool that run inside the pool's kernels (see
/// `kernels::pool::PoolFusion`): up to one ReLU and one dropout right before it, a batch
/// norm right before those (its normalisation only: its statistics and its backward stay
/// its own kernels), and one dropout right after the pool. For each layer: the pool that
/// absorbs it, if any.
pub fn absorbed_by_pool(spec: &ModelSpec) -> Vec<Option<usize>> {
    let layers = &spec.layers;
    let mut by = vec![None; layers.len()];
    for (i, layer) in layers.iter().enumerate() {
        if !matches!(layer, Layer::MaxPool { .. }) {
            continue;
        }
        let (mut relu, mut dropout) = (false, false);
        for j in (0..i).rev() {
            match layers[j] {
                Layer::Relu if !relu && by[j].is_none() => relu = true,
                Layer::Dropout { .. } if !dropout && by[j].is_none() => dropout = true,
                Layer::BatchNorm if by[j].is_none() => {
                    by[j] = Some(i);
                    break;
                }
                _ => break,
            }
            by[j] = Some(i);
        }
        if let Some(Layer::Dropout { .. }) = layers.get(i + 1) {
            by[i + 1] = Some(i);
        }
    }
    by
}

/// The batch norm pool layer `i` absorbs, if any.
fn fused_batch_norm(spec: &ModelSpec, absorbed: &[Option<usize>], i: usize) -> Option<usize> {
    (0..i).find(|&j| absorbed[j] == Some(i) && matches!(spec.layers[j], Layer::BatchNorm))
}

/// The fused activations of pool layer `i` in `mode`, with the run's dropout seed.
fn pool_fusion(spec: &ModelSpec, i: usize, mode: Mode, seed: u32) -> PoolFusion {
    let by = absorbed_by_pool(spec);
    let mut f = PoolFusion {
        seed,
        ..Default::default()
    };
    for (j, layer) in spec.layers.iter().enumerate() {
        if by[j] != Some(i) {
            continue;
        }
        match *layer {
            Layer::Relu => f.relu = true,
            // Dropout is the identity when evaluating.
            Layer::Dropout { p } if mode == Mode::Train => {
                let d = Some(pool::Dropout { layer: j as u32, p });
                if j < i {
                    f.pre_dropout = d;
                } else {
                    f.post_dropout = d;
                }
            }
            _ => {}
        }
    }
    f
}

/// Activation (and, for training, gradient) buffers for one batch size.
pub struct Buffers {
    pub batch: usize,
    pub mode: Mode,
    /// act[k]; `slot[i]` says which act holds shapes[i] (flatten and eval-mode dropout alias).
    pub acts: Vec<Tensor>,
    pub grads: Vec<Option<Tensor>>,
    pub slot: Vec<usize>,
    pub labels: Tensor,
    pub argmax: Vec<Option<Tensor>>,
    /// Batch norm's saved batch statistics (mean, then 1/std), per layer.
    pub bn_saved: Vec<Option<Tensor>>,
}

impl Buffers {
    pub fn new(gpu: &Gpu, spec: &ModelSpec, batch: usize, mode: Mode) -> Result<Buffers> {
        let mut acts = vec![gpu.zeros("input batch", batch * spec.shapes[0].len())?];
        let mut slot = vec![0];
        let mut argmax = Vec::new();
        let mut bn_saved = Vec::new();
        let absorbed = absorbed_by_pool(spec);
        for (i, layer) in spec.layers.iter().enumerate() {
            let out = spec.output(i);
            // Layers without a tensor of their own share their input's: flatten, dropout
            // when evaluating, and the activations a pool absorbs (the pool's input is then
            // the first absorbed activation's input, its output the absorbed dropout's
            // output). An absorbed batch norm keeps its tensor: the pool's backward writes
            // its gradient there, which the batch norm's backward reads.
            let alias = matches!(layer, Layer::Flatten)
                || (mode == Mode::Eval && matches!(layer, Layer::Dropout { .. }))
                || (absorbed[i].is_some() && !matches!(layer, Layer::BatchNorm));
            if alias {
                slot.push(slot[i]);
            } else {
                acts.push(gpu.zeros(&format!("{i}.{} output", short(layer)), batch * out.len())?);
                slot.push(acts.len() - 1);
            }
            argmax.push(match layer {
                Layer::MaxPool { .. } => {
                    Some(gpu.zeros(&format!("{i}.argmax"), batch * out.len())?)
                }
                _ => None,
            });
            bn_saved.push(match layer {
                Layer::BatchNorm => Some(gpu.zeros(&format!("{i}.save_stats"), 2 * out.c)?),
                _ => None,
            });
        }
        let grads = if mode == Mode::Train {
            acts.iter()
                .enumerate()
                .map(|(k, a)| {
                    // No gradient for the input images, except when a batch norm reads them
                    // directly (its backward computes dx alongside dgamma/dbeta).
                    if k == 0 && !matches!(spec.layers[0], Layer::BatchNorm) {
                        Ok(None)
                    } else {
                        gpu.zeros(&format!("grad of {}", a.label), a.len).map(Some)
                    }
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![]
        };
        Ok(Buffers {
            batch,
            mode,
            acts,
            grads,
            slot,
            labels: gpu.zeros("labels", batch)?,
            argmax,
            bn_saved,
        })
    }

    pub fn logits(&self) -> &Tensor {
        &self.acts[*self.slot.last().expect("output slot")]
    }
}

fn short(layer: &Layer) -> &'static str {
    match layer {
        Layer::Conv { .. } => "conv",
        Layer::BatchNorm => "bn",
        Layer::Relu => "relu",
        Layer::MaxPool { .. } => "maxpool",
        Layer::Dropout { .. } => "dropout",
        Layer::Flatten => "flatten",
        Layer::Linear { .. } => "linear",
    }
}

/// Where a plan's examples come from: a u8 data set on the GPU and an index list into it.
pub struct Source<'a> {
    pub images: &'a Tensor,
    pub labels: &'a Tensor,
    pub indices: &'a Tensor,
    /// The counter whose [0] - [1] selects the step's slice of `indices`.
    pub counter: &'a Tensor,
}

fn bn_shape(spec: &ModelSpec, i: usize, batch: usize) -> BatchNormShape {
    let s = spec.input(i);
    BatchNormShape::new(batch, s.c, s.h * s.w)
}

fn bn_tensors<'a>(net: &'a Network, bufs: &'a Buffers, i: usize) -> BatchNormTensors<'a> {
    let st = &net.layers[i];
    let save_stats = bufs.bn_saved[i].as_ref().expect("bn buffers");
    BatchNormTensors {
        gamma: &st.weight.as_ref().expect("bn gamma").value,
        beta: &st.bias.as_ref().expect("bn beta").value,
        running_mean: st.running_mean.as_ref().expect("running mean"),
        running_var: st.running_var.as_ref().expect("running var"),
        save_stats,
    }
}

fn conv_shape(spec: &ModelSpec, i: usize, batch: usize) -> Conv2dShape {
    let s = spec.input(i);
    let Layer::Conv {
        out,
        k,
        stride,
        pad,
    } = spec.layers[i]
    else {
        unreachable!("conv layer")
    };
    Conv2dShape {
        n: batch,
        ci: s.c,
        h: s.h,
        w: s.w,
        co: out,
        kh: k,
        kw: k,
        stride,
        pad,
    }
}

fn pool_shape(spec: &ModelSpec, i: usize, batch: usize) -> PoolShape {
    let s = spec.input(i);
    let Layer::MaxPool { k, stride } = spec.layers[i] else {
        unreachable!("pool layer")
    };
    PoolShape {
        n: batch,
        c: s.c,
        h: s.h,
        w: s.w,
        k,
        stride,
    }
}

fn linear_shape(spec: &ModelSpec, i: usize, batch: usize) -> LinearShape {
    LinearShape {
        batch,
        inputs: spec.input(i).c,
        outputs: spec.output(i).c,
    }
}

/// The forward pass over `batch` examples (which may be fewer than `bufs.batch`).
pub fn forward(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    batch: usize,
    dropout_seed: u32,
) -> Result<Vec<Dispatch>> {
    let spec = &net.spec;
    let absorbed = absorbed_by_pool(spec);
    let mut out = Vec::new();
    for (i, layer) in spec.layers.iter().enumerate() {
        if absorbed[i].is_some() {
            // Runs inside its pool; a batch norm's training statistics still come first.
            if let (Layer::BatchNorm, Mode::Train) = (layer, bufs.mode) {
                let t = bn_tensors(net, bufs, i);
                let x = &bufs.acts[bufs.slot[i]];
                out.push(batchnorm::batchnorm_stats(
                    gpu,
                    bn_shape(spec, i, batch),
                    &t,
                    x,
                )?);
            }
            continue;
        }
        let x = &bufs.acts[bufs.slot[i]];
        let y = &bufs.acts[bufs.slot[i + 1]];
        let n = batch * spec.output(i).len();
        let st = &net.layers[i];
        match *layer {
            Layer::Conv { .. } => {
                let (w, b) = (st.weight.as_ref().expect("w"), st.bias.as_ref().expect("b"));
                out.extend(conv2d::conv2d_forward(
                    gpu,
                    conv_shape(spec, i, batch),
                    x,
                    &w.value,
                    &b.value,
                    y,
                )?);
            }
            Layer::Linear { .. } => {
                let (w, b) = (st.weight.as_ref().expect("w"), st.bias.as_ref().expect("b"));
                out.push(matmul::linear_forward(
                    gpu,
                    linear_shape(spec, i, batch),
                    x,
                    &w.value,
                    &b.value,
                    y,
                )?);
            }
            Layer::BatchNorm => {
                let s = bn_shape(spec, i, batch);
                let t = bn_tensors(net, bufs, i);
                match bufs.mode {
                    Mode::Train => {
                        out.extend(batchnorm::batchnorm_forward_train(gpu, s, &t, x, y)?)
                    }
                    Mode::Eval => out.push(batchnorm::batchnorm_forward_eval(gpu, s, &t, x, y)?),
                }
            }
            Layer::Relu => out.push(elementwise::relu_forward(gpu, x, y, n)?),
            Layer::MaxPool { .. } => {
                let a = bufs.argmax[i].as_ref().expect("argmax");
                // A fused batch norm: the pool reads the batch norm's input.
                let bn = fused_batch_norm(spec, &absorbed, i);
                let bn_t = bn.map(|j| bn_tensors(net, bufs, j));
                let fused_bn = bn.zip(bn_t.as_ref()).map(|(j, t)| pool::FusedBatchNorm {
                    tensors: t,
                    training: bufs.mode == Mode::Train,
                    eps: bn_shape(spec, j, batch).eps,
                });
                let x = bn.map_or(x, |j| &bufs.acts[bufs.slot[j]]);
                out.push(pool::maxpool_forward(
                    gpu,
                    pool_shape(spec, i, batch),
                    pool_fusion(spec, i, bufs.mode, dropout_seed),
                    fused_bn,
                    &net.counter,
                    x,
                    y,
                    a,
                )?);
            }
            Layer::Dropout { p } => {
                if bufs.mode == Mode::Train {
                    let cfg = DropoutConfig {
                        n,
                        p,
                        seed: dropout_seed,
                        layer: i as u32,
                    };
                    out.push(dropout::dropout_forward(gpu, cfg, &net.counter, x, y)?);
                }
            }
            Layer::Flatten => {}
        }
    }
    Ok(out)
}

/// The backward pass: from the logits' gradient to every parameter gradient.
pub fn backward(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    batch: usize,
    dropout_seed: u32,
) -> Result<Vec<Dispatch>> {
    let spec = &net.spec;
    let absorbed = absorbed_by_pool(spec);
    // Batch norms whose backward runs inside their pool's (tiling windows only).
    let mut bn_in_pool = vec![false; spec.layers.len()];
    let mut out = Vec::new();
    for (i, layer) in spec.layers.iter().enumerate().rev() {
        let (xi, yi) = (bufs.slot[i], bufs.slot[i + 1]);
        if xi == yi || bn_in_pool[i] {
            continue; // flatten or an absorbed activation (shares its buffers), or done
        }
        let x = &bufs.acts[xi];
        let dy = bufs.grads[yi].as_ref().expect("output grad");
        // The first layer needs no input gradient.
        let dx = bufs.grads[xi].as_ref();
        let n = batch * spec.output(i).len();
        let st = &net.layers[i];
        match *layer {
            Layer::Conv { .. } => {
                let s = conv_shape(spec, i, batch);
                let (w, b) = (st.weight.as_ref().expect("w"), st.bias.as_ref().expect("b"));
                out.extend(conv2d::conv2d_backward_weight(gpu, s, dy, x, &w.grad)?);
                out.push(conv2d::conv2d_backward_bias(gpu, s, dy, &b.grad)?);
                if let Some(dx) = dx {
                    out.extend(conv2d::conv2d_backward_input(gpu, s, dy, &w.value, dx)?);
                }
            }
            Layer::Linear { .. } => {
                let s = linear_shape(spec, i, batch);
                let (w, b) = (st.weight.as_ref().expect("w"), st.bias.as_ref().expect("b"));
                out.push(matmul::linear_backward_weight(gpu, s, dy, x, &w.grad)?);
                out.push(matmul::linear_backward_bias(gpu, s, dy, &b.grad)?);
                if let Some(dx) = dx {
                    out.push(matmul::linear_backward_input(gpu, s, dy, &w.value, dx)?);
                }
            }
            Layer::BatchNorm => {
                let (w, b) = (
                    st.weight.as_ref().expect("gamma"),
                    st.bias.as_ref().expect("beta"),
                );
                let t = bn_tensors(net, bufs, i);
                // Buffers gives an input-layer BN an input gradient too: its dgamma/dbeta
                // come from the same pair of dispatches.
                let dx = dx.expect("bn input grad");
                out.extend(batchnorm::batchnorm_backward(
                    gpu,
                    bn_shape(spec, i, batch),
                    &t,
                    x,
                    dy,
                    dx,
                    &w.grad,
                    &b.grad,
                )?);
            }
            Layer::Relu => {
                if let Some(dx) = dx {
                    out.push(elementwise::relu_backward(gpu, x, dy, dx, n)?);
                }
            }
            Layer::MaxPool { k, stride } => {
                let a = bufs.argmax[i].as_ref().expect("argmax");
                let fusion = pool_fusion(spec, i, bufs.mode, dropout_seed);
                if let (Some(j), true) = (fused_batch_norm(spec, &absorbed, i), k == stride) {
                    // Straight through to the batch norm's input gradient.
                    let st = &net.layers[j];
                    let (gamma, beta) = (
                        st.weight.as_ref().expect("gamma"),
                        st.bias.as_ref().expect("beta"),
                    );
                    let bn_x = &bufs.acts[bufs.slot[j]];
                    let bn_dx = bufs.grads[bufs.slot[j]].as_ref().expect("bn input grad");
                    out.extend(pool::maxpool_backward_batchnorm(
                        gpu,
                        pool_shape(spec, i, batch),
                        fusion,
                        &bn_tensors(net, bufs, j),
                        bn_x,
                        dy,
                        a,
                        bn_dx,
                        &gamma.grad,
                        &beta.grad,
                    )?);
                    bn_in_pool[j] = true;
                } else if let Some(dx) = dx {
                    out.push(pool::maxpool_backward(
                        gpu,
                        pool_shape(spec, i, batch),
                        fusion,
                        dy,
                        a,
                        dx,
                    )?);
                }
            }
            Layer::Dropout { p } => {
                if let Some(dx) = dx {
                    let cfg = DropoutConfig {
                        n,
                        p,
                        seed: dropout_seed,
                        layer: i as u32,
                    };
                    out.push(dropout::dropout_backward(gpu, cfg, &net.counter, dy, dx)?);
                }
            }
            Layer::Flatten => {}
        }
    }
    Ok(out)
}

/// One optimizer update of every parameter, then the step counter's advance.
pub fn update(
    gpu: &Gpu,
    net: &Network,
    opt: &OptimizerConfig,
    lr: &Tensor,
) -> Result<Vec<Dispatch>> {
    let mut out = Vec::new();
    for p in net.params() {
        out.push(match opt.kind {
            OptimizerKind::Sgd => {
                let cfg = SgdConfig {
                    momentum: opt.momentum,
                    nesterov: opt.nesterov,
                    weight_decay: opt.weight_decay,
                    l1: opt.l1,
                };
                optim::sgd_step(gpu, cfg, &p.value, &p.grad, &p.m1, &net.counter, lr)?
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let cfg = AdamConfig {
                    beta1: opt.beta1,
                    beta2: opt.beta2,
                    eps: opt.eps,
                    weight_decay: opt.weight_decay,
                    l1: opt.l1,
                    decoupled: opt.kind == OptimizerKind::Adamw,
                };
                optim::adam_step(gpu, cfg, &p.value, &p.grad, &p.m1, &p.m2, &net.counter, lr)?
            }
        });
    }
    out.push(optim::step_advance(gpu, &net.counter)?);
    Ok(out)
}

/// Everything a plan needs besides the network and its buffers.
pub struct PlanInputs<'a> {
    pub source: Source<'a>,
    pub gather: GatherConfig,
    pub metrics: &'a Tensor,
    pub dropout_seed: u32,
}

/// A full training step over `batch` examples: gather, forward, loss, backward, update.
pub fn train_step(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    inputs: &PlanInputs,
    opt: &OptimizerConfig,
    lr: &Tensor,
    batch: usize,
) -> Result<Vec<Dispatch>> {
    let mut plan = vec![gather(gpu, bufs, inputs, batch)?];
    plan.extend(forward(gpu, net, bufs, batch, inputs.dropout_seed)?);
    let xs = XentShape {
        batch,
        classes: crate::model::NUM_CLASSES,
    };
    let logits = bufs.logits();
    let dlogits = bufs.grads[*bufs.slot.last().expect("slot")]
        .as_ref()
        .expect("logit grad");
    plan.push(softmax_xent::softmax_xent_forward(
        gpu,
        xs,
        logits,
        &bufs.labels,
        inputs.metrics,
    )?);
    plan.push(softmax_xent::softmax_xent_backward(
        gpu,
        xs,
        logits,
        &bufs.labels,
        dlogits,
    )?);
    plan.extend(backward(gpu, net, bufs, batch, inputs.dropout_seed)?);
    plan.extend(update(gpu, net, opt, lr)?);
    Ok(plan)
}

/// An evaluation step: gather, eval-mode forward, loss and accuracy into the metrics (and
/// the confusion counts, when given), then advance the source's counter.
pub fn eval_step(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    inputs: &PlanInputs,
    batch: usize,
) -> Result<Vec<Dispatch>> {
    eval_step_with(gpu, net, bufs, inputs, batch, None)
}

pub fn eval_step_with(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    inputs: &PlanInputs,
    batch: usize,
    confusion: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    let mut plan = vec![gather(gpu, bufs, inputs, batch)?];
    plan.extend(forward(gpu, net, bufs, batch, inputs.dropout_seed)?);
    let xs = XentShape {
        batch,
        classes: crate::model::NUM_CLASSES,
    };
    plan.push(softmax_xent::softmax_xent_forward(
        gpu,
        xs,
        bufs.logits(),
        &bufs.labels,
        inputs.metrics,
    )?);
    if let Some(c) = confusion {
        plan.push(softmax_xent::confusion_accumulate(
            gpu,
            xs,
            bufs.logits(),
            &bufs.labels,
            c,
        )?);
    }
    plan.push(optim::step_advance(gpu, inputs.source.counter)?);
    Ok(plan)
}

fn gather(gpu: &Gpu, bufs: &Buffers, inputs: &PlanInputs, batch: usize) -> Result<Dispatch> {
    let cfg = GatherConfig {
        batch,
        ..inputs.gather
    };
    let s = &inputs.source;
    data::gather_batch(
        gpu,
        cfg,
        s.images,
        s.labels,
        s.indices,
        s.counter,
        &bufs.acts[0],
        &bufs.labels,
    )
}
