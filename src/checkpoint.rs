//! Checkpoints in safetensors with PyTorch `nn.Sequential` state-dict names, so the
//! equivalent PyTorch model loads them with `load_state_dict(strict=True)` and a PyTorch
//! state dict saved with safetensors evaluates here.
//!
//! Tensors: `{i}.weight`, `{i}.bias` (conv `[out, in, k, k]`, linear `[out, in]`, batch norm `[c]`),
//! `{i}.running_mean`, `{i}.running_var`, `{i}.num_batches_tracked` (i64, shape []).
//! Optimizer state: `optim.{i}.weight.momentum_buffer` (SGD) or `optim.{i}.weight.exp_avg` /
//! `.exp_avg_sq` (Adam/AdamW), and `optim.step` (i64); with `--ema`, whose averages are the
//! model tensors, `optim.{name}.raw` holds the raw value of every model tensor. Metadata: `spec`, `input_mean`,
//! `input_std`, `classes` (JSON), `config` (TOML), `epoch`, `step`, `step_in_epoch`, `metrics`.

use crate::model::{Layer, LayerParams, ModelSpec, OptimizerKind};
pub use crate::net::OptimState;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Saving failed (disk full, folder removed…): a runtime error, not a bad checkpoint.
    #[error("{path}: could not save the checkpoint: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable safetensors file ({message})")]
    Format { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Mismatch { path: PathBuf, message: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    pub input_mean: f32,
    pub input_std: f32,
    pub classes: Vec<String>,
    pub config: String,
    /// Completed epochs (of which `step_in_epoch` steps into the next).
    pub epoch: usize,
    pub step: u64,
    pub step_in_epoch: usize,
    pub metrics: String,
}

impl Default for Meta {
    /// A fresh model's: the training normalisation and class names, no training done.
    fn default() -> Meta {
        Meta {
            input_mean: 0.5,
            input_std: 0.5,
            classes: crate::data::CLASSES.iter().map(|s| s.to_string()).collect(),
            config: String::new(),
            epoch: 0,
            step: 0,
            step_in_epoch: 0,
            metrics: String::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub spec: ModelSpec,
    pub params: Vec<LayerParams>,
    pub meta: Meta,
    pub optim: Option<OptimState>,
}

/// (name, shape, values) of every model tensor in state-dict order.
fn model_tensors<'a>(
    spec: &ModelSpec,
    params: &'a [LayerParams],
) -> Vec<(String, Vec<usize>, &'a [f32])> {
    let mut out = Vec::new();
    for (i, layer) in spec.layers.iter().enumerate() {
        let p = &params[i];
        let input = spec.input(i);
        match *layer {
            Layer::Conv { out: o, k, .. } => {
                out.push((format!("{i}.weight"), vec![o, input.c, k, k], &p.weight[..]));
                out.push((format!("{i}.bias"), vec![o], &p.bias[..]));
            }
            Layer::Linear { out: o } => {
                out.push((format!("{i}.weight"), vec![o, input.c], &p.weight[..]));
                out.push((format!("{i}.bias"), vec![o], &p.bias[..]));
            }
            Layer::BatchNorm => {
                for (name, v) in [
                    ("weight", &p.weight),
                    ("bias", &p.bias),
                    ("running_mean", &p.running_mean),
                    ("running_var", &p.running_var),
                ] {
                    out.push((format!("{i}.{name}"), vec![input.c], &v[..]));
                }
            }
            _ => {}
        }
    }
    out
}

/// A `model_tensors` name's layer index and field.
fn split_name(name: &str) -> (usize, &str) {
    let (layer, field) = name.split_once('.').expect("layer.field");
    (layer.parse().expect("index"), field)
}

fn set_tensor(p: &mut LayerParams, field: &str, values: Vec<f32>) {
    match field {
        "weight" => p.weight = values,
        "bias" => p.bias = values,
        "running_mean" => p.running_mean = values,
        "running_var" => p.running_var = values,
        _ => unreachable!("{field} is not a model tensor"),
    }
}

/// Every model tensor by state-dict name (what `OptimState::raw` holds).
pub fn named_tensors(
    spec: &ModelSpec,
    params: &[LayerParams],
) -> std::collections::BTreeMap<String, Vec<f32>> {
    (model_tensors(spec, params).into_iter())
        .map(|(name, _, values)| (name, values.to_vec()))
        .collect()
}

impl Checkpoint {
    /// The weights training resumes from: the raw ones where the model tensors are
    /// `--ema`'s averages, else the model tensors.
    pub fn training_params(&self) -> Vec<LayerParams> {
        let mut params = self.params.clone();
        if let Some(o) = &self.optim {
            for (name, values) in &o.raw {
                let (i, field) = split_name(name);
                set_tensor(&mut params[i], field, values.clone());
            }
        }
        params
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialises a checkpoint to bytes.
pub fn to_bytes(c: &Checkpoint) -> Result<Vec<u8>, String> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape, values) in model_tensors(&c.spec, &c.params) {
        owned.push((name, Dtype::F32, shape, f32_bytes(values)));
    }
    for (i, layer) in c.spec.layers.iter().enumerate() {
        if matches!(layer, Layer::BatchNorm) {
            owned.push((
                format!("{i}.num_batches_tracked"),
                Dtype::I64,
                vec![],
                (c.meta.step as i64).to_le_bytes().to_vec(),
            ));
        }
    }
    if let Some(o) = &c.optim {
        let (n1, n2) = moment_names(o.kind.unwrap_or_default());
        for (k, v) in &o.m1 {
            owned.push((
                format!("optim.{k}.{n1}"),
                Dtype::F32,
                vec![v.len()],
                f32_bytes(v),
            ));
        }
        if let Some(n2) = n2 {
            for (k, v) in &o.m2 {
                owned.push((
                    format!("optim.{k}.{n2}"),
                    Dtype::F32,
                    vec![v.len()],
                    f32_bytes(v),
                ));
            }
        }
        for (k, v) in &o.raw {
            owned.push((
                format!("optim.{k}.raw"),
                Dtype::F32,
                vec![v.len()],
                f32_bytes(v),
            ));
        }
        owned.push((
            "optim.step".into(),
            Dtype::I64,
            vec![],
            (o.step as i64).to_le_bytes().to_vec(),
        ));
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let m = &c.meta;
    let mut meta = HashMap::new();
    meta.insert("spec".to_string(), c.spec.to_text());
    meta.insert("input_mean".into(), m.input_mean.to_string());
    meta.insert("input_std".into(), m.input_std.to_string());
    meta.insert(
        "classes".into(),
        serde_json::to_string(&m.classes).unwrap_or_default(),
    );
    meta.insert("config".into(), m.config.clone());
    meta.insert("epoch".into(), m.epoch.to_string());
    meta.insert("step".into(), m.step.to_string());
    meta.insert("step_in_epoch".into(), m.step_in_epoch.to_string());
    meta.insert("metrics".into(), m.metrics.clone());
    if let Some(o) = &c.optim {
        meta.insert("optimizer".into(), o.kind.unwrap_or_default().to_string());
    }
    safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())
}

fn moment_names(kind: OptimizerKind) -> (&'static str, Option<&'static str>) {
    match kind {
        OptimizerKind::Sgd => ("momentum_buffer", None),
        OptimizerKind::Adam | OptimizerKind::Adamw => ("exp_avg", Some("exp_avg_sq")),
    }
}

/// Writes a checkpoint atomically (temporary file + rename).
pub fn save(path: &Path, c: &Checkpoint) -> Result<(), CheckpointError> {
    let bytes = to_bytes(c).map_err(|message| CheckpointError::Format {
        path: path.into(),
        message,
    })?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|source| CheckpointError::Write {
        path: path.into(),
        source,
    })
}

/// Reads a checkpoint. `spec_override` gives the model for files without our metadata
/// (e.g. a PyTorch state dict saved with safetensors).
pub fn load(path: &Path, spec_override: Option<&ModelSpec>) -> Result<Checkpoint, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.into(),
        source,
    })?;
    from_bytes(path, &bytes, spec_override)
}

