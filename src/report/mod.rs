//! Results people can see: `curves.png` (every epoch), `report.html` (a run's page) and the
//! comparison page of several runs, all drawn from what a run folder holds: config.toml,
//! metrics.jsonl and test.json.

pub mod curves;
pub mod diagram;
pub mod history;
pub mod html;
pub mod testset;

mod compare;
mod run_page;

pub use compare::compare_page;
pub use run_page::run_page;

use crate::model::{Layer, ModelSpec};
use crate::train::TrainConfig;
use history::History;
use html::esc;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use testset::TestReport;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("{dir}: not a run folder (it has no {missing}); pass the folder `train` printed as `run folder`")]
    NotARun { dir: PathBuf, missing: &'static str },
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("{path}: could not write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Draw(String),
}

/// Everything a page shows about one run.
pub struct RunFolder {
    pub dir: PathBuf,
    pub name: String,
    pub config: TrainConfig,
    pub spec: ModelSpec,
    pub history: History,
    /// Absent when the run did not reach its end (interrupted, or still training).
    pub test: Option<TestReport>,
    /// When metrics.jsonl was last written.
    pub updated: String,
}

impl RunFolder {
    pub fn read(dir: &Path) -> Result<RunFolder, ReportError> {
        let unreadable = |path: &Path, message: String| ReportError::Unreadable {
            path: path.to_path_buf(),
            message,
        };
        let config_path = dir.join("config.toml");
        let metrics_path = dir.join("metrics.jsonl");
        for (path, missing) in [
            (&config_path, "config.toml"),
            (&metrics_path, "metrics.jsonl"),
        ] {
            if !path.is_file() {
                return Err(ReportError::NotARun {
                    dir: dir.to_path_buf(),
                    missing,
                });
            }
        }
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| unreadable(&config_path, e.to_string()))?;
        let config: TrainConfig =
            toml::from_str(&text).map_err(|e| unreadable(&config_path, e.to_string()))?;
        let spec = ModelSpec::parse(&config.spec)
            .map_err(|e| unreadable(&config_path, format!("spec: {e}")))?;
        let history =
            History::read(&metrics_path).map_err(|e| unreadable(&metrics_path, e.to_string()))?;
        let test_path = dir.join("test.json");
        let test = match std::fs::read(&test_path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| unreadable(&test_path, e.to_string()))?,
            ),
            Err(_) => None,
        };
        let updated = std::fs::metadata(&metrics_path)
            .and_then(|m| m.modified())
            .map(utc_text)
            .unwrap_or_default();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| config.name.clone());
        Ok(RunFolder {
            dir: dir.to_path_buf(),
            name,
            config,
            spec,
            history,
            test,
            updated,
        })
    }

    fn summary(&self, key: &str) -> Option<&serde_json::Value> {
        self.history
            .summary
            .as_ref()
            .map(|s| &s[key])
            .filter(|v| !v.is_null())
    }

    /// What regularizes the run, in words.
    pub fn regularization(&self) -> String {
        let c = &self.config;
        let mut parts = vec![];
        if c.weight_decay > 0.0 {
            parts.push(format!("L2 {}", c.weight_decay));
        }
        if c.l1 > 0.0 {
            parts.push(format!("L1 {}", c.l1));
        }
        let dropout: Vec<String> = self
            .spec
            .layers
            .iter()
            .filter_map(|l| match l {
                Layer::Dropout { p } => Some(p.to_string()),
                _ => None,
            })
            .collect();
        if !dropout.is_empty() {
            parts.push(format!("dropout {}", dropout.join("/")));
        }
        if self.spec.layers.contains(&Layer::BatchNorm) {
            parts.push("batch norm".into());
        }
        if c.patience > 0 {
            parts.push(format!("early stopping ({})", c.patience));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    pub fn augmentation(&self) -> String {
        let mut parts = vec![];
        if self.config.augment != "none" && !self.config.augment.is_empty() {
            parts.push(self.config.augment.clone());
        }
        if self.config.flip {
            parts.push("flip".to_string());
        }
        if self.config.shift > 0 {
            parts.push(format!("shift {}", self.config.shift));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    /// The model in a few words: the preset's name, a preset with other dropout rates (as
    /// `ablate --vary dropout=…` makes), or "custom, N layers".
    pub fn model_label(&self) -> String {
        if crate::model::preset(&self.config.model).is_some() {
            return self.config.model.clone();
        }
        let same_but_dropout = |a: &[Layer], b: &[Layer]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| match (x, y) {
                    (Layer::Dropout { .. }, Layer::Dropout { .. }) => true,
                    _ => x == y,
                })
        };
        for p in crate::model::PRESETS {
            let Ok(spec) = ModelSpec::parse(p.spec) else {
                continue;
            };
            if same_but_dropout(&spec.layers, &self.spec.layers) {
                let rates: Vec<String> = self
                    .spec
                    .layers
                    .iter()
                    .filter_map(|l| match l {
                        Layer::Dropout { p } => Some(p.to_string()),
                        _ => None,
                    })
                    .collect();
                return format!("{} (dropout {})", p.name, rates.join("/"));
            }
        }
        format!("custom, {} layers", self.spec.layers.len())
    }

    fn wall_seconds(&self) -> f64 {
        self.summary("wall_seconds")
            .and_then(|v| v.as_f64())
            .unwrap_or_else(|| self.history.epochs.iter().map(|e| e.seconds).sum())
    }

    fn images_per_second(&self) -> Option<f64> {
        self.summary("images_per_second")
            .and_then(|v| v.as_f64())
            .or_else(|| self.history.epochs.last().map(|e| e.images_per_second))
    }

    fn test_accuracy(&self) -> Option<f64> {
        self.test
            .as_ref()
            .map(|t| t.accuracy)
            .or_else(|| self.summary("test_accuracy").and_then(|v| v.as_f64()))
    }
}

/// The curves' title: model, run name and when its log was last written.
pub fn title(run_dir: &Path, h: &History) -> String {
    let name = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let model = std::fs::read_to_string(run_dir.join("config.toml"))
        .ok()
        .and_then(|t| toml::from_str::<TrainConfig>(&t).ok())
        .map(|c| c.model)
        .unwrap_or_default();
    let mut t = format!(
        "{model} ({name}), {}",
        utc_text(std::time::SystemTime::now())
    );
    if let Some(acc) = h.summary.as_ref().and_then(|s| s["test_accuracy"].as_f64()) {
        let _ = write!(t, ", test accuracy {:.2} %", acc * 100.0);
    }
    t
}

/// "2026-11-23 19:45 UTC".
pub fn utc_text(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// A share as a percentage with two decimals.
fn pct(v: f64) -> String {
    format!("{:.2} %", v * 100.0)
}

fn write_page(path: &Path, text: &str) -> Result<(), ReportError> {
    crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes report.html into the run folder; returns its path.
pub fn write_run_report(dir: &Path) -> Result<PathBuf, ReportError> {
    let run = RunFolder::read(dir)?;
    let path = dir.join("report.html");
    write_page(&path, &run_page(&run)?)?;
    Ok(path)
}

/// Writes the comparison page of the run folders `dirs` to `out`.
pub fn write_compare(dirs: &[PathBuf], out: &Path) -> Result<(), ReportError> {
    let runs = dirs
        .iter()
        .map(|d| RunFolder::read(d))
        .collect::<Result<Vec<_>, _>>()?;
    write_page(out, &compare_page(&runs)?)
}

/// `summary --html`: the architecture diagram and the layer table as a page.
pub fn model_page(spec: &ModelSpec, name: &str) -> String {
    let mut b = format!(
        "<h1>{}</h1>\n<p class=\"sub\">{}</p>\n<div data-part=\"diagram\">\n",
        esc(name),
        esc(&spec.to_text())
    );
    b.push_str(&diagram::svg(spec));
    let _ = write!(
        b,
        "</div>\n<h2>Layers</h2>\n<pre>{}</pre>\n",
        esc(&crate::net::summary(spec))
    );
    html::page(&format!("{name} — wgpu-fmnist model"), &b)
}

/// A grid of 28x28 grayscale images as PNG: one row per entry of `rows`, each image scaled
/// `scale` times (nearest neighbour), a light line between the first column (the original)
/// and the rest.
pub fn grid_png(rows: &[Vec<Vec<u8>>], scale: u32) -> Vec<u8> {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0) as u32;
    let (cell, gap) = (28 * scale, 2u32);
    let width = cols * (cell + gap) + gap + 4;
    let height = rows.len() as u32 * (cell + gap) + gap;
    let mut img = image::GrayImage::from_pixel(width.max(1), height.max(1), image::Luma([70]));
    for (r, row) in rows.iter().enumerate() {
        for (c, pixels) in row.iter().enumerate() {
            let extra = if c > 0 { 4 } else { 0 };
            let (x0, y0) = (
                gap + c as u32 * (cell + gap) + extra,
                gap + r as u32 * (cell + gap),
            );
            for (i, &v) in pixels.iter().enumerate().take(784) {
                let (px, py) = (i as u32 % 28, i as u32 / 28);
                for dy in 0..scale {
                    for dx in 0..scale {
                        img.put_pixel(x0 + px * scale + dx, y0 + py * scale + dy, image::Luma([v]));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let _ = img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates_are_civil_dates() {
        let at =
            |s: u64| super::utc_text(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01 00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(
            at(1_795_456_800 + 3_600 * 19 + 60 * 45),
            "2026-11-24 13:45 UTC"
        );
    }
}
