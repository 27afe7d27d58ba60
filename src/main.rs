//! Command-line interface: parses arguments, calls the library, maps errors to exit codes.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use wgpu_fmnist::gpu::{self, AdapterRequest, Backend, Variant};
use wgpu_fmnist::model::{self, OptimizerKind};
use wgpu_fmnist::train::{self, report, PartialConfig, TrainConfig};

#[derive(Parser)]
#[command(
    name = "wgpu-fmnist",
    version,
    about = "Train and run Fashion-MNIST classifiers on the GPU with WGSL compute shaders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List GPU adapters with their backend, type, driver and the limits that matter here.
    Devices {
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// One JSON object per adapter.
        #[arg(long)]
        json: bool,
    },
    /// Create a device as `train` would and print which adapter was picked.
    Probe(GpuArgs),
    /// Train a model on Fashion-MNIST on the GPU.
    Train(Box<TrainArgs>),
    /// Time each kernel of a model's training step and the end-to-end images/s.
    Bench {
        #[arg(long, default_value = "regcnn")]
        model: String,
        /// Default: the preset's batch size (32 for a spec string).
        #[arg(long)]
        batch_size: Option<usize>,
        #[arg(long, value_enum)]
        optimizer: Option<OptimizerKind>,
        /// Seconds of end-to-end training to time.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// List every dispatch of the step (default: totals per kernel).
        #[arg(long)]
        kernels: bool,
        /// One JSON object per kernel, then a summary line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Evaluate a checkpoint: accuracy, loss, per-class precision/recall, confusion matrix.
    Eval {
        #[arg(long, value_name = "FILE")]
        checkpoint: PathBuf,
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = SplitName::Test)]
        split: SplitName,
        /// The model, for checkpoints without `spec` metadata (e.g. saved from PyTorch).
        #[arg(long)]
        model: Option<String>,
        #[arg(long, default_value_t = 250)]
        batch_size: usize,
        /// One JSON object with accuracy, loss, per_class and confusion.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Classify image files (PNG, JPEG) with a checkpoint.
    Predict {
        #[arg(long, value_name = "FILE")]
        checkpoint: PathBuf,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
        /// How many classes to show per image.
        #[arg(long, default_value_t = 3)]
        top: usize,
        /// Invert the image (Fashion-MNIST items are light on a dark background); auto
        /// inverts pictures whose border is light.
        #[arg(long, value_enum, default_value_t = wgpu_fmnist::infer::Invert::Auto)]
        invert: wgpu_fmnist::infer::Invert,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Print a model's layers: output shapes, parameters and FLOPs.
    Summary {
        /// Preset (mlp, cnn1, cnn2, regcnn, vgg) or a layer spec string.
        #[arg(long, default_value = "regcnn")]
        model: String,
    },
}

