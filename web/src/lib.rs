//! wgpu-fmnist in a browser tab: the library's kernels, step plans and trainer on the
//! browser's WebGPU, driven by the page in `web/` (built by `scripts/build-web.sh`). The
//! native CLI runs the same code, blocking where this awaits.

#![cfg(target_arch = "wasm32")]

use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use std::collections::BTreeMap;
use std::path::Path;
use wasm_bindgen::prelude::*;
use wgpu_fmnist::checkpoint::{self, Checkpoint, Meta};
use wgpu_fmnist::data::{self, Dataset};
use wgpu_fmnist::gpu::Gpu;
use wgpu_fmnist::kernels::data::PIXELS as PIXELS_PER_IMAGE;
use wgpu_fmnist::model::ModelSpec;
use wgpu_fmnist::train::{
    self, config::Tta, EpochRecord, PartialConfig, Progress, Reporter, RunOptions, StepLosses,
    TrainConfig,
};

/// Test images shown with their predictions on the page.
const SAMPLES: usize = 32;

fn message(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

/// The browser's WebGPU adapter and a device within the limits the kernels need.
async fn request_gpu() -> Result<Gpu, String> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::BROWSER_WEBGPU;
    let instance = wgpu::Instance::new(desc);
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    };
    let adapter = instance.request_adapter(&options).await.map_err(|e| {
        format!("this browser offers no WebGPU adapter ({e}); Chrome, Edge or Safari 26 have one")
    })?;
    Gpu::from_adapter_async(adapter, |_| {})
        .await
        .map_err(|e| format!("this WebGPU adapter cannot train here: {e}"))
}

/// Settings as the page's query names them (`model=mlp&epochs=1`, any training flag
/// without its dashes), each read as a config file's `key = value` would be.
fn config(settings: &BTreeMap<String, String>) -> Result<TrainConfig, String> {
    let mut partial = PartialConfig::default();
    for (key, value) in settings {
        let key = key.replace('-', "_");
        let literal = PartialConfig::from_toml(&format!("{key} = {value}"));
        let quoted = || {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
            PartialConfig::from_toml(&format!("{key} = \"{escaped}\""))
        };
        let layer = literal
            .or_else(|_| quoted())
            .map_err(|e| format!("setting `{key}={value}`: {}", e.trim()))?;
        partial = partial.overlay(&layer);
    }
    TrainConfig::resolve(&partial).map_err(|e| e.to_string())
}

/// The four IDX files (gzipped or not): train images, train labels, test images, labels.
fn dataset(files: &Array) -> Result<Dataset, String> {
    let bytes: Vec<Vec<u8>> = files.iter().map(|f| Uint8Array::new(&f).to_vec()).collect();
    let [train_images, train_labels, test_images, test_labels]: [Vec<u8>; 4] =
        bytes.try_into().map_err(|_| {
            "expected four files: train images, train labels, test images, test labels".to_string()
        })?;
    let split = |name: &str, images, labels| {
        let (i, l) = (format!("{name}-images"), format!("{name}-labels"));
        data::split_from_bytes(Path::new(&i), images, Path::new(&l), labels)
            .map_err(|e| e.to_string())
    };
    Ok(Dataset {
        dir: "browser".into(),
        train: split("train", train_images, train_labels)?,
        test: split("test", test_images, test_labels)?,
    })
}

/// Hands each event to the page as one JSON string.
struct PageReporter {
    on_event: Function,
    /// Each step's loss, when asked for.
    steps: Option<StepLosses>,
}

impl PageReporter {
    fn send(&self, event: serde_json::Value) {
        let _ = self
            .on_event
            .call1(&JsValue::NULL, &JsValue::from_str(&event.to_string()));
    }
}

impl Reporter for PageReporter {
    fn start(
        &mut self,
        cfg: &TrainConfig,
        spec: &ModelSpec,
        train: usize,
        val: usize,
        test: usize,
        steps_per_epoch: usize,
    ) {
        self.send(serde_json::json!({
            "kind": "start", "model": cfg.model, "spec": spec.to_text(), "epochs": cfg.epochs,
            "train": train, "val": val, "test": test, "steps_per_epoch": steps_per_epoch,
        }));
    }
    fn epoch_start(&mut self, epoch: usize, epochs: usize) {
        self.send(serde_json::json!({"kind": "epoch_start", "epoch": epoch, "epochs": epochs}));
    }
    fn progress(&mut self, p: &Progress) {
        if let Some(s) = &mut self.steps {
            s.record(p);
        }
        self.send(serde_json::json!({
            "kind": "progress", "step": p.step, "steps": p.steps, "loss": p.running_loss,
            "accuracy": p.running_accuracy, "images_per_second": p.images_per_second,
        }));
    }
    fn epoch_end(&mut self, r: &EpochRecord) {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        v["kind"] = "epoch".into();
        self.send(v);
    }
    fn message(&mut self, text: &str) {
        self.send(serde_json::json!({"kind": "message", "text": text}));
    }
}

