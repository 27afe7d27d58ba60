//! Inference from a checkpoint: evaluation of a split (accuracy, loss, per-class precision
//! and recall, confusion matrix, all counted on the GPU) and prediction for image files.
//! `Evaluator` is the batched forward pass that both these and training's validation run.

mod evaluator;
pub use evaluator::{split_indices, Evaluation, Evaluator, GpuSplit};

use crate::checkpoint::Checkpoint;
use crate::data::{Images, Split};
use crate::gpu::{Gpu, GpuError};
use crate::net::{self, Buffers, Mode, Network, PlanInputs, Source};
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("{path}: not an image this program can read (PNG or JPEG): {message}")]
    Unreadable { path: String, message: String },
    #[error("{path}: the image is empty")]
    Empty { path: String },
    #[error("{failed} of {total} images could not be read (each is named above)")]
    Several { failed: usize, total: usize },
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ClassReport {
    pub class: String,
    pub support: usize,
    pub precision: f64,
    pub recall: f64,
    /// Per-class accuracy: correct predictions of this class over its examples (= recall).
    pub accuracy: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalReport {
    pub accuracy: f64,
    pub loss: f64,
    pub count: usize,
    pub per_class: Vec<ClassReport>,
    /// `confusion[label][prediction]`
    pub confusion: Vec<Vec<u32>>,
}

/// Evaluates `ckpt` on every example of `split`, in eval mode, on the GPU.
pub fn evaluate(
    gpu: &Gpu,
    ckpt: &Checkpoint,
    split: &Split,
    batch: usize,
) -> Result<EvalReport, GpuError> {
    evaluate_with(gpu, ckpt, split, batch, false)
}

/// `evaluate`, with `flip_tta` on the mean logits of each image and its mirror image.
pub fn evaluate_with(
    gpu: &Gpu,
    ckpt: &Checkpoint,
    split: &Split,
    batch: usize,
    flip_tta: bool,
) -> Result<EvalReport, GpuError> {
    pollster::block_on(evaluate_async(gpu, ckpt, split, batch, flip_tta))
}

/// `evaluate_with`, awaiting its readbacks (what a browser needs).
pub async fn evaluate_async(
    gpu: &Gpu,
    ckpt: &Checkpoint,
    split: &Split,
    batch: usize,
    flip_tta: bool,
) -> Result<EvalReport, GpuError> {
    crate::net::check_model(gpu, &ckpt.spec)?;
    let batch_used = batch.min(split.len());
    crate::net::check_batch(gpu, &ckpt.spec, batch_used, "--batch-size")?;
    let need =
        crate::net::MemoryNeed::of(&ckpt.spec, 0, batch_used, split.len() as u64 * (784 + 4));
    crate::net::check_memory(
        gpu,
        &format!("evaluating at batch {batch_used}"),
        need,
        "--batch-size",
    )?;
    let net = Network::new(gpu, ckpt.spec.clone(), &ckpt.params)?;
    let g = GpuSplit::upload(gpu, "eval", split)?;
    let ids: Vec<u32> = (0..split.len() as u32).collect();
    let ev = Evaluator::with_confusion(
        gpu,
        &net,
        &g,
        &ids,
        batch,
        ckpt.meta.input_mean,
        ckpt.meta.input_std,
        true,
        flip_tta,
    )?;
    let e = ev.run_async(gpu).await?;
    let flat = ev.confusion_async(gpu).await?.unwrap_or_default();
    let k = crate::model::NUM_CLASSES;
    let confusion: Vec<Vec<u32>> = flat.chunks(k).map(|r| r.to_vec()).collect();
    let per_class = (0..k)
        .map(|c| {
            let support: u32 = confusion[c].iter().sum();
            let predicted: u32 = (0..k).map(|r| confusion[r][c]).sum();
            let tp = confusion[c][c] as f64;
            let recall = if support > 0 {
                tp / support as f64
            } else {
                0.0
            };
            ClassReport {
                class: ckpt
                    .meta
                    .classes
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| c.to_string()),
                support: support as usize,
                precision: if predicted > 0 {
                    tp / predicted as f64
                } else {
                    0.0
                },
                recall,
                accuracy: recall,
            }
        })
        .collect();
    Ok(EvalReport {
        accuracy: e.accuracy,
        loss: e.loss,
        count: e.count,
        per_class,
        confusion,
    })
}

/// How to decide whether to invert an image (Fashion-MNIST items are light on black).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Invert {
    /// Invert when the image's border is mostly light.
    #[default]
    Auto,
    Yes,
    No,
}

/// Reads every image it can: the readable ones' paths and pixels, and the others' errors.
pub fn load_images(
    paths: &[std::path::PathBuf],
    invert: Invert,
) -> (Vec<&Path>, Vec<Vec<u8>>, Vec<ImageError>) {
    let (mut ok, mut pixels, mut failed) = (vec![], vec![], vec![]);
    for path in paths {
        match load_image(path, invert) {
            Ok(p) => {
                ok.push(path.as_path());
                pixels.push(p);
            }
            Err(e) => failed.push(e),
        }
    }
    (ok, pixels, failed)
}