/// `train` flags. Every one overrides the `--config` file, which overrides the preset.
#[derive(Args, Debug)]
struct TrainArgs {
    /// Preset (mlp, cnn1, cnn2, regcnn, vgg) or a layer spec such as
    /// "conv(32,3) bn relu maxpool(2) flatten linear(10)".
    #[arg(long)]
    model: Option<String>,
    /// TOML file with any of these settings (snake_case keys, e.g. batch_size = 64).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    #[arg(long)]
    lr: Option<f32>,
    /// SGD momentum.
    #[arg(long)]
    momentum: Option<f32>,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    nesterov: bool,
    /// L2 penalty (SGD, Adam) or decoupled decay (AdamW).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// L1 penalty: adds l1 * sign(w) to each gradient.
    #[arg(long)]
    l1: Option<f32>,
    #[arg(long)]
    seed: Option<u64>,
    /// Training images held out for validation (0: train on all).
    #[arg(long)]
    val: Option<usize>,
    /// Early stopping: stop after N epochs without a better validation accuracy.
    #[arg(long)]
    patience: Option<usize>,
    /// Augment with random horizontal flips.
    #[arg(long)]
    flip: bool,
    /// Augment with random shifts of up to N pixels.
    #[arg(long, value_name = "N")]
    shift: Option<u32>,
    /// Batch size for validation and test passes.
    #[arg(long)]
    eval_batch_size: Option<usize>,
    /// Train on only the first N training images (quick runs).
    #[arg(long, value_name = "N")]
    limit_train: Option<usize>,
    /// Test on only the first N test images.
    #[arg(long, value_name = "N")]
    limit_test: Option<usize>,
    /// Directory with the four *-ubyte(.gz) files.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Parent folder of run folders.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Run folder name (default: the model name, numbered if taken).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    gpu: OptGpuArgs,
    /// Continue the run in this folder from its last.safetensors (exactly: optimizer state,
    /// step and data order). Only --epochs (to extend), output and adapter flags may change.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// One JSON object per line on stdout: one per epoch, then a summary.
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Print nothing but errors.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SplitName {
    Test,
    Train,
}

/// Adapter flags for `train` (optional so a config file can set them).
#[derive(Args, Clone, Debug)]
struct OptGpuArgs {
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    #[arg(long, value_name = "NAME-SUBSTRING")]
    adapter: Option<String>,
    #[arg(long)]
    software: bool,
    #[arg(long, value_enum)]
    variant: Option<Variant>,
}

impl TrainArgs {
    fn partial(&self) -> PartialConfig {
        PartialConfig {
            model: self.model.clone(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer: self.optimizer,
            lr: self.lr,
            momentum: self.momentum,
            nesterov: self.nesterov.then_some(true),
            weight_decay: self.weight_decay,
            l1: self.l1,
            seed: self.seed,
            val: self.val,
            patience: self.patience,
            flip: self.flip.then_some(true),
            shift: self.shift,
            eval_batch_size: self.eval_batch_size,
            limit_train: self.limit_train,
            limit_test: self.limit_test,
            data: self.data.clone(),
            out: self.out.clone(),
            name: self.name.clone(),
            backend: self.gpu.backend,
            adapter: self.gpu.adapter.clone(),
            software: self.gpu.software.then_some(true),
            variant: self.gpu.variant,
            ..Default::default()
        }
    }
}

/// How to choose the adapter.
#[derive(Args, Clone, Debug)]
struct GpuArgs {
    /// Graphics API.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Pick the adapter whose name contains this (case-insensitive).
    #[arg(long, value_name = "NAME-SUBSTRING")]
    adapter: Option<String>,
    /// Use the software fallback adapter (lavapipe on Linux, WARP on Windows).
    #[arg(long)]
    software: bool,
    /// Kernel variant to use wherever it applies (auto: the fastest for each shape and
    /// adapter); for timing variants and settling choices on a new GPU.
    #[arg(long, value_enum, default_value_t = Variant::Auto)]
    variant: Variant,
}

impl GpuArgs {
    fn request(&self) -> AdapterRequest {
        AdapterRequest {
            backend: self.backend,
            adapter: self.adapter.clone(),
            software: self.software,
            variant: self.variant,
        }
    }
}

/// Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error (including a
/// batch too large for the adapter), 3 no usable
/// GPU adapter, 4 data error, 5 training diverged, 6 bad checkpoint or image, 130 interrupted.
fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(e) = err.downcast_ref::<gpu::GpuError>() {
        return match e {
            gpu::GpuError::NoAdapter { .. } | gpu::GpuError::AdapterTooSmall { .. } => 3,
            // The fix is a flag (a smaller --batch-size).
            gpu::GpuError::BufferTooLarge { .. } | gpu::GpuError::VariantUnsupported { .. } => 2,
            _ => 1,
        };
    }
    if err.downcast_ref::<wgpu_fmnist::data::DataError>().is_some() {
        return 4;
    }
    if err
        .downcast_ref::<wgpu_fmnist::checkpoint::CheckpointError>()
        .is_some()
        || err
            .downcast_ref::<wgpu_fmnist::infer::ImageError>()
            .is_some()
    {
        return 6;
    }
    if err.downcast_ref::<train::ConfigError>().is_some()
        || err.downcast_ref::<model::SpecError>().is_some()
    {
        return 2;
    }
    match err.downcast_ref::<train::TrainError>() {
        Some(train::TrainError::Interrupted { .. }) => 130,
        Some(train::TrainError::Diverged { .. }) => 5,
        Some(train::TrainError::Config(_)) | Some(train::TrainError::Resume(_)) => 2,
        Some(train::TrainError::Checkpoint(_)) => 6,
        Some(train::TrainError::Gpu(gpu::GpuError::NoAdapter { .. })) => 3,
        Some(train::TrainError::Gpu(
            gpu::GpuError::BufferTooLarge { .. } | gpu::GpuError::VariantUnsupported { .. },
        )) => 2,
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices { backend, json } => devices(backend, json),
        Command::Probe(args) => probe(&args),
        Command::Train(args) => run_train(&args),
        Command::Summary { model } => summary(&model),
        Command::Eval {
            checkpoint,
            data,
            split,
            model,
            batch_size,
            json,
            gpu,
        } => eval(
            &checkpoint,
            data.as_deref(),
            split,
            model.as_deref(),
            batch_size,
            json,
            &gpu,
        ),
        Command::Predict {
            checkpoint,
            images,
            top,
            invert,
            model,
            json,
            gpu,
        } => predict(
            &checkpoint,
            &images,
            top,
            invert,
            model.as_deref(),
            json,
            &gpu,
        ),
        Command::Bench {
            model,
            batch_size,
            optimizer,
            seconds,
            kernels,
            json,
            gpu,
        } => bench(&model, batch_size, optimizer, seconds, kernels, json, &gpu),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn devices(backend: Backend, json: bool) -> anyhow::Result<()> {
    let adapters = gpu::list_adapters(backend);
    if adapters.is_empty() {
        anyhow::bail!(gpu::GpuError::NoAdapter {
            wanted: format!("--backend {backend}"),
            found: "none".into(),
            hint: "Without a GPU, install a software Vulkan driver: `apt-get install mesa-vulkan-drivers` (lavapipe)."
                .into(),
        });
    }
    for a in adapters {
        let l = &a.limits;
        let feature = |f: wgpu::Features| a.features.contains(f);
        if json {
            let v = serde_json::json!({
                "name": a.info.name,
                "backend": format!("{:?}", a.info.backend).to_lowercase(),
                "device_type": format!("{:?}", a.info.device_type),
                "driver": a.info.driver,
                "driver_info": a.info.driver_info,
                "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
                "max_buffer_size": l.max_buffer_size,
                "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
                "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
                "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
                "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
                "timestamp_query": feature(wgpu::Features::TIMESTAMP_QUERY),
                "subgroup": feature(wgpu::Features::SUBGROUP),
                "shader_f16": feature(wgpu::Features::SHADER_F16),
            });
            println!("{v}");
            continue;
        }
        println!("{}", a.info.name);
        println!("  backend            {:?}", a.info.backend);
        println!("  type               {:?}", a.info.device_type);
        println!(
            "  driver             {} {}",
            a.info.driver, a.info.driver_info
        );
        println!(
            "  storage binding    {}",
            bytes(l.max_storage_buffer_binding_size)
        );
        println!("  buffer size        {}", bytes(l.max_buffer_size));
        println!(
            "  workgroup storage  {}",
            bytes(l.max_compute_workgroup_storage_size as u64)
        );
        println!(
            "  invocations/group  {}",
            l.max_compute_invocations_per_workgroup
        );
        println!(
            "  groups/dimension   {}",
            l.max_compute_workgroups_per_dimension
        );
        println!(
            "  storage buffers    {} per stage",
            l.max_storage_buffers_per_shader_stage
        );
        let mut feats = Vec::new();
        for (name, f) in [
            ("timestamp-query", wgpu::Features::TIMESTAMP_QUERY),
            ("subgroup", wgpu::Features::SUBGROUP),
            ("shader-f16", wgpu::Features::SHADER_F16),
        ] {
            if feature(f) {
                feats.push(name);
            }
        }
        println!(
            "  features           {}",
            if feats.is_empty() {
                "-".to_string()
            } else {
                feats.join(", ")
            }
        );
    }
    Ok(())
}

fn bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    } else if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

fn probe(args: &GpuArgs) -> anyhow::Result<()> {
    let gpu = gpu::Gpu::new(&args.request())?;
    println!(
        "{} ({:?}, {:?})",
        gpu.info.name, gpu.info.backend, gpu.info.device_type
    );
    Ok(())
}

fn summary(name: &str) -> anyhow::Result<()> {
    let (spec, preset) = model::resolve(name)?;
    if let Some(p) = preset {
        println!("{}: {}", p.name, p.about);
        println!(
            "defaults: {} lr {} momentum {} weight decay {} batch {} epochs {}\n",
            p.optimizer, p.lr, p.momentum, p.weight_decay, p.batch_size, p.epochs
        );
    }
    println!("spec: {}\n", spec.to_text());
    print!("{}", spec.summary());
    Ok(())
}

/// A fresh run folder: `out/name`, or `out/name-2`, `-3`, ... when the name was not given
/// explicitly and is taken. An explicit name that exists is an error (nothing is overwritten).
fn run_dir(cfg: &TrainConfig, explicit: bool) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| anyhow::anyhow!("--out {}: {e}", cfg.out.display()))?;
    let base = cfg.out.join(&cfg.name);
    if explicit {
        if base.exists() {
            anyhow::bail!(train::ConfigError::Invalid {
                flag: "--name",
                message: format!(
                    "{} already exists; choose another name or remove it",
                    base.display()
                ),
            });
        }
        std::fs::create_dir(&base).map_err(|e| anyhow::anyhow!("{}: {e}", base.display()))?;
        return Ok(base);
    }
    for k in 1.. {
        let dir = if k == 1 {
            base.clone()
        } else {
            cfg.out.join(format!("{}-{k}", cfg.name))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => anyhow::bail!("{}: {e}", dir.display()),
        }
    }
    unreachable!()
}

