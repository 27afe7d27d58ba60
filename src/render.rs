//! What the CLI prints: text for people, JSON lines for scripts. Each function writes to
//! the writer it is given and returns its I/O error, so a closed pipe (`| head`) is an
//! error the caller can ignore rather than a panic.

use crate::bench::{BenchResult, KernelTime};
use crate::gpu::AdapterSummary;
use crate::infer::EvalReport;
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
        writeln!(
            w,
            "defaults: {} lr {} momentum {} weight decay {} batch {} epochs {}\n",
            p.optimizer, p.lr, p.momentum, p.weight_decay, p.batch_size, p.epochs
        )?;
    }
    writeln!(w, "spec: {}\n", spec.to_text())?;
    write!(w, "{}", spec.summary())
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
    let early = if outcome.stopped_early {
        " (stopped early)"
    } else {
        ""
    };
    writeln!(w, "  epochs            {}{early}", outcome.epochs_run)?;
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

/// What `eval` says about where its numbers come from.
pub struct EvalContext<'a> {
    pub checkpoint: &'a Path,
    pub epoch: usize,
    pub step: u64,
    pub spec: &'a ModelSpec,
    pub split: &'a str,
    pub data_dir: &'a Path,
    pub adapter: &'a str,
}

/// `eval`: accuracy, loss, per-class precision/recall and the confusion matrix.
pub fn eval(w: &mut dyn Write, c: &EvalContext, r: &EvalReport, json: bool) -> Result<()> {
    if json {
        return writeln!(w, "{}", serde_json::to_string(r).unwrap_or_default());
    }
    let path = c.checkpoint.display();
    writeln!(w, "checkpoint  {path} (epoch {}, step {})", c.epoch, c.step)?;
    writeln!(w, "model       {}", c.spec.to_text())?;
    let data = c.data_dir.display();
    writeln!(
        w,
        "data        {} split of {data} ({} images)",
        c.split, r.count
    )?;
    writeln!(w, "adapter     {}\n", c.adapter)?;
    writeln!(w, "accuracy    {:.2} %", r.accuracy * 100.0)?;
    writeln!(w, "loss        {:.4}\n", r.loss)?;
    writeln!(
        w,
        "{:<12} {:>8} {:>10} {:>8}",
        "class", "support", "precision", "recall"
    )?;
    for k in &r.per_class {
        let (p, rc) = (k.precision * 100.0, k.recall * 100.0);
        writeln!(w, "{:<12} {:>8} {p:>9.1}% {rc:>7.1}%", k.class, k.support)?;
    }
    writeln!(w, "\nconfusion (rows: true class, columns: predicted)")?;
    write!(w, "{:<12}", "")?;
    for j in 0..r.confusion.len() {
        write!(w, "{j:>6}")?;
    }
    writeln!(w)?;
    for (i, row) in r.confusion.iter().enumerate() {
        let name: String = r.per_class[i].class.chars().take(9).collect();
        write!(w, "{:<12}", format!("{i} {name}"))?;
        for v in row {
            write!(w, "{v:>6}")?;
        }
        writeln!(w)?;
    }
    Ok(())
}

/// `predict`: the `top` classes of one image with their probabilities.
pub fn prediction(
    w: &mut dyn Write,
    image: &Path,
    probs: &[f32],
    classes: &[String],
    top: usize,
    json: bool,
) -> Result<()> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let name = |c: usize| classes.get(c).cloned().unwrap_or_else(|| c.to_string());
    let best = order.iter().take(top.max(1));
    if json {
        let topk: Vec<serde_json::Value> = best
            .map(|&c| serde_json::json!({"class": name(c), "index": c, "probability": probs[c]}))
            .collect();
        let v = serde_json::json!({"image": image.display().to_string(), "top": topk});
        return writeln!(w, "{v}");
    }
    let parts: Vec<String> = best
        .map(|&c| format!("{} {:.1}%", name(c), probs[c] * 100.0))
        .collect();
    writeln!(w, "{}: {}", image.display(), parts.join(", "))
}

/// What `bench` measured, for `bench`'s output.
pub struct BenchContext<'a> {
    pub model: &'a str,
    pub batch: usize,
    pub adapter: &'a str,
    /// Every dispatch (else totals per entry point).
    pub all_kernels: bool,
    pub json: bool,
    /// How kernel variants were chosen (measured and cached, fixed order, `--variant`).
    pub choice: &'a str,
}

