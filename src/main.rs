//! Command-line interface: the commands, parsed by clap and dispatched to their bodies in
//! `wgpu_fmnist::cli::commands` (flags in `cli::args`); errors become exit codes there.
//! What the commands print lives in `wgpu_fmnist::render`; run folders and resume in
//! `wgpu_fmnist::run`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use wgpu_fmnist::cli::args::*;
use wgpu_fmnist::cli::commands::*;
use wgpu_fmnist::gpu::{Backend, Gpu};
use wgpu_fmnist::render;

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
        /// Preset (mlp, cnn1, cnn2, regcnn, vgg, fast) or a layer spec string.
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