/// Ctrl-C sets the flag (the trainer saves and stops after the current step); a second
/// Ctrl-C exits at once.
fn install_interrupt() -> &'static std::sync::atomic::AtomicBool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOP: AtomicBool = AtomicBool::new(false);
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the current step and saving last.safetensors (Ctrl-C again to quit now)");
    });
    &STOP
}

fn run_train(args: &TrainArgs) -> anyhow::Result<()> {
    let (cfg, dir, resume) = if let Some(dir) = &args.resume {
        let bad = |m: String| train::ConfigError::Invalid {
            flag: "--resume",
            message: m,
        };
        let text = std::fs::read_to_string(dir.join("config.toml"))
            .map_err(|e| bad(format!("{}: {e}", dir.join("config.toml").display())))?;
        let mut cfg: TrainConfig = toml::from_str(&text)
            .map_err(|e| bad(format!("{}: {e}", dir.join("config.toml").display())))?;
        let changed = PartialConfig {
            epochs: None,
            backend: None,
            adapter: None,
            software: None,
            variant: None,
            ..args.partial()
        };
        if changed != PartialConfig::default() || args.config.is_some() {
            anyhow::bail!(bad("a resumed run keeps its configuration; only --epochs, --json/--quiet and the adapter flags may be given".into()));
        }
        if let Some(e) = args.epochs {
            cfg.epochs = e;
        }
        if let Some(b) = args.gpu.backend {
            cfg.backend = b;
        }
        if args.gpu.adapter.is_some() {
            cfg.adapter = args.gpu.adapter.clone();
        }
        if args.gpu.software {
            cfg.software = true;
        }
        if let Some(v) = args.gpu.variant {
            cfg.variant = v;
        }
        let ckpt = wgpu_fmnist::checkpoint::load(&dir.join("last.safetensors"), None)?;
        if ckpt.meta.epoch >= cfg.epochs && ckpt.meta.step_in_epoch == 0 {
            anyhow::bail!(bad(format!(
                "{} already finished its {} epochs; pass --epochs N to train further",
                dir.display(),
                ckpt.meta.epoch
            )));
        }
        (cfg, dir.clone(), Some(ckpt))
    } else {
        let file = match &args.config {
            Some(path) => PartialConfig::from_file(path)?,
            None => PartialConfig::default(),
        };
        let cfg = TrainConfig::resolve(&file.clone().overlay(&args.partial()))?;
        let explicit_name = args.name.is_some() || file.name.is_some();
        let dir = run_dir(&cfg, explicit_name)?;
        (cfg, dir, None)
    };
    let quiet = args.quiet || args.json;
    let data = wgpu_fmnist::data::load(cfg.data.as_deref(), quiet)?;
    let gpu = gpu::Gpu::new(&cfg.adapter_request())?;
    let adapter = format!(
        "{} ({:?}, {:?})",
        gpu.info.name, gpu.info.backend, gpu.info.device_type
    );
    wgpu_fmnist::fsutil::write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    let metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(resume.is_some())
        .write(true)
        .truncate(resume.is_none())
        .open(dir.join("metrics.jsonl"))?;
    let output = if args.json {
        report::Output::Json
    } else if args.quiet {
        report::Output::Quiet
    } else {
        report::Output::Human
    };
    if output == report::Output::Human {
        eprintln!("adapter: {adapter}");
        eprintln!("data: {}", data.dir.display());
        eprintln!("run folder: {}", dir.display());
    }
    if let Some(c) = &resume {
        if output == report::Output::Human {
            eprintln!(
                "resuming after epoch {} (+{} steps), step {}",
                c.meta.epoch, c.meta.step_in_epoch, c.meta.step
            );
        }
    }
    let mut reporter = report::ConsoleReporter::new(output, Some(metrics));
    let stop = install_interrupt();
    let opts = train::RunOptions {
        run_dir: Some(&dir),
        resume: resume.as_ref(),
        stop: Some(stop),
    };
    let outcome = train::train_with(&gpu, &cfg, &data, &mut reporter, &opts)?;
    let summary = serde_json::json!({
        "kind": "summary",
        "model": cfg.model,
        "test_accuracy": outcome.test_accuracy,
        "test_loss": outcome.test_loss,
        "epochs": outcome.epochs_run,
        "stopped_early": outcome.stopped_early,
        "images_per_second": outcome.images_per_second,
        "wall_seconds": outcome.wall_seconds,
        "adapter": adapter,
        "run_dir": dir.display().to_string(),
    });
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("metrics.jsonl"))?;
        writeln!(f, "{summary}")?;
    }
    match output {
        report::Output::Json => println!("{summary}"),
        report::Output::Human => {
            eprintln!();
            eprintln!("  model             {}", cfg.model);
            eprintln!(
                "  epochs            {}{}",
                outcome.epochs_run,
                if outcome.stopped_early {
                    " (stopped early)"
                } else {
                    ""
                }
            );
            if let Some(best) = outcome
                .history
                .iter()
                .filter_map(|r| r.val_accuracy)
                .reduce(f64::max)
            {
                eprintln!("  best val accuracy {:.2} %", best * 100.0);
            }
            eprintln!("  test accuracy     {:.2} %", outcome.test_accuracy * 100.0);
            eprintln!("  test loss         {:.4}", outcome.test_loss);
            eprintln!(
                "  training speed    {:.0} images/s",
                outcome.images_per_second
            );
            eprintln!("  wall time         {:.1} s", outcome.wall_seconds);
            eprintln!("  run folder        {}", dir.display());
            eprintln!(
                "  checkpoints       last.safetensors{}",
                if dir.join("best.safetensors").exists() {
                    ", best.safetensors"
                } else {
                    ""
                }
            );
        }
        report::Output::Quiet => {}
    }
    Ok(())
}