/// `bench`: per-kernel table (or JSON lines) and the end-to-end figures.
pub fn bench(w: &mut dyn Write, c: &BenchContext, r: &BenchResult) -> Result<()> {
    let sum: f64 = r.kernels.iter().map(|k| k.seconds).sum();
    let in_step: Option<f64> = r.kernels.iter().map(|k| k.seconds_in_step).sum();
    if c.json {
        for k in &r.kernels {
            let v = serde_json::json!({
                "kernel": k.label, "shape": k.label.split_once(' ').map(|x| x.1).unwrap_or(""),
                "seconds": k.seconds, "gflops": k.flops / k.seconds / 1e9,
                "gbytes_per_second": k.bytes / k.seconds / 1e9,
                "seconds_in_step": k.seconds_in_step,
            });
            writeln!(w, "{v}")?;
        }
        let v = serde_json::json!({
            "model": c.model, "batch_size": c.batch, "adapter": c.adapter, "timing": r.timing,
            "train_images_per_second": r.train_images_per_second,
            "infer_images_per_second": r.infer_images_per_second,
            "step_seconds": r.step_seconds, "kernel_seconds_sum": sum,
            "dispatches_per_train_step": r.dispatches_per_train_step,
            "dispatches_per_infer_batch": r.dispatches_per_infer_batch,
            "kernel_seconds_in_step_sum": in_step,
            "validated_batch": r.validation.batch, "validated_tensors": r.validation.tensors,
            "validation_worst_error_over_tolerance": r.validation.worst_relative,
            "kernel_choice": c.choice,
            "others_cpu_share": r.others_cpu_share,
            "plain_step_seconds": r.augment_cost.map(|c| c.plain_step_seconds),
            "augment_step_ratio": r.augment_cost.map(|c| c.ratio),
        });
        return writeln!(w, "{v}");
    }
    writeln!(
        w,
        "{} at batch {} on {} ({})",
        c.model, c.batch, c.adapter, r.timing
    )?;
    writeln!(
        w,
        "validated against the CPU reference at batch {}: training logits, loss and {} gradients, inference logits; worst error {:.2} of the tolerance",
        r.validation.batch,
        r.validation.tensors - 3,
        r.validation.worst_relative
    )?;
    writeln!(w, "kernel choice: {}\n", c.choice)?;
    let rows = if c.all_kernels {
        r.kernels.clone()
    } else {
        r.per_entry_point()
    };
    // "us": each dispatch timed alone; "in step": within the recorded step, between its
    // neighbours (where the adapter has timestamps inside passes).
    let title = if c.all_kernels {
        "kernel (every dispatch of one step)"
    } else {
        "kernel (all calls in one step)"
    };
    writeln!(
        w,
        "{title:<64} {:>10} {:>10} {:>9} {:>8}",
        "us", "in step", "GFLOP/s", "GB/s"
    )?;
    for k in &rows {
        kernel_row(w, k)?;
    }
    writeln!(w, "\nsum of kernels   {:.2} ms per step", sum * 1e3)?;
    if let Some(s) = in_step {
        writeln!(w, "  in the step    {:.2} ms", s * 1e3)?;
    }
    writeln!(
        w,
        "measured step    {:.2} ms per step",
        r.step_seconds * 1e3
    )?;
    writeln!(
        w,
        "dispatches       {} per training step, {} per inference batch",
        r.dispatches_per_train_step, r.dispatches_per_infer_batch
    )?;
    if let Some(c) = r.augment_cost {
        writeln!(
            w,
            "  without --augment {:.2} ms: the augmented step takes {:.3}x (median of {} \
             alternating windows)",
            c.plain_step_seconds * 1e3,
            c.ratio,
            c.pairs
        )?;
    }
    writeln!(
        w,
        "train            {:.0} images/s",
        r.train_images_per_second
    )?;
    writeln!(
        w,
        "inference        {:.0} images/s",
        r.infer_images_per_second
    )?;
    match r.others_cpu_share {
        Some(share) if share > crate::bench::load::BUSY_MACHINE => writeln!(
            w,
            "other processes took {:.0} % of the CPUs while timing: these figures are not \
             reliable (rerun with the machine to itself)",
            share * 100.0
        ),
        Some(share) => writeln!(
            w,
            "other processes took {:.0} % of the CPUs while timing",
            share * 100.0
        ),
        None => Ok(()),
    }
}

