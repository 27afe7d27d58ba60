//! Whole steps built from the layer plans (`plan`): gather, forward, loss, backward and
//! update for training; gather, forward and metrics for evaluation. The 3x3 convolutions'
//! weights are packed once per step, in one dispatch in front.

use super::plan::{backward, classifier, forward_packed};
use super::{shapes, Buffers, Network, OptimizerConfig};
use crate::gpu::{Dispatch, Gpu, Result, Tensor};
use crate::kernels::{
    augment::{self, Augment},
    conv2d::WeightPacker,
    data::{self, GatherConfig},
    elementwise,
    optim::{self, AdamConfig, SgdConfig},
    softmax_xent::{self, CounterDuty, XentShape},
};
use crate::model::{Layer, OptimizerKind, NUM_CLASSES};

/// Where a plan's examples come from: a u8 data set on the GPU and an index list into it.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub images: &'a Tensor,
    pub labels: &'a Tensor,
    pub indices: &'a Tensor,
    /// The counter whose `[0] - [1]` selects the step's slice of `indices`.
    pub counter: &'a Tensor,
}

/// Everything a plan needs besides the network and its buffers.
pub struct PlanInputs<'a> {
    pub source: Source<'a>,
    pub gather: GatherConfig,
    pub metrics: &'a Tensor,
    pub dropout_seed: u32,
    /// Label smoothing of the training loss (0 for evaluation).
    pub label_smoothing: f32,
    /// `--augment` and its workspace (the images as an atlas, the passes' scratch), whose
    /// images `source.indices` number; None: the plain gather (with the legacy
    /// --flip/--shift).
    pub augment: Option<(Augment, &'a augment::Workspace)>,
}

/// The forward pass over the batch in `bufs`, its 3x3 weights packed in one dispatch in
/// front.
pub fn forward(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    batch: usize,
    dropout_seed: u32,
) -> Result<Vec<Dispatch>> {
    let mut packer = weight_packer(gpu, net, batch)?;
    let plan = forward_packed(gpu, net, bufs, batch, dropout_seed, packer.as_mut())?;
    with_packing(gpu, packer.as_ref(), plan)
}
/// One optimizer update of every parameter; the last one also ends the step (advances the
/// counter, from the copy of the step the training loss made).
pub fn update(
    gpu: &Gpu,
    net: &Network,
    opt: &OptimizerConfig,
    lr: &Tensor,
) -> Result<Vec<Dispatch>> {
    let mut out = Vec::new();
    // One dispatch per arena (one for every model whose parameters fit one binding): the
    // gaps between tensors hold zero weights and zero gradients, which every update keeps
    // at zero.
    for (i, p) in net.arenas.iter().enumerate() {
        let ends_step = i + 1 == net.arenas.len();
        out.push(match opt.kind {
            OptimizerKind::Sgd => {
                let cfg = SgdConfig {
                    momentum: opt.momentum,
                    nesterov: opt.nesterov,
                    weight_decay: opt.weight_decay,
                    l1: opt.l1,
                };
                optim::sgd_step(
                    gpu,
                    cfg,
                    &p.value,
                    &p.grad,
                    &p.m1,
                    &net.counter,
                    lr,
                    ends_step,
                    net.averaging(i),
                )?
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
                let (m, v) = (&p.m1, &p.m2);
                optim::adam_step(
                    gpu,
                    cfg,
                    &p.value,
                    &p.grad,
                    m,
                    v,
                    &net.counter,
                    lr,
                    ends_step,
                    net.averaging(i),
                )?
            }
        });
    }
    Ok(out)
}

/// Where the step's 3x3 convolutions get their packed weights: one packing dispatch for all
/// of them, when the parameters live in one arena (else each packs its own).
fn weight_packer<'a>(
    gpu: &Gpu,
    net: &'a Network,
    batch: usize,
) -> Result<Option<WeightPacker<'a>>> {
    let [arena] = net.arenas.as_slice() else {
        return Ok(None);
    };
    let spec = &net.spec;
    let pad32 = |v: usize| v.next_multiple_of(32);
    // Room for every 3x3 convolution, forward and flipped (the kernel choice comes later).
    let lens: Vec<usize> = (0..spec.layers.len())
        .filter(|&layer| matches!(spec.layers[layer], Layer::Conv { .. }))
        .map(|layer| shapes::conv(spec, layer, batch))
        .filter(|s| s.kh == 3 && s.kw == 3)
        .flat_map(|s| [s.ci * 9 * pad32(s.co), s.co * 9 * pad32(s.ci)])
        .collect();
    WeightPacker::new(gpu, &arena.value, &lens)
}

/// `plan` with the packer's one dispatch in front (the weights are unchanged from there on
/// until the update, which comes after every convolution).
fn with_packing(
    gpu: &Gpu,
    packer: Option<&WeightPacker>,
    mut plan: Vec<Dispatch>,
) -> Result<Vec<Dispatch>> {
    if let Some(pack) = packer.map(|p| p.dispatch(gpu)).transpose()?.flatten() {
        plan.insert(0, pack);
    }
    Ok(plan)
}