/// Reads an image file as 28x28 u8 pixels: grayscale, scaled to fit with its aspect kept,
/// centred on a black square, inverted when the background is light.
pub fn load_image(path: &Path, invert: Invert) -> Result<Vec<u8>, ImageError> {
    let bytes = std::fs::read(path).map_err(|e| ImageError::Unreadable {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    decode_image(&path.display().to_string(), &bytes, invert)
}

/// Largest image side `predict` decodes: bigger files are refused before their pixels are
/// allocated (a 28x28 result needs nothing near this).
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// `load_image` on bytes already read; `name` is what errors call the image.
pub fn decode_image(name: &str, bytes: &[u8], invert: Invert) -> Result<Vec<u8>, ImageError> {
    let unreadable = |message: String| ImageError::Unreadable {
        path: name.to_string(),
        message,
    };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| unreadable(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(512 << 20);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| unreadable(e.to_string()))?;
    let name = name.to_string();
    let gray = img.to_luma8();
    let (w, h) = gray.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageError::Empty { path: name });
    }
    // The border's mean brightness says which way round the picture is.
    let mut border = Vec::new();
    for x in 0..w {
        border.push(gray.get_pixel(x, 0)[0]);
        border.push(gray.get_pixel(x, h - 1)[0]);
    }
    for y in 0..h {
        border.push(gray.get_pixel(0, y)[0]);
        border.push(gray.get_pixel(w - 1, y)[0]);
    }
    let light = border.iter().map(|&v| v as f64).sum::<f64>() / border.len() as f64 > 127.0;
    let flip = match invert {
        Invert::Auto => light,
        Invert::Yes => true,
        Invert::No => false,
    };
    let scale = 28.0 / w.max(h) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).clamp(1, 28),
        ((h as f64 * scale).round() as u32).clamp(1, 28),
    );
    let small = image::imageops::resize(&gray, nw, nh, image::imageops::FilterType::Triangle);
    let mut out = vec![0u8; 784];
    let (ox, oy) = ((28 - nw) / 2, (28 - nh) / 2);
    for y in 0..nh {
        for x in 0..nw {
            let v = small.get_pixel(x, y)[0];
            out[((oy + y) * 28 + ox + x) as usize] = if flip { 255 - v } else { v };
        }
    }
    Ok(out)
}

/// Class probabilities (softmax of the logits) for each 28x28 image; with `flip_tta`, of
/// the mean logits of each image and its mirror image (as `evaluate_with` and
/// `train --tta flip` score them).
pub fn predict(
    gpu: &Gpu,
    ckpt: &Checkpoint,
    images: &[Vec<u8>],
    flip_tta: bool,
) -> Result<Vec<Vec<f32>>, GpuError> {
    pollster::block_on(predict_async(gpu, ckpt, images, flip_tta))
}

/// `predict`, awaiting its readbacks (what a browser needs).
pub async fn predict_async(
    gpu: &Gpu,
    ckpt: &Checkpoint,
    images: &[Vec<u8>],
    flip_tta: bool,
) -> Result<Vec<Vec<f32>>, GpuError> {
    const CHUNK: usize = 256;
    let net = Network::new(gpu, ckpt.spec.clone(), &ckpt.params)?;
    let mirrored = match flip_tta {
        true => Some(gpu.zeros("predict mirrored logits", CHUNK * crate::model::NUM_CLASSES)?),
        false => None,
    };
    let mut out = Vec::new();
    for chunk in images.chunks(CHUNK) {
        let n = chunk.len();
        let split = Split {
            images: Images {
                count: n,
                rows: 28,
                cols: 28,
                pixels: chunk.concat(),
            },
            labels: vec![0; n],
        };
        let g = GpuSplit::upload(gpu, "predict", &split)?;
        let ids: Vec<u32> = (0..n as u32).collect();
        let idx = gpu.upload("predict indices", &ids)?;
        let counter = crate::kernels::optim::step_counter(gpu, "predict counter")?;
        let metrics = gpu.zeros(
            "predict metrics",
            crate::kernels::softmax_xent::metrics::LEN,
        )?;
        let bufs = Buffers::new(gpu, &ckpt.spec, n, Mode::Eval)?;
        let inputs = PlanInputs {
            source: Source {
                images: &g.images,
                labels: &g.labels,
                indices: &idx,
                counter: &counter,
            },
            gather: crate::kernels::data::GatherConfig {
                batch: n,
                mean: ckpt.meta.input_mean,
                std: ckpt.meta.input_std,
                flip: false,
                max_shift: 0,
                seed: 0,
                stride: n,
            },
            metrics: &metrics,
            dropout_seed: 0,
            label_smoothing: 0.0,
            augment: None,
        };
        let plan = match &mirrored {
            Some(m) => net::eval_step_flip_tta(gpu, &net, &bufs, &inputs, n, None, m)?,
            None => net::eval_step(gpu, &net, &bufs, &inputs, n, None)?,
        };
        gpu.run(&plan.iter().collect::<Vec<_>>())?;
        let logits: Vec<f32> = gpu.read_async(bufs.logits()).await?;
        for row in logits[..n * crate::model::NUM_CLASSES].chunks(crate::model::NUM_CLASSES) {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f64> = row.iter().map(|&v| ((v - m) as f64).exp()).collect();
            let s: f64 = e.iter().sum();
            out.push(e.iter().map(|v| (v / s) as f32).collect());
        }
    }
    Ok(out)
}