/// `bench --compare`: each kernel's time then and now with the ratio, then images/s.
pub fn bench_compare(
    w: &mut dyn Write,
    c: &BenchContext,
    base: &crate::bench::compare::Baseline,
    r: &BenchResult,
) -> Result<()> {
    use crate::bench::compare;
    let rows = compare::rows(base, &r.kernels, c.all_kernels);
    let ends = compare::end_to_end(base, r);
    let differences = base.differences(c.model, c.batch, c.adapter, r.others_cpu_share);
    if c.json {
        for row in &rows {
            let v = serde_json::json!({
                "kernel": row.label, "base_seconds": row.base, "seconds": row.now,
                "ratio": row.ratio(),
            });
            writeln!(w, "{v}")?;
        }
        let mut v = serde_json::json!({
            "model": c.model, "batch_size": c.batch, "adapter": c.adapter,
            "differences": differences,
        });
        for (what, then, now) in ends {
            let key = if what == "train" { "train" } else { "infer" };
            v[format!("base_{key}_images_per_second")] = then.into();
            v[format!("{key}_images_per_second")] = now.into();
            v[format!("{key}_speedup")] = (now / then).into();
        }
        return writeln!(w, "{v}");
    }
    writeln!(
        w,
        "{} at batch {} on {} ({}), against the saved result",
        c.model, c.batch, c.adapter, r.timing
    )?;
    for d in &differences {
        writeln!(w, "note: {d}; compare with care")?;
    }
    writeln!(
        w,
        "\n{:<64} {:>10} {:>10} {:>8}",
        "kernel (us per step)", "then", "now", "now/then"
    )?;
    let us = |v: Option<f64>| v.map_or("-".into(), |s| format!("{:.1}", s * 1e6));
    for row in &rows {
        let label: String = row.label.chars().take(64).collect();
        let ratio = row.ratio().map_or("-".into(), |x| format!("{x:.2}"));
        // A kernel 10 % slower than before is worth a look; say so where it is.
        let mark = match row.ratio() {
            Some(x) if x > 1.1 => "  slower",
            Some(x) if x < 1.0 / 1.1 => "  faster",
            _ => "",
        };
        writeln!(
            w,
            "{label:<64} {:>10} {:>10} {ratio:>8}{mark}",
            us(row.base),
            us(row.now)
        )?;
    }
    let total = |f: fn(&compare::Row) -> Option<f64>| rows.iter().filter_map(f).sum::<f64>();
    writeln!(
        w,
        "{:<64} {:>10.1} {:>10.1} {:>8.2}",
        "sum of kernels",
        total(|r| r.base) * 1e6,
        total(|r| r.now) * 1e6,
        total(|r| r.now) / total(|r| r.base)
    )?;
    writeln!(w)?;
    for (what, then, now) in ends {
        writeln!(
            w,
            "{what:<10} {then:>8.0} -> {now:>8.0} images/s  ({:.2}x)",
            now / then
        )?;
    }
    Ok(())
}

fn kernel_row(w: &mut dyn Write, k: &KernelTime) -> Result<()> {
    let rate = |v: f64| {
        if v > 0.0 {
            format!("{:.2}", v / k.seconds / 1e9)
        } else {
            "-".into()
        }
    };
    let label: String = k.label.chars().take(64).collect();
    let in_step = k
        .seconds_in_step
        .map_or("-".into(), |t| format!("{:.1}", t * 1e6));
    let (gf, gb) = (rate(k.flops), rate(k.bytes));
    writeln!(
        w,
        "{label:<64} {:>10.1} {in_step:>10} {gf:>9} {gb:>8}",
        k.seconds * 1e6
    )
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

/// One `check` line: pass or FAIL, what was checked, the worst error over the tolerance.
pub fn check_line(w: &mut dyn Write, line: &crate::check::Line, json: bool) -> Result<()> {
    if json {
        return writeln!(w, "{}", serde_json::to_string(line).unwrap_or_default());
    }
    let worst = line
        .worst_of_tolerance
        .map_or("-".to_string(), |x| format!("{x:.2}"));
    let batch = match line.batch {
        0 => String::new(),
        b => format!(" batch {b}"),
    };
    writeln!(
        w,
        "{:<4} {:<52} {:<8}{:<9} worst {:>5} of tolerance {:>6.2} s",
        if line.passed { "ok" } else { "FAIL" },
        line.case,
        line.variant,
        batch,
        worst,
        line.seconds
    )?;
    if let Some(why) = &line.failure {
        writeln!(w, "       {}: {why}", line.model)?;
    }
    Ok(())
}

pub fn check_summary(w: &mut dyn Write, s: &crate::check::Summary, json: bool) -> Result<()> {
    if json {
        let mut v = serde_json::to_value(s).unwrap_or_default();
        v["kind"] = "summary".into();
        return writeln!(w, "{v}");
    }
    writeln!(
        w,
        "{} checks, {} failed, on {} ({:.1} s)",
        s.lines, s.failed, s.adapter, s.seconds
    )
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
