//! Command-line interface: parses arguments, calls the library, maps errors to exit codes.
//! What the commands print lives in `wgpu_fmnist::render`; run folders and resume in
//! `wgpu_fmnist::train::run`.

use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wgpu_fmnist::gpu::{self, AdapterRequest, Backend, Gpu, GpuError, Variant};
use wgpu_fmnist::model::{self, OptimizerKind};
use wgpu_fmnist::train::{self, report, run::RunSetup, PartialConfig, TrainError};
use wgpu_fmnist::{checkpoint, data, infer, render};

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
    Bench(BenchArgs),
    /// Check this GPU and driver: every kernel variant that runs here, on small shapes and
    /// every preset's training step and inference, against the CPU references.
    Check(CheckArgs),
    /// Evaluate a checkpoint: accuracy, loss, per-class precision/recall, confusion matrix.
    Eval(EvalArgs),
    /// Classify image files (PNG, JPEG) with a checkpoint.
    Predict(PredictArgs),
    /// Print a model's layers: output shapes, parameters and FLOPs.
    Summary {
        /// Preset (mlp, cnn1, cnn2, regcnn, vgg) or a layer spec string.
        #[arg(long, default_value = "regcnn")]
        model: String,
        /// Also write the architecture diagram and the layer table as an HTML page.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Also write the architecture diagram alone as an SVG file.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// A study in one command: train every combination of the --vary settings into sibling
    /// run folders, then print a table and write compare.html.
    Ablate(Box<AblateArgs>),
    /// Write a grid of augmented training images (what the model sees with --augment): one
    /// row per class, the original first.
    AugmentPreview(AugmentPreviewArgs),
    /// Redraw a run's report.html and curves.png from its folder, or compare several runs
    /// on one page.
    Report {
        /// One run folder (its report.html is rewritten) or several (a comparison page).
        #[arg(required = true, value_name = "RUN_DIR")]
        runs: Vec<PathBuf>,
        /// Where the comparison page goes (default compare.html); with one run folder, the
        /// run's report is written here instead of into the folder.
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// `train`: every setting flag overrides the `--config` file, which overrides the preset.
#[derive(Args, Debug)]
struct TrainArgs {
    #[command(flatten)]
    settings: PartialConfig,
    /// TOML file with any of these settings (snake_case keys, e.g. batch_size = 64).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Continue the run in this folder from its last.safetensors (exactly: optimizer state,
    /// step and data order). Only --epochs (to extend), output, adapter and --variant flags
    /// may change.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// One JSON object per line on stdout: one per epoch, then a summary.
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Print nothing but errors.
    #[arg(long)]
    quiet: bool,
}

/// `ablate`: the training flags give the settings every run shares.
#[derive(Args, Debug)]
struct AblateArgs {
    /// KEY=V1,V2,…: a training setting (lr, weight_decay, optimizer, schedule, flip, shift,
    /// label_smoothing, model, …) or `dropout` (every dropout layer's probability) and the
    /// values to try; repeat for more. Commas inside parentheses belong to the value.
    #[arg(long, required = true, value_name = "KEY=VALUES")]
    vary: Vec<String>,
    #[command(flatten)]
    settings: PartialConfig,
    /// TOML file with any of the shared settings.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print only the final table (and errors).
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct AugmentPreviewArgs {
    /// The augmentation, as `train --augment` takes it.
    #[arg(long, value_name = "ITEMS")]
    augment: String,
    /// The PNG to write.
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "augment-preview.png"
    )]
    out: PathBuf,
    /// Augmented versions of each image.
    #[arg(long, default_value_t = 8, value_parser = train::config::at_least_one())]
    draws: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory with the four *-ubyte(.gz) files.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long, default_value = "regcnn")]
    model: String,
    /// Default: the preset's batch size (32 for a spec string).
    #[arg(long, value_parser = train::config::at_least_one())]
    batch_size: Option<usize>,
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    /// Time the step with this `--augment` (as train takes it).
    #[arg(long, value_name = "ITEMS")]
    augment: Option<String>,
    /// Seconds of end-to-end training to time.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// List every dispatch of the step (default: totals per kernel).
    #[arg(long)]
    kernels: bool,
    /// One JSON object per kernel, then a summary line.
    #[arg(long)]
    json: bool,
    /// Compare with a saved `bench --json` result: time now / then per kernel and images/s
    /// end to end (above 1 is slower).
    #[arg(long, value_name = "FILE.json")]
    compare: Option<PathBuf>,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct CheckArgs {
    /// One JSON object per line, then a summary line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = SplitName::Test)]
    split: SplitName,
    /// The model, for checkpoints without `spec` metadata (e.g. saved from PyTorch).
    #[arg(long)]
    model: Option<String>,
    #[arg(long, default_value_t = 250, value_parser = train::config::at_least_one())]
    batch_size: usize,
    /// One JSON object with accuracy, loss, per_class and confusion.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct PredictArgs {
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Invert the image (Fashion-MNIST items are light on a dark background); auto
    /// inverts pictures whose border is light.
    #[arg(long, value_enum, default_value_t = infer::Invert::Auto)]
    invert: infer::Invert,
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SplitName {
    Test,
    Train,
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
/// batch too large for the adapter or a variant it cannot run), 3 no usable GPU adapter,
/// 4 data error, 5 training diverged, 6 bad checkpoint or image, 130 interrupted.
/// The device for a command that runs models: kernel variants measured on the adapter and
/// cached (`kernels::tune`) unless `WGPU_FMNIST_TUNE=0`.
/// `tell`: say on stderr when the first measurement starts (it can take a minute).
fn open_gpu(request: &AdapterRequest, tell: bool) -> Result<Gpu, GpuError> {
    let gpu = Gpu::new(request)?;
    // Without measuring (WGPU_FMNIST_TUNE=0), a tuner that keeps select's fixed order still
    // records the choices for the run folder and pins a resumed run's.
    let mut gpu = match std::env::var("WGPU_FMNIST_TUNE").as_deref() {
        Ok("0") | Ok("off") => {
            let mut gpu = gpu;
            gpu.tuner = Some(wgpu_fmnist::kernels::tune::Tuner::fixed(&gpu));
            gpu
        }
        _ => gpu.with_tuner(wgpu_fmnist::kernels::tune::Tuner::default_path()),
    };
    if let (true, Some(t)) = (tell, gpu.tuner.as_mut()) {
        t.set_notice(|line| wgpu_fmnist::errln!("{line}"));
    }
    Ok(gpu)
}

fn exit_code(err: &anyhow::Error) -> u8 {
    let gpu_code = |e: &GpuError| match e {
        GpuError::NoAdapter { .. } | GpuError::AdapterTooSmall { .. } => 3,
        // The fix is a flag (a smaller --batch-size, another --variant).
        GpuError::BufferTooLarge { .. }
        | GpuError::BatchTooLarge { .. }
        | GpuError::OutOfDeviceMemory { .. }
        | GpuError::ModelTooLarge { .. }
        | GpuError::VariantUnsupported { .. } => 2,
        _ => 1,
    };
    if let Some(e) = err.downcast_ref::<GpuError>() {
        return gpu_code(e);
    }
    if let Some(e) = err.downcast_ref::<TrainError>() {
        return match e {
            TrainError::Interrupted { .. } => 130,
            TrainError::Diverged { .. } => 5,
            TrainError::Config(_) | TrainError::Resume(_) => 2,
            TrainError::Checkpoint(checkpoint::CheckpointError::Write { .. }) => 1,
            TrainError::Checkpoint(_) | TrainError::Init(_) => 6,
            TrainError::Gpu(g) => gpu_code(g),
        };
    }
    if let Some(e) = err.downcast_ref::<wgpu_fmnist::report::ReportError>() {
        return match e {
            wgpu_fmnist::report::ReportError::NotARun { .. }
            | wgpu_fmnist::report::ReportError::Unreadable { .. } => 2,
            _ => 1,
        };
    }
    if err.is::<data::DataError>() {
        4
    } else if let Some(checkpoint::CheckpointError::Write { .. }) = err.downcast_ref() {
        1
    } else if err.is::<checkpoint::CheckpointError>() || err.is::<infer::ImageError>() {
        6
    } else if err.is::<train::ConfigError>()
        || err.is::<model::SpecError>()
        || err.is::<wgpu_fmnist::bench::compare::CompareError>()
    {
        2
    } else {
        1
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Devices { backend, json } => devices(backend, json),
        Command::Probe(args) => Gpu::new(&args.request())
            .map_err(Into::into)
            .and_then(|g| out(|w| writeln!(w, "{}", g.describe()))),
        Command::Train(args) => run_train(&args),
        Command::Summary { model, html, svg } => summary(&model, html, svg),
        Command::Report { runs, out } => report(&runs, out),
        Command::Ablate(args) => ablate(&args),
        Command::AugmentPreview(args) => augment_preview(&args),
        Command::Eval(args) => eval(&args),
        Command::Predict(args) => predict(&args),
        Command::Bench(args) => bench(&args),
        Command::Check(args) => check(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            wgpu_fmnist::errln!("error: {}", render::error_chain(err.as_ref()));
            ExitCode::from(exit_code(&err))
        }
    }
}

/// Writes to stdout; a reader that went away (`| head`) ends the output quietly.
fn out(f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match f(&mut stdout).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn devices(backend: Backend, json: bool) -> anyhow::Result<()> {
    let adapters = gpu::require_adapters(backend)?;
    out(|w| render::devices(w, &adapters, json))
}

fn run_train(args: &TrainArgs) -> anyhow::Result<()> {
    let mut setup = match &args.resume {
        Some(dir) => RunSetup::resume(dir, &args.settings, args.config.is_some())?,
        None => RunSetup::new(args.config.as_deref(), &args.settings)?,
    };
    // Data and adapter first: a run that cannot start leaves no folder behind.
    let data = data::load(setup.cfg.data.as_deref(), args.quiet || args.json)?;
    let gpu = open_gpu(&setup.cfg.adapter_request(), !(args.quiet || args.json))?;
    if let Some(note) = setup.fit_batch_to(&data) {
        if !(args.quiet || args.json) {
            wgpu_fmnist::errln!("{note}");
        }
    }
    let output = match (args.json, args.quiet) {
        (true, _) => report::Output::Json,
        (_, true) => report::Output::Quiet,
        _ => report::Output::Human,
    };
    let (outcome, dir) = setup.train(&gpu, &data, output)?;
    if output == report::Output::Human {
        let _ = render::train_summary(&mut std::io::stderr(), &setup.cfg, &outcome, &dir);
    }
    Ok(())
}

fn summary(model: &str, html: Option<PathBuf>, svg: Option<PathBuf>) -> anyhow::Result<()> {
    let (spec, preset) = model::resolve(model)?;
    let name = preset.map_or("custom model", |p| p.name);
    let write = |path: &PathBuf, text: String| {
        wgpu_fmnist::fsutil::write_atomic(path, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: could not write: {e}", path.display()))
    };
    if let Some(path) = &html {
        write(path, wgpu_fmnist::report::model_page(&spec, name))?;
    }
    if let Some(path) = &svg {
        write(path, wgpu_fmnist::report::diagram::svg(&spec))?;
    }
    out(|w| render::summary(w, &spec, preset))
}

fn ablate(args: &AblateArgs) -> anyhow::Result<()> {
    use wgpu_fmnist::train::ablate::Study;
    let study = Study::plan(args.config.as_deref(), &args.settings, &args.vary)?;
    // Every run shares the data and the adapter.
    let first = &study.runs[0].setup.cfg;
    let data = data::load(first.data.as_deref(), args.quiet)?;
    let gpu = open_gpu(&first.adapter_request(), !args.quiet)?;
    if study.dir.exists() {
        anyhow::bail!(train::ConfigError::Invalid {
            flag: "--name",
            message: format!(
                "{} exists already; give the study another --name (or --out)",
                study.dir.display()
            ),
        });
    }
    let output = if args.quiet {
        report::Output::Quiet
    } else {
        report::Output::Human
    };
    let total = study.runs.len();
    let mut rows = Vec::new();
    let mut dirs = Vec::new();
    let mut failed = 0;
    for (i, run) in study.runs.iter().enumerate() {
        if !args.quiet {
            wgpu_fmnist::errln!("\n== run {}/{total}: {}", i + 1, run.label);
        }
        match run.setup.train(&gpu, &data, output) {
            Ok((outcome, dir)) => {
                dirs.push(dir);
                rows.push((run.label.clone(), Some(outcome)));
            }
            Err(e @ TrainError::Interrupted { .. }) => return Err(e.into()),
            Err(e) => {
                wgpu_fmnist::errln!("run {} failed: {}", run.label, render::error_chain(&e));
                let dir = study.dir.join(&run.setup.cfg.name);
                if dir.join("metrics.jsonl").is_file() {
                    dirs.push(dir);
                }
                failed += 1;
                rows.push((run.label.clone(), None));
            }
        }
    }
    let compare = study.dir.join("compare.html");
    let compared = wgpu_fmnist::report::write_compare(&dirs, &compare);
    out(|w| render::ablation(w, &rows, compare.as_path(), compared.is_ok()))?;
    compared?;
    if failed > 0 {
        anyhow::bail!("{failed} of {total} runs failed (each is named above)");
    }
    Ok(())
}

fn augment_preview(a: &AugmentPreviewArgs) -> anyhow::Result<()> {
    use wgpu_fmnist::kernels::augment::{self, Augment};
    let aug = Augment::parse(&a.augment).map_err(|e| train::ConfigError::Invalid {
        flag: "--augment",
        message: format!("`{}`: {}", e.item, e.message),
    })?;
    if a.draws > 64 {
        anyhow::bail!(train::ConfigError::Invalid {
            flag: "--draws",
            message: format!(
                "{} columns would not fit a picture; use at most 64",
                a.draws
            ),
        });
    }
    let data = data::load(a.data.as_deref(), true)?;
    let gpu = Gpu::new(&a.gpu.request())?;
    // The first training image of each class, one row each.
    let train = &data.train;
    let mut picked: Vec<Vec<u8>> = Vec::new();
    for class in 0..data::CLASSES.len() as u8 {
        if let Some(i) = train.labels.iter().position(|&l| l == class) {
            picked.push(train.images.pixels[i * 784..(i + 1) * 784].to_vec());
        }
    }
    let seed = (a.seed ^ (a.seed >> 32)) as u32;
    let drawn = augment::preview(&gpu, &aug, &picked, a.draws, seed)?;
    let rows: Vec<Vec<Vec<u8>>> = picked
        .into_iter()
        .zip(drawn)
        .map(|(original, draws)| std::iter::once(original).chain(draws).collect())
        .collect();
    wgpu_fmnist::fsutil::write_atomic(&a.out, &wgpu_fmnist::report::grid_png(&rows, 3))
        .map_err(|e| anyhow::anyhow!("{}: could not write: {e}", a.out.display()))?;
    out(|w| writeln!(w, "{} ({aug})", a.out.display()))
}

fn report(runs: &[PathBuf], out_file: Option<PathBuf>) -> anyhow::Result<()> {
    use wgpu_fmnist::report as pages;
    let written = match (runs, out_file) {
        ([dir], None) => {
            pages::RunFolder::read(dir)?; // says clearly when `dir` is not a run folder
            pages::curves::write_png(dir).map_err(pages::ReportError::Draw)?;
            pages::write_run_report(dir)?
        }
        ([dir], Some(path)) => {
            let page = pages::run_page(&pages::RunFolder::read(dir)?)?;
            wgpu_fmnist::fsutil::write_atomic(&path, page.as_bytes()).map_err(|source| {
                pages::ReportError::Write {
                    path: path.clone(),
                    source,
                }
            })?;
            path
        }
        (dirs, path) => {
            let path = path.unwrap_or_else(|| PathBuf::from("compare.html"));
            pages::write_compare(dirs, &path)?;
            path
        }
    };
    out(|w| writeln!(w, "{}", written.display()))
}

/// `check`: exits 1 if any line fails. No tuner: each forced variant runs what it names.
fn check(a: &CheckArgs) -> anyhow::Result<()> {
    let mut gpu = Gpu::new(&AdapterRequest {
        variant: Variant::Auto,
        ..a.gpu.request()
    })?;
    if !a.json {
        out(|w| writeln!(w, "checking {}", gpu.describe()))?;
    }
    let summary = wgpu_fmnist::check::run(&mut gpu, |line| {
        let _ = out(|w| render::check_line(w, line, a.json));
    })?;
    out(|w| render::check_summary(w, &summary, a.json))?;
    if summary.failed > 0 {
        anyhow::bail!(
            "{} of {} checks failed on {}: this driver computes those kernels wrongly (or \
             they have a bug); --variant can steer training away from a failing variant",
            summary.failed,
            summary.lines,
            summary.adapter
        );
    }
    Ok(())
}

fn bench(a: &BenchArgs) -> anyhow::Result<()> {
    // Read first: a bad file must not cost a whole bench.
    let baseline = a
        .compare
        .as_deref()
        .map(wgpu_fmnist::bench::compare::Baseline::read)
        .transpose()?;
    let (spec, preset) = model::resolve(&a.model)?;
    let batch = a.batch_size.or(preset.map(|p| p.batch_size)).unwrap_or(32);
    let optimizer = a
        .optimizer
        .or(preset.map(|p| p.optimizer))
        .unwrap_or_default();
    let gpu = open_gpu(&a.gpu.request(), !a.json)?;
    let augment = wgpu_fmnist::kernels::augment::Augment::parse(a.augment.as_deref().unwrap_or(""))
        .map_err(|e| train::ConfigError::Invalid {
            flag: "--augment",
            message: format!("`{}`: {}", e.item, e.message),
        })?;
    let r = wgpu_fmnist::bench::run(&gpu, &spec, batch, optimizer, &augment, a.seconds)?;
    let adapter = gpu.describe();
    let forced = match gpu.caps.prefer {
        Variant::Auto => String::new(),
        v => format!("--variant {v} where it applies, else "),
    };
    let choice = match &gpu.tuner {
        Some(t) if !t.measures() => format!("{forced}the fixed order (WGPU_FMNIST_TUNE=0)"),
        None => format!("{forced}the fixed order"),
        Some(t) => format!(
            "{forced}measured on this adapter, {} shapes timed by this run (cache: {})",
            t.measured(),
            t.path().map_or("none".into(), |p| p.display().to_string())
        ),
    };
    let c = render::BenchContext {
        model: &a.model,
        batch,
        adapter: &adapter,
        all_kernels: a.kernels,
        json: a.json,
        choice: &choice,
    };
    match baseline {
        Some(base) => out(|w| render::bench_compare(w, &c, &base, &r)),
        None => out(|w| render::bench(w, &c, &r)),
    }
}

fn load_checkpoint(path: &Path, model: Option<&str>) -> anyhow::Result<checkpoint::Checkpoint> {
    let spec = model.map(model::resolve).transpose()?.map(|(s, _)| s);
    Ok(checkpoint::load(path, spec.as_ref())?)
}

fn eval(a: &EvalArgs) -> anyhow::Result<()> {
    let ckpt = load_checkpoint(&a.checkpoint, a.model.as_deref())?;
    let ds = data::load(a.data.as_deref(), a.json)?;
    let gpu = open_gpu(&a.gpu.request(), !a.json)?;
    let (split, split_name) = match a.split {
        SplitName::Test => (&ds.test, "test"),
        SplitName::Train => (&ds.train, "train"),
    };
    let r = infer::evaluate(&gpu, &ckpt, split, a.batch_size)?;
    let adapter = gpu.describe();
    let c = render::EvalContext {
        checkpoint: &a.checkpoint,
        epoch: ckpt.meta.epoch,
        step: ckpt.meta.step,
        spec: &ckpt.spec,
        split: split_name,
        data_dir: &ds.dir,
        adapter: &adapter,
    };
    out(|w| render::eval(w, &c, &r, a.json))
}

/// Predicts every readable image; each unreadable one is reported, and any makes the exit
/// status non-zero after the others are printed.
fn predict(a: &PredictArgs) -> anyhow::Result<()> {
    let ckpt = load_checkpoint(&a.checkpoint, a.model.as_deref())?;
    let (readable, pixels, mut failed) = infer::load_images(&a.images, a.invert);
    if a.images.len() == 1 && !failed.is_empty() {
        return Err(failed.remove(0).into());
    }
    failed
        .iter()
        .for_each(|e| wgpu_fmnist::errln!("error: {e}"));
    if !pixels.is_empty() {
        let gpu = open_gpu(&a.gpu.request(), !a.json)?;
        let probs = infer::predict(&gpu, &ckpt, &pixels)?;
        out(|w| {
            for (img, p) in readable.iter().zip(&probs) {
                render::prediction(w, img, p, &ckpt.meta.classes, a.top, a.json)?;
            }
            Ok(())
        })?;
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(infer::ImageError::Several {
        failed: failed.len(),
        total: a.images.len(),
    }
    .into())
}