/// Forward, mean cross-entropy (loss and accuracy added to `metrics`) and backward on the
/// batch already in `bufs`: every parameter gradient, no update. The one composition of a
/// gradient computation that training, `bench`'s validation and the fixture test share.
pub fn gradient_step(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    batch: usize,
    dropout_seed: u32,
    metrics: &Tensor,
    label_smoothing: f32,
) -> Result<Vec<Dispatch>> {
    let mut packer = weight_packer(gpu, net, batch)?;
    let mut plan = forward_packed(gpu, net, bufs, batch, dropout_seed, packer.as_mut())?;
    let xs = XentShape {
        batch,
        classes: NUM_CLASSES,
        smoothing: label_smoothing,
    };
    let (logits, labels) = (bufs.logits(), &bufs.labels);
    let (dlogits, duty) = (bufs.logits_grad(), CounterDuty::Snapshot(&net.counter));
    // The classifier's input gradient comes with the loss where there is one to compute.
    let classifier = classifier(net, bufs, batch);
    let classifier_dx_done = classifier.is_some();
    plan.push(match classifier {
        Some(c) => softmax_xent::softmax_xent_train_input_grad(
            gpu, xs, logits, labels, metrics, dlogits, duty, c,
        )?,
        None => softmax_xent::softmax_xent_train(gpu, xs, logits, labels, metrics, dlogits, duty)?,
    });
    plan.extend(backward(
        gpu,
        net,
        bufs,
        batch,
        dropout_seed,
        packer.as_mut(),
        classifier_dx_done,
    )?);
    with_packing(gpu, packer.as_ref(), plan)
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
    let mut plan = gather(gpu, bufs, inputs, batch)?;
    plan.extend(gradient_step(
        gpu,
        net,
        bufs,
        batch,
        inputs.dropout_seed,
        inputs.metrics,
        inputs.label_smoothing,
    )?);
    plan.extend(update(gpu, net, opt, lr)?);
    Ok(plan)
}

/// An evaluation step: gather, eval-mode forward, loss and accuracy into the metrics (and
/// the confusion counts, when given); the loss dispatch advances the source's counter.
pub fn eval_step(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    inputs: &PlanInputs,
    batch: usize,
    confusion: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    eval_step_views(gpu, net, bufs, inputs, batch, confusion, None)
}

/// `eval_step` with test-time augmentation by flips: the logits are the mean of the
/// batch's and its mirror image's (the mirrored view first, kept in `mirrored_logits`,
/// `[batch, classes]`); the loss, accuracy and confusion are the mean logits'.
pub fn eval_step_flip_tta(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    inputs: &PlanInputs,
    batch: usize,
    confusion: Option<&Tensor>,
    mirrored_logits: &Tensor,
) -> Result<Vec<Dispatch>> {
    eval_step_views(
        gpu,
        net,
        bufs,
        inputs,
        batch,
        confusion,
        Some(mirrored_logits),
    )
}

fn eval_step_views(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    inputs: &PlanInputs,
    batch: usize,
    confusion: Option<&Tensor>,
    mirrored_logits: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    let n = batch * NUM_CLASSES;
    let mut plan = Vec::new();
    // Both gathers read the same counter: only the loss below advances it.
    if let Some(kept) = mirrored_logits {
        let (s, cfg) = (
            &inputs.source,
            GatherConfig {
                batch,
                ..inputs.gather
            },
        );
        plan.push(data::gather_batch_mirrored(
            gpu,
            cfg,
            s.images,
            s.labels,
            s.indices,
            s.counter,
            bufs.input(),
            &bufs.labels,
        )?);
        plan.extend(forward(gpu, net, bufs, batch, inputs.dropout_seed)?);
        plan.push(elementwise::copy(gpu, bufs.logits(), kept, n)?);
    }
    plan.extend(gather(gpu, bufs, inputs, batch)?);
    plan.extend(forward(gpu, net, bufs, batch, inputs.dropout_seed)?);
    if let Some(kept) = mirrored_logits {
        plan.push(elementwise::average_into(gpu, kept, bufs.logits(), n)?);
    }
    // Evaluation reports the plain cross-entropy, whatever the training loss smooths.
    let xs = XentShape {
        batch,
        classes: NUM_CLASSES,
        smoothing: 0.0,
    };
    let (logits, labels) = (bufs.logits(), &bufs.labels);
    plan.push(softmax_xent::softmax_xent_forward(
        gpu,
        xs,
        logits,
        labels,
        inputs.metrics,
        // The evaluation step's end: nothing after the loss reads the counter.
        CounterDuty::Advance(inputs.source.counter),
    )?);
    if let Some(c) = confusion {
        plan.push(softmax_xent::confusion_accumulate(
            gpu, xs, logits, labels, c,
        )?);
    }
    Ok(plan)
}

/// Batch assembly: the plain gather, or the augmented one (2–3 dispatches) when training
/// with `--augment`.
fn gather(gpu: &Gpu, bufs: &Buffers, inputs: &PlanInputs, batch: usize) -> Result<Vec<Dispatch>> {
    let cfg = GatherConfig {
        batch,
        ..inputs.gather
    };
    let s = &inputs.source;
    match &inputs.augment {
        Some((a, ws)) => augment::gather_augmented(
            gpu,
            a,
            cfg,
            ws,
            s.labels,
            s.indices,
            s.counter,
            bufs.input(),
            &bufs.labels,
        ),
        None => Ok(vec![data::gather_batch(
            gpu,
            cfg,
            s.images,
            s.labels,
            s.indices,
            s.counter,
            bufs.input(),
            &bufs.labels,
        )?]),
    }
}
