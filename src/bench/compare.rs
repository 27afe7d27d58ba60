//! `bench --compare FILE.json`: the current bench next to a saved `bench --json` result,
//! kernel by kernel and end to end, so a regression shows in one command.

use super::{BenchResult, KernelTime};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CompareError {
    #[error("--compare {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--compare {}: line {line}: {message}", path.display())]
    Format {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("--compare {}: no summary line (the last line of `bench --json`)", path.display())]
    NoSummary { path: PathBuf },
}

/// A saved `bench --json` result.
#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    pub model: String,
    pub batch_size: usize,
    pub adapter: String,
    pub train_images_per_second: f64,
    pub infer_images_per_second: f64,
    /// Every dispatch of the step in order: label (entry point and shape), seconds per call.
    pub kernels: Vec<(String, f64)>,
    /// The share of the CPUs other processes took while it was timed, if it says.
    pub others_cpu_share: Option<f64>,
}

impl Baseline {
    pub fn read(path: &Path) -> Result<Baseline, CompareError> {
        let text = std::fs::read_to_string(path).map_err(|source| CompareError::Read {
            path: path.into(),
            source,
        })?;
        Baseline::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Baseline, CompareError> {
        let bad = |line: usize, message: String| CompareError::Format {
            path: path.into(),
            line,
            message,
        };
        let mut kernels = Vec::new();
        let mut summary = None;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                bad(
                    i + 1,
                    format!("not JSON ({e}); expected `bench --json` output"),
                )
            })?;
            let number = |key: &str| {
                v[key]
                    .as_f64()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| bad(i + 1, format!("`{key}` is missing or not a number")))
            };
            if let Some(label) = v["kernel"].as_str() {
                kernels.push((label.to_string(), number("seconds")?));
            } else if v.get("train_images_per_second").is_some() {
                summary = Some(Baseline {
                    model: v["model"].as_str().unwrap_or("?").to_string(),
                    batch_size: number("batch_size")? as usize,
                    adapter: v["adapter"].as_str().unwrap_or("?").to_string(),
                    train_images_per_second: number("train_images_per_second")?,
                    infer_images_per_second: number("infer_images_per_second")?,
                    kernels: Vec::new(),
                    others_cpu_share: v["others_cpu_share"].as_f64(),
                });
            } else {
                return Err(bad(i + 1, "neither a kernel line nor the summary".into()));
            }
        }
        let mut base = summary.ok_or_else(|| CompareError::NoSummary { path: path.into() })?;
        base.kernels = kernels;
        Ok(base)
    }

    /// What differs in how the two were measured (each a reason to read ratios with care),
    /// and either side timed on a busy machine (`now_busy`: this run's `others_cpu_share`).
    pub fn differences(
        &self,
        model: &str,
        batch: usize,
        adapter: &str,
        now_busy: Option<f64>,
    ) -> Vec<String> {
        let mut d = Vec::new();
        for (when, share) in [("then", self.others_cpu_share), ("now", now_busy)] {
            if let Some(x) = share.filter(|&x| x > super::load::BUSY_MACHINE) {
                d.push(format!(
                    "other processes took {:.0} % of the CPUs {when}",
                    x * 100.0
                ));
            }
        }
        if self.model != model {
            d.push(format!("model {} then, {model} now", self.model));
        }
        if self.batch_size != batch {
            d.push(format!("batch {} then, {batch} now", self.batch_size));
        }
        if self.adapter != adapter {
            d.push(format!("adapter {} then, {adapter} now", self.adapter));
        }
        d
    }
}

/// One row of the comparison: seconds per step then and now (None: only on one side).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub label: String,
    pub base: Option<f64>,
    pub now: Option<f64>,
}

impl Row {
    /// Now over then: above 1 is slower.
    pub fn ratio(&self) -> Option<f64> {
        match (self.base, self.now) {
            (Some(b), Some(n)) if b > 0.0 => Some(n / b),
            _ => None,
        }
    }
}

/// Kernel rows: every dispatch matched by label and occurrence (the second `relu_forward
/// n=100` of then with the second of now), then totalled per entry point unless `every`
/// dispatch is wanted; slowest (now) first, kernels found on one side only last.
pub fn rows(base: &Baseline, now: &[KernelTime], every: bool) -> Vec<Row> {
    let key = |label: &str| {
        if every {
            label.to_string()
        } else {
            label.split(' ').next().unwrap_or("").to_string()
        }
    };
    let mut out: Vec<Row> = Vec::new();
    let mut add = |label: String, base: Option<f64>, now: Option<f64>| match out
        .iter_mut()
        .find(|r| r.label == label)
    {
        Some(r) => {
            r.base = sum(r.base, base);
            r.now = sum(r.now, now);
        }
        None => out.push(Row { label, base, now }),
    };
    let mut used = vec![false; base.kernels.len()];
    for k in now {
        let matched = base
            .kernels
            .iter()
            .enumerate()
            .position(|(i, (label, _))| !used[i] && *label == k.label);
        let then = matched.map(|i| {
            used[i] = true;
            base.kernels[i].1
        });
        add(key(&k.label), then, Some(k.seconds));
    }
    for (i, (label, s)) in base.kernels.iter().enumerate() {
        if !used[i] {
            add(key(label), Some(*s), None);
        }
    }
    out.sort_by(|a, b| {
        (b.now.is_some() && b.base.is_some())
            .cmp(&(a.now.is_some() && a.base.is_some()))
            .then(b.now.unwrap_or(0.0).total_cmp(&a.now.unwrap_or(0.0)))
    });
    out
}

