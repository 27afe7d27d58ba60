//! What the CLI prints: text for people, JSON lines for scripts. Each function writes to
//! the writer it is given and returns its I/O error, so a closed pipe (`| head`) is an
//! error the caller can ignore rather than a panic.

mod bench;
mod check;
mod eval;

pub use bench::{bench, bench_compare, BenchContext};
pub use check::{check_line, check_summary};
pub use eval::{eval, prediction, EvalContext};

use crate::gpu::AdapterSummary;
use crate::model::{ModelSpec, Preset};
use crate::train::{TrainConfig, TrainOutcome};
use std::io::{Result, Write};
use std::path::Path;

/// `devices`: one block (or one JSON object) per adapter.
pub fn devices(w: &mut dyn Write, adapters: &[AdapterSummary], json: bool) -> Result<()> {
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
                "device_memory": a.memory,
                "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
                "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
                "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
                "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
                "timestamp_query": feature(wgpu::Features::TIMESTAMP_QUERY),
                "subgroup": feature(wgpu::Features::SUBGROUP),
                "shader_f16": feature(wgpu::Features::SHADER_F16),
            });
            writeln!(w, "{v}")?;
            continue;
        }
        let feats: Vec<&str> = [
            ("timestamp-query", wgpu::Features::TIMESTAMP_QUERY),
            ("subgroup", wgpu::Features::SUBGROUP),
            ("shader-f16", wgpu::Features::SHADER_F16),
        ]
        .into_iter()
        .filter(|(_, f)| feature(*f))
        .map(|(name, _)| name)
        .collect();
        let info = &a.info;
        writeln!(w, "{}", info.name)?;
        writeln!(w, "  backend            {:?}", info.backend)?;
        writeln!(w, "  type               {:?}", info.device_type)?;
        writeln!(
            w,
            "  driver             {} {}",
            info.driver, info.driver_info
        )?;
        writeln!(
            w,
            "  storage binding    {}",
            bytes(l.max_storage_buffer_binding_size)
        )?;
        writeln!(w, "  buffer size        {}", bytes(l.max_buffer_size))?;
        if let Some(m) = a.memory {
            writeln!(w, "  device memory      {}", bytes(m))?;
        }
        let wg_storage = bytes(l.max_compute_workgroup_storage_size as u64);
        writeln!(w, "  workgroup storage  {wg_storage}")?;
        writeln!(
            w,
            "  invocations/group  {}",
            l.max_compute_invocations_per_workgroup
        )?;
        writeln!(
            w,
            "  groups/dimension   {}",
            l.max_compute_workgroups_per_dimension
        )?;
        let buffers = l.max_storage_buffers_per_shader_stage;
        writeln!(w, "  storage buffers    {buffers} per stage")?;
        let feats = if feats.is_empty() {
            "-".into()
        } else {
            feats.join(", ")
        };
        writeln!(w, "  features           {feats}")?;
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

/// `summary`: the preset's defaults, the spec, and the layer table.
pub fn summary(w: &mut dyn Write, spec: &ModelSpec, preset: Option<&Preset>) -> Result<()> {
    if let Some(p) = preset {
        writeln!(w, "{}: {}", p.name, p.about)?;
        write!(
            w,
            "defaults: {} lr {} momentum {} weight decay {} batch {} epochs {}",
            p.optimizer, p.lr, p.momentum, p.weight_decay, p.batch_size, p.epochs
        )?;
        let r = &p.recipe;
        if *r != crate::model::Recipe::PLAIN {
            write!(
                w,
                "\n          nesterov {} schedule {} label smoothing {} augment \"{}\" ema {} tta {}",
                r.nesterov,
                r.schedule,
                r.label_smoothing,
                r.augment,
                r.ema,
                if r.tta_flip { "flip" } else { "none" }
            )?;
        }
        writeln!(w, "\n")?;
    }
    writeln!(w, "spec: {}\n", spec.to_text())?;
    write!(w, "{}", crate::net::summary(spec))
}