pub fn from_bytes(
    path: &Path,
    bytes: &[u8],
    spec_override: Option<&ModelSpec>,
) -> Result<Checkpoint, CheckpointError> {
    let fmt = |message: String| CheckpointError::Format {
        path: path.into(),
        message,
    };
    let mismatch = |message: String| CheckpointError::Mismatch {
        path: path.into(),
        message,
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| fmt(e.to_string()))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| fmt(e.to_string()))?;
    let md = header.metadata().clone().unwrap_or_default();
    let spec = match (spec_override, md.get("spec")) {
        (Some(s), Some(text)) => {
            let own = ModelSpec::parse(text)
                .map_err(|e| mismatch(format!("metadata `spec` is invalid: {e}")))?;
            if own.layers != s.layers {
                return Err(mismatch(format!(
                    "the checkpoint holds model `{}`, not `{}`",
                    own.to_text(),
                    s.to_text()
                )));
            }
            own
        }
        (Some(s), None) => s.clone(),
        (None, Some(text)) => ModelSpec::parse(text)
            .map_err(|e| mismatch(format!("metadata `spec` is invalid: {e}")))?,
        (None, None) => {
            return Err(mismatch(
                "no `spec` in the metadata; pass --model to say which network this is".into(),
            ))
        }
    };
    let num = |key: &str, default: f64| -> Result<f64, CheckpointError> {
        md.get(key).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| mismatch(format!("metadata `{key}` = {v:?} is not a number")))
        })
    };
    let input_mean = num("input_mean", 0.5)? as f32;
    let input_std = num("input_std", 0.5)? as f32;
    if !(input_mean.is_finite() && input_std.is_finite() && input_std > 0.0) {
        return Err(mismatch(format!(
            "metadata input_mean = {input_mean}, input_std = {input_std}: the normalisation \
             must be finite with a positive standard deviation"
        )));
    }
    let meta = Meta {
        input_mean,
        input_std,
        classes: md
            .get("classes")
            .map(|c| {
                serde_json::from_str(c)
                    .map_err(|_| mismatch(format!("metadata `classes` = {c:?} is not a JSON list")))
            })
            .transpose()?
            .unwrap_or_else(|| crate::data::CLASSES.iter().map(|s| s.to_string()).collect()),
        config: md.get("config").cloned().unwrap_or_default(),
        epoch: num("epoch", 0.0)? as usize,
        step: num("step", 0.0)? as u64,
        step_in_epoch: num("step_in_epoch", 0.0)? as usize,
        metrics: md.get("metrics").cloned().unwrap_or_else(|| "{}".into()),
    };

    let read_f32 = |name: &str, shape: &[usize]| -> Result<Vec<f32>, CheckpointError> {
        let t = st.tensor(name).map_err(|_| {
            mismatch(format!(
                "tensor `{name}` is missing (expected shape {shape:?})"
            ))
        })?;
        if t.dtype() != Dtype::F32 {
            return Err(mismatch(format!(
                "tensor `{name}` is {:?}, expected F32",
                t.dtype()
            )));
        }
        if t.shape() != shape {
            return Err(mismatch(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                t.shape()
            )));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    // The same layout the model would save, read back tensor by tensor.
    let template = spec.init_params(0);
    let mut params = template.clone();
    let mut expected: Vec<String> = Vec::new();
    for (name, shape, _) in model_tensors(&spec, &template) {
        let (i, field) = split_name(&name);
        let values = read_f32(&name, &shape)?;
        // A diverged or corrupted model would evaluate to garbage (a NaN loss, NaN %).
        if let Some(j) = values.iter().position(|v| !v.is_finite()) {
            return Err(mismatch(format!(
                "tensor `{name}` holds a non-finite value ({} at index {j}); the model it \
                 came from diverged or the file is damaged",
                values[j]
            )));
        }
        set_tensor(&mut params[i], field, values);
        expected.push(name);
    }
    for (i, layer) in spec.layers.iter().enumerate() {
        if matches!(layer, Layer::BatchNorm) {
            let name = format!("{i}.num_batches_tracked");
            // Optional: PyTorch state dicts always have it, others may not.
            if let Ok(t) = st.tensor(&name) {
                if t.dtype() != Dtype::I64 || !t.shape().is_empty() {
                    return Err(mismatch(format!(
                        "tensor `{name}` should be an I64 scalar, is {:?} {:?}",
                        t.dtype(),
                        t.shape()
                    )));
                }
            }
            expected.push(name);
        }
    }
    // Optimizer state, if present.
    let kind = md.get("optimizer").and_then(|k| match k.as_str() {
        "sgd" => Some(OptimizerKind::Sgd),
        "adam" => Some(OptimizerKind::Adam),
        "adamw" => Some(OptimizerKind::Adamw),
        _ => None,
    });
    let mut optim = None;
    if st.names().iter().any(|n| n.starts_with("optim.")) {
        let kind = kind.ok_or_else(|| {
            mismatch("optimizer state without an `optimizer` metadata entry".into())
        })?;
        let (n1, n2) = moment_names(kind);
        let mut o = OptimState {
            kind: Some(kind),
            ..Default::default()
        };
        for (name, shape, _) in model_tensors(&spec, &template) {
            if name.ends_with("running_mean") || name.ends_with("running_var") {
                continue;
            }
            let len = shape.iter().product();
            let k1 = format!("optim.{name}.{n1}");
            o.m1.insert(name.clone(), read_f32(&k1, &[len])?);
            expected.push(k1);
            if let Some(n2) = n2 {
                let k2 = format!("optim.{name}.{n2}");
                o.m2.insert(name.clone(), read_f32(&k2, &[len])?);
                expected.push(k2);
            }
        }
        // `--ema`'s raw weights: all of them or none.
        if st.names().iter().any(|n| n.ends_with(".raw")) {
            for (name, shape, _) in model_tensors(&spec, &template) {
                let key = format!("optim.{name}.raw");
                o.raw
                    .insert(name, read_f32(&key, &[shape.iter().product()])?);
                expected.push(key);
            }
        }
        let t = st
            .tensor("optim.step")
            .map_err(|_| mismatch("tensor `optim.step` is missing".into()))?;
        let b: [u8; 8] = t
            .data()
            .try_into()
            .map_err(|_| mismatch("tensor `optim.step` is not an I64 scalar".into()))?;
        o.step = i64::from_le_bytes(b).max(0) as u64;
        expected.push("optim.step".into());
        optim = Some(o);
    }
    let mut unexpected: Vec<&str> = st
        .names()
        .into_iter()
        .filter(|n| !expected.iter().any(|e| e == n))
        .collect();
    unexpected.sort();
    if let Some(n) = unexpected.first() {
        return Err(mismatch(format!(
            "unexpected tensor `{n}`: this checkpoint is for a different model than `{}`",
            spec.to_text()
        )));
    }
    Ok(Checkpoint {
        spec,
        params,
        meta,
        optim,
    })
}
