//! Each command's body: open the data and the adapter, call the library, print through
//! `render`. `exit_code` maps every error to the documented exit codes.

use super::args::*;
use crate::gpu::{self, AdapterRequest, Backend, Gpu, GpuError, Variant};
use crate::kernels::tune::Tuner;
use crate::model;
use crate::run::{Output, RunSetup};
use crate::train::{self, TrainError, Tta};
use crate::{checkpoint, data, infer, render};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The device for a command that runs models: kernel variants measured on the adapter and
/// cached (`kernels::tune`) unless `WGPU_FMNIST_TUNE=0`.
/// `tell`: say on stderr when the first measurement starts (it can take a minute).
pub fn open_gpu(request: &AdapterRequest, tell: bool) -> Result<Gpu, GpuError> {
    let gpu = Gpu::new(request)?;
    // Without measuring (WGPU_FMNIST_TUNE=0), a tuner that keeps select's fixed order still
    // records the choices for the run folder and pins a resumed run's.
    let mut gpu = match std::env::var("WGPU_FMNIST_TUNE").as_deref() {
        Ok("0") | Ok("off") => {
            let mut gpu = gpu;
            Tuner::fixed(&gpu).attach(&mut gpu);
            gpu
        }
        _ => Tuner::measuring(gpu, Tuner::default_path()),
    };
    if let (true, Some(t)) = (tell, Tuner::of_mut(&mut gpu)) {
        t.set_notice(|line| crate::errln!("{line}"));
    }
    Ok(gpu)
}

/// Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error (including a
/// batch too large for the adapter or a variant it cannot run), 3 no usable GPU adapter,
/// 4 data error, 5 training diverged, 6 bad checkpoint or image, 130 interrupted.
pub fn exit_code(err: &anyhow::Error) -> u8 {
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
    if let Some(e) = err.downcast_ref::<crate::report::ReportError>() {
        return match e {
            crate::report::ReportError::NotARun { .. }
            | crate::report::ReportError::Unreadable { .. } => 2,
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
        || err.is::<crate::bench::compare::CompareError>()
    {
        2
    } else {
        1
    }
}

/// Writes to stdout; a reader that went away (`| head`) ends the output quietly.
pub fn out(f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match f(&mut stdout).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

pub fn devices(backend: Backend, json: bool) -> anyhow::Result<()> {
    let adapters = gpu::require_adapters(backend)?;
    out(|w| render::devices(w, &adapters, json))
}

pub fn run_train(args: &TrainArgs) -> anyhow::Result<()> {
    let mut setup = match &args.resume {
        Some(dir) => RunSetup::resume(dir, &args.settings, args.config.is_some())?,
        None => RunSetup::new(args.config.as_deref(), &args.settings)?,
    };
    // Data and adapter first: a run that cannot start leaves no folder behind.
    let data = data::load(setup.cfg.data.as_deref(), args.quiet || args.json)?;
    let gpu = open_gpu(&setup.cfg.adapter_request(), !(args.quiet || args.json))?;
    if let Some(note) = setup.fit_batch_to(&data) {
        if !(args.quiet || args.json) {
            crate::errln!("{note}");
        }
    }
    let output = match (args.json, args.quiet) {
        (true, _) => Output::Json,
        (_, true) => Output::Quiet,
        _ => Output::Human,
    };
    let (outcome, dir) = setup.train(&gpu, &data, output)?;
    if output == Output::Human {
        let _ = render::train_summary(&mut std::io::stderr(), &setup.cfg, &outcome, &dir);
    }
    Ok(())
}

pub fn summary(model: &str, html: Option<PathBuf>, svg: Option<PathBuf>) -> anyhow::Result<()> {
    let (spec, preset) = model::resolve(model)?;
    let name = preset.map_or("custom model", |p| p.name);
    let write = |path: &PathBuf, text: String| {
        crate::fsutil::write_atomic(path, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: could not write: {e}", path.display()))
    };
    if let Some(path) = &html {
        write(path, crate::report::model_page(&spec, name))?;
    }
    if let Some(path) = &svg {
        write(path, crate::report::diagram::svg(&spec))?;
    }
    out(|w| render::summary(w, &spec, preset))
}

pub fn ablate(args: &AblateArgs) -> anyhow::Result<()> {
    use crate::run::ablate::Study;
    let study = Study::plan(
        args.config.as_deref(),
        &args.settings,
        &args.vary,
        args.one_at_a_time,
    )?;
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
        Output::Quiet
    } else {
        Output::Human
    };
    let total = study.runs.len();
    let mut rows = Vec::new();
    let mut dirs = Vec::new();
    let mut failed = 0;
    for (i, run) in study.runs.iter().enumerate() {
        // A signal that lands after a run's last step (during its test evaluation) stops
        // the study here, before the next run makes its folder.
        if crate::run::interrupt_flag().load(std::sync::atomic::Ordering::SeqCst) {
            let saved = dirs.last().map(|d: &PathBuf| d.join("last.safetensors"));
            return Err(TrainError::Interrupted {
                saved: saved.unwrap_or_default(),
            }
            .into());
        }
        if !args.quiet {
            crate::errln!("\n== run {}/{total}: {}", i + 1, run.label);
        }
        match run.setup.train(&gpu, &data, output) {
            Ok((outcome, dir)) => {
                dirs.push(dir);
                rows.push((run.label.clone(), Some(outcome)));
            }
            Err(e @ TrainError::Interrupted { .. }) => return Err(e.into()),
            Err(e) => {
                crate::errln!("run {} failed: {}", run.label, render::error_chain(&e));
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
    let compared = crate::report::write_compare(&dirs, &compare);
    out(|w| render::ablation(w, &rows, compare.as_path(), compared.is_ok()))?;
    compared?;
    if failed > 0 {
        anyhow::bail!("{failed} of {total} runs failed (each is named above)");
    }
    Ok(())
}

pub fn augment_preview(a: &AugmentPreviewArgs) -> anyhow::Result<()> {
    use crate::kernels::augment::{self, Augment};
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
    crate::fsutil::write_atomic(&a.out, &crate::report::grid_png(&rows, 3))
        .map_err(|e| anyhow::anyhow!("{}: could not write: {e}", a.out.display()))?;
    out(|w| writeln!(w, "{} ({aug})", a.out.display()))
}

pub fn report(runs: &[PathBuf], out_file: Option<PathBuf>) -> anyhow::Result<()> {
    use crate::report as pages;
    let written = match (runs, out_file) {
        ([dir], None) => {
            pages::RunFolder::read(dir)?; // says clearly when `dir` is not a run folder
            pages::curves::write_png(dir).map_err(pages::ReportError::Draw)?;
            pages::write_run_report(dir)?
        }
        ([dir], Some(path)) => {
            let page = pages::run_page(&pages::RunFolder::read(dir)?)?;
            crate::fsutil::write_atomic(&path, page.as_bytes()).map_err(|source| {
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
pub fn check(a: &CheckArgs) -> anyhow::Result<()> {
    let mut gpu = Gpu::new(&AdapterRequest {
        variant: Variant::Auto,
        ..a.gpu.request()
    })?;
    if !a.json {
        out(|w| writeln!(w, "checking {}", gpu.describe()))?;
    }
    let summary = crate::check::run(&mut gpu, |line| {
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

pub fn bench(a: &BenchArgs) -> anyhow::Result<()> {
    // Read first: a bad file must not cost a whole bench.
    let baseline = a
        .compare
        .as_deref()
        .map(crate::bench::compare::Baseline::read)
        .transpose()?;
    let (spec, preset) = model::resolve(&a.model)?;
    let batch = a.batch_size.or(preset.map(|p| p.batch_size)).unwrap_or(32);
    let optimizer = a
        .optimizer
        .or(preset.map(|p| p.optimizer))
        .unwrap_or_default();
    let gpu = open_gpu(&a.gpu.request(), !a.json)?;
    let augment = crate::kernels::augment::Augment::parse(a.augment.as_deref().unwrap_or(""))
        .map_err(|e| train::ConfigError::Invalid {
            flag: "--augment",
            message: format!("`{}`: {}", e.item, e.message),
        })?;
    let r = crate::bench::run(&gpu, &spec, batch, optimizer, &augment, a.seconds)?;
    let adapter = gpu.describe();
    let forced = match gpu.caps.prefer {
        Variant::Auto => String::new(),
        v => format!("--variant {v} where it applies, else "),
    };
    let choice = match Tuner::of(&gpu) {
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

pub fn load_checkpoint(path: &Path, model: Option<&str>) -> anyhow::Result<checkpoint::Checkpoint> {
    let spec = model.map(model::resolve).transpose()?.map(|(s, _)| s);
    Ok(checkpoint::load(path, spec.as_ref())?)
}

pub fn eval(a: &EvalArgs) -> anyhow::Result<()> {
    let ckpt = load_checkpoint(&a.checkpoint, a.model.as_deref())?;
    let ds = data::load(a.data.as_deref(), a.json)?;
    let gpu = open_gpu(&a.gpu.request(), !a.json)?;
    let (split, split_name) = match a.split {
        SplitName::Test => (&ds.test, "test"),
        SplitName::Train => (&ds.train, "train"),
    };
    let tta = a.tta.unwrap_or_else(|| Tta::recorded_in(&ckpt.meta.config));
    let r = infer::evaluate_with(&gpu, &ckpt, split, a.batch_size, tta == Tta::Flip)?;
    let adapter = gpu.describe();
    let c = render::EvalContext {
        checkpoint: &a.checkpoint,
        epoch: ckpt.meta.epoch,
        step: ckpt.meta.step,
        spec: &ckpt.spec,
        split: split_name,
        data_dir: &ds.dir,
        adapter: &adapter,
        tta: tta.name(),
    };
    out(|w| render::eval(w, &c, &r, a.json))
}

/// Predicts every readable image; each unreadable one is reported, and any makes the exit
/// status non-zero after the others are printed.
pub fn predict(a: &PredictArgs) -> anyhow::Result<()> {
    let ckpt = load_checkpoint(&a.checkpoint, a.model.as_deref())?;
    let (readable, pixels, mut failed) = infer::load_images(&a.images, a.invert);
    if a.images.len() == 1 && !failed.is_empty() {
        return Err(failed.remove(0).into());
    }
    failed.iter().for_each(|e| crate::errln!("error: {e}"));
    if !pixels.is_empty() {
        let gpu = open_gpu(&a.gpu.request(), !a.json)?;
        let tta = a.tta.unwrap_or_else(|| Tta::recorded_in(&ckpt.meta.config));
        let probs = infer::predict(&gpu, &ckpt, &pixels, tta == Tta::Flip)?;
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