/// Trains as `settings` (a JSON object of the page's query) say on `files`, reporting each
/// event to `on_event`, then evaluates the test set. Resolves to an object: `result` (JSON:
/// test accuracy and loss, epochs, seconds, adapter, confusion, history), `checkpoint` (the
/// model as safetensors, which the native `eval` and `predict` load) and `samples` (JSON:
/// test images with their labels and predictions).
#[wasm_bindgen]
pub async fn train(settings: String, files: Array, on_event: Function) -> Result<Object, JsValue> {
    let mut settings: BTreeMap<String, String> =
        serde_json::from_str(&settings).map_err(|e| message(format!("settings: {e}")))?;
    // Not a training flag: each step's loss in the result, for comparing with a native run.
    let step_losses = settings
        .remove("step_losses")
        .is_some_and(|v| v == "1" || v == "true");
    let cfg = config(&settings).map_err(message)?;
    let data = dataset(&files).map_err(message)?;
    let gpu = request_gpu().await.map_err(message)?;
    let mut reporter = PageReporter {
        on_event,
        steps: step_losses.then(StepLosses::default),
    };
    let opts = RunOptions {
        step_metrics: step_losses,
        ..RunOptions::default()
    };
    let started = web_time::Instant::now();
    let outcome = train::train_async(&gpu, &cfg, &data, &mut reporter, &opts)
        .await
        .map_err(message)?;
    let seconds = started.elapsed().as_secs_f64();
    let spec = cfg.model_spec().map_err(message)?;
    let model = Checkpoint {
        spec,
        params: outcome.params.clone(),
        meta: Meta {
            input_mean: cfg.input_mean,
            input_std: cfg.input_std,
            config: cfg.to_toml(),
            epoch: outcome.epochs_run,
            metrics: serde_json::json!({"test_accuracy": outcome.test_accuracy}).to_string(),
            ..Meta::default()
        },
        optim: None,
    };
    let test = if cfg.limit_test > 0 {
        data.test.take(cfg.limit_test)
    } else {
        data.test.clone()
    };
    let flip = cfg.tta == Tta::Flip;
    let report = wgpu_fmnist::infer::evaluate_async(&gpu, &model, &test, cfg.eval_batch_size, flip)
        .await
        .map_err(message)?;
    let shown = SAMPLES.min(test.len());
    let images: Vec<Vec<u8>> = (0..shown)
        .map(|i| test.images.pixels[i * PIXELS_PER_IMAGE..(i + 1) * PIXELS_PER_IMAGE].to_vec())
        .collect();
    let probabilities = wgpu_fmnist::infer::predict_async(&gpu, &model, &images, flip)
        .await
        .map_err(message)?;
    let samples: Vec<serde_json::Value> = (images.iter().zip(&probabilities).enumerate())
        .map(|(i, (pixels, p))| {
            let best = (0..p.len()).fold(0, |b, c| if p[c] > p[b] { c } else { b });
            serde_json::json!({
                "pixels": pixels, "label": test.labels[i], "predicted": best, "probability": p[best],
            })
        })
        .collect();
    let result = serde_json::json!({
        "test_accuracy": outcome.test_accuracy,
        "test_loss": outcome.test_loss,
        "evaluated_accuracy": report.accuracy,
        "epochs": outcome.epochs_run,
        "seconds": seconds,
        "train_seconds": outcome.history.iter().map(|h| h.seconds).sum::<f64>(),
        "images_per_second": outcome.images_per_second,
        "adapter": adapter_name(&gpu),
        "model": cfg.model,
        "seed": cfg.seed,
        "confusion": report.confusion,
        "classes": data::CLASSES,
        "history": outcome.history,
        "step_losses": reporter.steps.map(|s| s.losses),
    });
    let bytes = checkpoint::to_bytes(&model).map_err(message)?;
    let out = Object::new();
    Reflect::set(
        &out,
        &"result".into(),
        &JsValue::from_str(&result.to_string()),
    )?;
    Reflect::set(&out, &"checkpoint".into(), &Uint8Array::from(&bytes[..]))?;
    let samples = serde_json::Value::Array(samples).to_string();
    Reflect::set(&out, &"samples".into(), &JsValue::from_str(&samples))?;
    Ok(out)
}

/// The adapter as the page and its result name it: browsers may withhold the name.
fn adapter_name(gpu: &Gpu) -> String {
    let i = &gpu.info;
    let name = [i.name.as_str(), i.driver.as_str(), i.driver_info.as_str()]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("unnamed adapter");
    format!("{name} (browser WebGPU, {:?})", i.device_type)
}
