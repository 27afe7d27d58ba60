//! What `bench` prints: per-kernel tables, the end-to-end figures, `--compare`.

use crate::bench::{BenchResult, KernelTime};
use std::io::{Result, Write};

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