fn sum(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    }
}

/// End-to-end figures then and now: (what, then, now), images/s.
pub fn end_to_end(base: &Baseline, now: &BenchResult) -> [(&'static str, f64, f64); 2] {
    [
        (
            "train",
            base.train_images_per_second,
            now.train_images_per_second,
        ),
        (
            "inference",
            base.infer_images_per_second,
            now.infer_images_per_second,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(label: &str, seconds: f64) -> KernelTime {
        KernelTime {
            label: label.into(),
            seconds,
            seconds_in_step: None,
            flops: 0.0,
            bytes: 0.0,
        }
    }

    const SAVED: &str = r#"{"kernel":"relu_forward n=100","seconds":0.002}
{"kernel":"matmul_nn m=32","seconds":0.010}
{"kernel":"relu_forward n=100","seconds":0.004}
{"kernel":"old_kernel n=5","seconds":0.001}
{"model":"mlp","batch_size":32,"adapter":"llvmpipe","train_images_per_second":3000.0,"infer_images_per_second":8000.0}
"#;

    #[test]
    fn rows_match_dispatches_by_label_and_occurrence() {
        let base = Baseline::parse(Path::new("b.json"), SAVED).unwrap();
        assert_eq!(base.kernels.len(), 4);
        assert_eq!(base.train_images_per_second, 3000.0);
        let now = [
            kernel("relu_forward n=100", 0.001),
            kernel("relu_forward n=100", 0.002),
            kernel("matmul_nn m=32", 0.020),
            kernel("new_kernel n=5", 0.003),
        ];
        let every = rows(&base, &now, true);
        let relu = every
            .iter()
            .find(|r| r.label == "relu_forward n=100")
            .unwrap();
        assert_eq!((relu.base, relu.now), (Some(0.006), Some(0.003)));
        assert_eq!(relu.ratio(), Some(0.5));
        let matmul = &every[0];
        assert_eq!(
            (matmul.label.as_str(), matmul.ratio()),
            ("matmul_nn m=32", Some(2.0))
        );
        // Kernels on one side only come last, without a ratio.
        let tail: Vec<_> = every[2..]
            .iter()
            .map(|r| (r.label.as_str(), r.ratio()))
            .collect();
        assert_eq!(tail, [("new_kernel n=5", None), ("old_kernel n=5", None)]);
        let per_entry = rows(&base, &now, false);
        assert_eq!(per_entry.len(), 4);
        assert_eq!(per_entry[1].label, "relu_forward");
    }

    #[test]
    fn a_busy_machine_then_or_now_is_a_difference() {
        let p = Path::new("b.json");
        let quiet = Baseline::parse(p, SAVED).unwrap();
        assert_eq!(quiet.others_cpu_share, None);
        assert!(quiet
            .differences("mlp", 32, "llvmpipe", Some(0.02))
            .is_empty());
        let busy = SAVED.replace("8000.0}", "8000.0,\"others_cpu_share\":0.61}");
        let busy = Baseline::parse(p, &busy).unwrap();
        assert_eq!(busy.others_cpu_share, Some(0.61));
        assert_eq!(
            busy.differences("mlp", 16, "llvmpipe", Some(0.3)),
            [
                "other processes took 61 % of the CPUs then",
                "other processes took 30 % of the CPUs now",
                "batch 32 then, 16 now"
            ]
        );
    }

    #[test]
    fn bad_files_name_the_line_and_the_problem() {
        let p = Path::new("b.json");
        let e = Baseline::parse(p, "{\"kernel\":\"x\",\"seconds\":1}\nnot json\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--compare b.json: line 2: not JSON"),
            "{e}"
        );
        let e = Baseline::parse(p, "{\"kernel\":\"x\"}\n").unwrap_err();
        assert!(
            e.to_string().contains("line 1: `seconds` is missing"),
            "{e}"
        );
        let e = Baseline::parse(p, "{\"kernel\":\"x\",\"seconds\":1}\n").unwrap_err();
        assert!(e.to_string().contains("no summary line"), "{e}");
        let e = Baseline::read(Path::new("/nonexistent/b.json")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/b.json"), "{e}");
    }
}