fn bench(
    name: &str,
    batch: Option<usize>,
    optimizer: Option<OptimizerKind>,
    seconds: f64,
    all_kernels: bool,
    json: bool,
    args: &GpuArgs,
) -> anyhow::Result<()> {
    let (spec, preset) = model::resolve(name)?;
    let batch = batch.or(preset.map(|p| p.batch_size)).unwrap_or(32);
    if batch == 0 {
        anyhow::bail!(train::ConfigError::Invalid {
            flag: "--batch-size",
            message: "must be at least 1".into()
        });
    }
    let optimizer = optimizer
        .or(preset.map(|p| p.optimizer))
        .unwrap_or_default();
    let gpu = gpu::Gpu::new(&args.request())?;
    let adapter = format!(
        "{} ({:?}, {:?})",
        gpu.info.name, gpu.info.backend, gpu.info.device_type
    );
    let r = wgpu_fmnist::bench::run(&gpu, &spec, batch, optimizer, seconds)?;
    if json {
        for k in &r.kernels {
            println!(
                "{}",
                serde_json::json!({
                    "kernel": k.label, "shape": k.label.split_once(' ').map(|x| x.1).unwrap_or(""),
                    "seconds": k.seconds, "gflops": k.flops / k.seconds / 1e9, "gbytes_per_second": k.bytes / k.seconds / 1e9,
                    "seconds_in_step": k.seconds_in_step,
                })
            );
        }
        println!(
            "{}",
            serde_json::json!({
                "model": name, "batch_size": batch, "adapter": adapter, "timing": r.timing,
                "train_images_per_second": r.train_images_per_second, "infer_images_per_second": r.infer_images_per_second,
                "step_seconds": r.step_seconds, "kernel_seconds_sum": r.kernels.iter().map(|k| k.seconds).sum::<f64>(),
                "kernel_seconds_in_step_sum": r.kernels.iter().map(|k| k.seconds_in_step).sum::<Option<f64>>(),
                "validated_batch": r.validation.batch, "validated_tensors": r.validation.tensors,
                "validation_worst_error_over_tolerance": r.validation.worst_relative,
            })
        );
        return Ok(());
    }
    println!("{name} at batch {batch} on {adapter} ({})", r.timing);
    println!(
        "validated against the CPU reference at batch {}: training logits, loss and {} gradients, inference logits; worst error {:.2} of the tolerance\n",
        r.validation.batch,
        r.validation.tensors - 3,
        r.validation.worst_relative
    );
    let mut rows: Vec<wgpu_fmnist::bench::KernelTime> = Vec::new();
    if all_kernels {
        rows = r.kernels.clone();
    } else {
        // Totals per entry point, in order of first appearance.
        for k in &r.kernels {
            let entry = k.label.split(' ').next().unwrap_or("").to_string();
            match rows.iter_mut().find(|x| x.label == entry) {
                Some(x) => {
                    x.seconds += k.seconds;
                    x.seconds_in_step =
                        x.seconds_in_step.zip(k.seconds_in_step).map(|(a, b)| a + b);
                    x.flops += k.flops;
                    x.bytes += k.bytes;
                }
                None => rows.push(wgpu_fmnist::bench::KernelTime {
                    label: entry,
                    ..k.clone()
                }),
            }
        }
        rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    }
    // "us": each dispatch timed alone; "in step": within the recorded step, between its
    // neighbours (where the adapter has timestamps inside passes).
    println!(
        "{:<64} {:>10} {:>10} {:>9} {:>8}",
        if all_kernels {
            "kernel (every dispatch of one step)"
        } else {
            "kernel (all calls in one step)"
        },
        "us",
        "in step",
        "GFLOP/s",
        "GB/s"
    );
    for k in &rows {
        let gf = if k.flops > 0.0 {
            format!("{:.2}", k.flops / k.seconds / 1e9)
        } else {
            "-".into()
        };
        let gb = if k.bytes > 0.0 {
            format!("{:.2}", k.bytes / k.seconds / 1e9)
        } else {
            "-".into()
        };
        let label: String = k.label.chars().take(64).collect();
        let in_step = k
            .seconds_in_step
            .map_or("-".into(), |t| format!("{:.1}", t * 1e6));
        println!(
            "{label:<64} {:>10.1} {in_step:>10} {gf:>9} {gb:>8}",
            k.seconds * 1e6
        );
    }
    let sum: f64 = r.kernels.iter().map(|k| k.seconds).sum();
    println!("\nsum of kernels   {:.2} ms per step", sum * 1e3);
    if let Some(s) = r
        .kernels
        .iter()
        .map(|k| k.seconds_in_step)
        .sum::<Option<f64>>()
    {
        println!("  in the step    {:.2} ms", s * 1e3);
    }
    println!("measured step    {:.2} ms per step", r.step_seconds * 1e3);
    println!("train            {:.0} images/s", r.train_images_per_second);
    println!("inference        {:.0} images/s", r.infer_images_per_second);
    Ok(())
}

