//! What `eval` and `predict` print.

use crate::infer::EvalReport;
use crate::model::ModelSpec;
use std::io::{Result, Write};
use std::path::Path;

/// What `eval` says about where its numbers come from.
pub struct EvalContext<'a> {
    pub checkpoint: &'a Path,
    pub epoch: usize,
    pub step: u64,
    pub spec: &'a ModelSpec,
    pub split: &'a str,
    pub data_dir: &'a Path,
    pub adapter: &'a str,
    /// The test-time augmentation scored: "none" or "flip".
    pub tta: &'a str,
}

/// `eval`: accuracy, loss, per-class precision/recall and the confusion matrix.
pub fn eval(w: &mut dyn Write, c: &EvalContext, r: &EvalReport, json: bool) -> Result<()> {
    if json {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("tta".into(), c.tta.into());
        }
        return writeln!(w, "{v}");
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
    writeln!(w, "adapter     {}", c.adapter)?;
    writeln!(w, "tta         {}\n", c.tta)?;
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