/// The closing lines of `train` (on stderr; `--json` prints the summary object instead).
pub fn train_summary(
    w: &mut dyn Write,
    cfg: &TrainConfig,
    outcome: &TrainOutcome,
    dir: &Path,
) -> Result<()> {
    writeln!(w)?;
    writeln!(w, "  model             {}", cfg.model)?;
    let early = if outcome.reached_target {
        " (target accuracy reached)"
    } else if outcome.stopped_early {
        " (stopped early)"
    } else {
        ""
    };
    writeln!(w, "  epochs            {}{early}", outcome.epochs_run)?;
    let t = &outcome.time_to_accuracy;
    if !t.training.is_empty() {
        let mut reached: Vec<(f64, f64)> = t
            .training
            .iter()
            .filter_map(|(k, s)| Some((k.parse::<f64>().ok()?, *s)))
            .collect();
        reached.sort_by(|a, b| a.0.total_cmp(&b.0));
        let text: Vec<String> = reached
            .iter()
            .map(|(m, s)| format!("{m} % {s:.1} s"))
            .collect();
        writeln!(w, "  to val accuracy   {} (training time)", text.join(", "))?;
    }
    let best = outcome
        .history
        .iter()
        .filter_map(|r| r.val_accuracy)
        .reduce(f64::max);
    if let Some(best) = best {
        writeln!(w, "  best val accuracy {:.2} %", best * 100.0)?;
    }
    writeln!(
        w,
        "  test accuracy     {:.2} %",
        outcome.test_accuracy * 100.0
    )?;
    writeln!(w, "  test loss         {:.4}", outcome.test_loss)?;
    writeln!(
        w,
        "  training speed    {:.0} images/s",
        outcome.images_per_second
    )?;
    writeln!(w, "  wall time         {:.1} s", outcome.wall_seconds)?;
    writeln!(w, "  run folder        {}", dir.display())?;
    let best_file = if dir.join("best.safetensors").exists() {
        ", best.safetensors"
    } else {
        ""
    };
    writeln!(w, "  checkpoints       last.safetensors{best_file}")
}

/// The table at the end of `ablate`: one row per run (a failed run shows dashes).
pub fn ablation(
    w: &mut dyn Write,
    rows: &[(String, Option<TrainOutcome>)],
    compare: &Path,
    compared: bool,
) -> Result<()> {
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(3).max(3);
    writeln!(
        w,
        "\n{:<width$}  {:>6}  {:>8}  {:>8}  {:>8}",
        "run", "epochs", "best val", "test", "time"
    )?;
    for (label, outcome) in rows {
        match outcome {
            Some(o) => {
                let best = o
                    .history
                    .iter()
                    .filter_map(|r| r.val_accuracy)
                    .reduce(f64::max);
                writeln!(
                    w,
                    "{label:<width$}  {:>6}  {:>8}  {:>7.2}%  {:>7.0}s",
                    o.epochs_run,
                    best.map_or("-".into(), |b| format!("{:.2}%", b * 100.0)),
                    o.test_accuracy * 100.0,
                    o.wall_seconds
                )?;
            }
            None => writeln!(
                w,
                "{label:<width$}  {:>6}  {:>8}  {:>8}  {:>8}",
                "-", "-", "failed", "-"
            )?,
        }
    }
    if compared {
        writeln!(w, "\ncomparison page: {}", compare.display())?;
    }
    Ok(())
}

/// An error and its causes joined by ": ", skipping a cause whose text the message already
/// holds (our errors name their OS error in their own text, so `{:#}` printed it twice).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = crate::checkpoint::CheckpointError::Io {
            path: "a.safetensors".into(),
            source: io,
        };
        assert_eq!(error_chain(&err), "a.safetensors: no such file");
        let outer = anyhow::Error::new(std::io::Error::other("disk full")).context("saving x");
        assert_eq!(error_chain(outer.as_ref()), "saving x: disk full");
    }
}