fn load_checkpoint(
    path: &std::path::Path,
    model: Option<&str>,
) -> anyhow::Result<wgpu_fmnist::checkpoint::Checkpoint> {
    let spec = model.map(model::resolve).transpose()?.map(|(s, _)| s);
    Ok(wgpu_fmnist::checkpoint::load(path, spec.as_ref())?)
}

fn eval(
    path: &std::path::Path,
    data: Option<&std::path::Path>,
    split: SplitName,
    model: Option<&str>,
    batch: usize,
    json: bool,
    args: &GpuArgs,
) -> anyhow::Result<()> {
    if batch == 0 {
        anyhow::bail!(train::ConfigError::Invalid {
            flag: "--batch-size",
            message: "must be at least 1".into()
        });
    }
    let ckpt = load_checkpoint(path, model)?;
    let ds = wgpu_fmnist::data::load(data, json)?;
    let gpu = gpu::Gpu::new(&args.request())?;
    let split_data = match split {
        SplitName::Test => &ds.test,
        SplitName::Train => &ds.train,
    };
    let r = wgpu_fmnist::infer::evaluate(&gpu, &ckpt, split_data, batch)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "checkpoint  {} (epoch {}, step {})",
        path.display(),
        ckpt.meta.epoch,
        ckpt.meta.step
    );
    println!("model       {}", ckpt.spec.to_text());
    println!(
        "data        {} split of {} ({} images)",
        format!("{split:?}").to_lowercase(),
        ds.dir.display(),
        r.count
    );
    println!("adapter     {} ({:?})", gpu.info.name, gpu.info.backend);
    println!();
    println!("accuracy    {:.2} %", r.accuracy * 100.0);
    println!("loss        {:.4}", r.loss);
    println!();
    println!(
        "{:<12} {:>8} {:>10} {:>8}",
        "class", "support", "precision", "recall"
    );
    for c in &r.per_class {
        println!(
            "{:<12} {:>8} {:>9.1}% {:>7.1}%",
            c.class,
            c.support,
            c.precision * 100.0,
            c.recall * 100.0
        );
    }
    println!();
    println!("confusion (rows: true class, columns: predicted)");
    print!("{:<12}", "");
    for j in 0..r.confusion.len() {
        print!("{j:>6}");
    }
    println!();
    for (i, row) in r.confusion.iter().enumerate() {
        print!(
            "{:<12}",
            format!(
                "{i} {}",
                r.per_class[i].class.chars().take(9).collect::<String>()
            )
        );
        for v in row {
            print!("{v:>6}");
        }
        println!();
    }
    Ok(())
}

