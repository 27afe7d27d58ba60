//! Command-line interface: parses arguments, calls the library, maps errors to exit codes.

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use wgpu_fmnist::gpu::{self, AdapterRequest, Backend};

#[derive(Parser)]
#[command(name = "wgpu-fmnist", version, about = "Train and run Fashion-MNIST classifiers on the GPU with WGSL compute shaders")]
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
}

impl GpuArgs {
    fn request(&self) -> AdapterRequest {
        AdapterRequest { backend: self.backend, adapter: self.adapter.clone(), software: self.software }
    }
}

/// Exit codes: 0 success, 1 runtime failure, 2 usage (clap), 3 no usable GPU adapter.
fn exit_code(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<gpu::GpuError>() {
        Some(gpu::GpuError::NoAdapter { .. }) | Some(gpu::GpuError::AdapterTooSmall { .. }) => 3,
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices { backend, json } => devices(backend, json),
        Command::Probe(args) => probe(&args),
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
        println!("  driver             {} {}", a.info.driver, a.info.driver_info);
        println!("  storage binding    {}", bytes(l.max_storage_buffer_binding_size as u64));
        println!("  buffer size        {}", bytes(l.max_buffer_size));
        println!("  workgroup storage  {}", bytes(l.max_compute_workgroup_storage_size as u64));
        println!("  invocations/group  {}", l.max_compute_invocations_per_workgroup);
        println!("  groups/dimension   {}", l.max_compute_workgroups_per_dimension);
        println!("  storage buffers    {} per stage", l.max_storage_buffers_per_shader_stage);
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
        println!("  features           {}", if feats.is_empty() { "-".to_string() } else { feats.join(", ") });
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
    println!("{} ({:?}, {:?})", gpu.info.name, gpu.info.backend, gpu.info.device_type);
    Ok(())
}