fn predict(
    path: &std::path::Path,
    images: &[PathBuf],
    top: usize,
    invert: wgpu_fmnist::infer::Invert,
    model: Option<&str>,
    json: bool,
    args: &GpuArgs,
) -> anyhow::Result<()> {
    let ckpt = load_checkpoint(path, model)?;
    let pixels: Vec<Vec<u8>> = images
        .iter()
        .map(|p| wgpu_fmnist::infer::load_image(p, invert))
        .collect::<Result<_, _>>()?;
    let gpu = gpu::Gpu::new(&args.request())?;
    let probs = wgpu_fmnist::infer::predict(&gpu, &ckpt, &pixels)?;
    for (img, p) in images.iter().zip(&probs) {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let name = |c: usize| {
            ckpt.meta
                .classes
                .get(c)
                .cloned()
                .unwrap_or_else(|| c.to_string())
        };
        if json {
            let topk: Vec<serde_json::Value> = order
                .iter()
                .take(top.max(1))
                .map(|&c| serde_json::json!({"class": name(c), "index": c, "probability": p[c]}))
                .collect();
            println!(
                "{}",
                serde_json::json!({"image": img.display().to_string(), "top": topk})
            );
        } else {
            let parts: Vec<String> = order
                .iter()
                .take(top.max(1))
                .map(|&c| format!("{} {:.1}%", name(c), p[c] * 100.0))
                .collect();
            println!("{}: {}", img.display(), parts.join(", "));
        }
    }
    Ok(())
}
