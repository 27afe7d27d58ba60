//! A run's `metrics.jsonl` read back: the running figures logged within each epoch, the
//! epoch records and the closing summary. Curves and reports are drawn from this alone,
//! so they can be redrawn from a run folder at any time (also while it trains).

use serde_json::Value;
use std::path::Path;

/// A running figure logged within an epoch; `x` is the position in epochs (1.5 = halfway
/// through the second epoch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepPoint {
    pub x: f64,
    pub loss: f64,
    pub accuracy: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub seconds: f64,
    pub images_per_second: f64,
}

#[derive(Clone, Debug, Default)]
pub struct History {
    pub steps: Vec<StepPoint>,
    pub epochs: Vec<EpochPoint>,
    /// The `kind: "summary"` line of a finished run.
    pub summary: Option<Value>,
}

impl History {
    /// Training seconds at which validation first reached each of `milestones` (percent):
    /// the closing summary's `seconds_to_val_accuracy`, else (a run still training, or one
    /// from before the record) the epochs' training time summed up to that epoch.
    pub fn time_to_accuracy(&self, milestones: &[f64]) -> Vec<(f64, Option<f64>)> {
        use crate::train::milestones::{key, reaches};
        let recorded = self
            .summary
            .as_ref()
            .and_then(|s| s["seconds_to_val_accuracy"].as_object().cloned());
        milestones
            .iter()
            .map(|&m| {
                let seconds = match &recorded {
                    Some(r) => r.get(&key(m)).and_then(Value::as_f64),
                    None => {
                        let mut total = 0.0;
                        self.epochs.iter().find_map(|e| {
                            total += e.seconds;
                            e.val_accuracy.filter(|&a| reaches(a, m)).map(|_| total)
                        })
                    }
                };
                (m, seconds)
            })
            .collect()
    }

    /// Reads `metrics.jsonl`; lines that are not JSON (a line cut short by a crash) are
    /// skipped, as are records of an epoch that a resumed run redid.
    pub fn read(path: &Path) -> std::io::Result<History> {
        Ok(History::parse(&std::fs::read_to_string(path)?))
    }

    pub fn parse(text: &str) -> History {
        let mut h = History::default();
        for v in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            let f = |key: &str| v[key].as_f64();
            match v["kind"].as_str() {
                Some("step") => {
                    // Older logs have no epoch in step lines: the next epoch record's.
                    let epoch = v["epoch"]
                        .as_u64()
                        .map_or(h.epochs.len() + 1, |e| e as usize)
                        .max(1);
                    let (Some(step), Some(loss), Some(accuracy)) =
                        (f("step_in_epoch"), f("running_loss"), f("running_accuracy"))
                    else {
                        continue;
                    };
                    let steps = f("steps_per_epoch").unwrap_or(step).max(1.0);
                    let x = (epoch - 1) as f64 + step / steps;
                    // A resumed epoch starts again from its checkpoint: drop what it redoes.
                    let start = (epoch - 1) as f64;
                    h.steps.retain(|p| p.x < x || p.x <= start);
                    h.steps.push(StepPoint { x, loss, accuracy });
                }
                Some("epoch") => {
                    let (Some(epoch), Some(train_loss), Some(train_accuracy)) =
                        (v["epoch"].as_u64(), f("train_loss"), f("train_accuracy"))
                    else {
                        continue;
                    };
                    let epoch = epoch as usize;
                    h.epochs.retain(|e| e.epoch < epoch);
                    h.epochs.push(EpochPoint {
                        epoch,
                        train_loss,
                        train_accuracy,
                        val_loss: f("val_loss"),
                        val_accuracy: f("val_accuracy"),
                        seconds: f("seconds").unwrap_or(0.0),
                        images_per_second: f("images_per_second").unwrap_or(0.0),
                    });
                }
                Some("summary") => h.summary = Some(v),
                _ => {}
            }
        }
        h
    }

    /// The epoch with the best validation accuracy (the one best.safetensors holds).
    pub fn best_epoch(&self) -> Option<&EpochPoint> {
        self.epochs
            .iter()
            .filter(|e| e.val_accuracy.is_some())
            .max_by(|a, b| a.val_accuracy.partial_cmp(&b.val_accuracy).unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_epochs_and_summary_are_read_and_a_redone_epoch_replaces_the_first_try() {
        let log = r#"{"kind":"step","epoch":1,"steps_per_epoch":200,"step_in_epoch":100,"running_loss":1.0,"running_accuracy":0.5}
{"kind":"step","epoch":1,"steps_per_epoch":200,"step_in_epoch":200,"running_loss":0.8,"running_accuracy":0.6}
{"kind":"epoch","epoch":1,"train_loss":0.8,"train_accuracy":0.6,"val_loss":0.7,"val_accuracy":0.7,"seconds":2.0,"images_per_second":100.0}
{"kind":"step","epoch":2,"steps_per_epoch":200,"step_in_epoch":100,"running_loss":0.9,"running_accuracy":0.65}
not json: the line a crash cut short
{"kind":"step","epoch":2,"steps_per_epoch":200,"step_in_epoch":100,"running_loss":0.6,"running_accuracy":0.75}
{"kind":"epoch","epoch":2,"train_loss":0.6,"train_accuracy":0.75,"val_loss":0.5,"val_accuracy":0.8,"seconds":2.0,"images_per_second":100.0}
{"kind":"summary","test_accuracy":0.79}
"#;
        let h = History::parse(log);
        let xs: Vec<f64> = h.steps.iter().map(|p| p.x).collect();
        assert_eq!(xs, vec![0.5, 1.0, 1.5]);
        assert_eq!(
            h.steps[2].loss, 0.6,
            "the resumed epoch's figure replaces the lost one"
        );
        assert_eq!(h.epochs.len(), 2);
        assert_eq!(h.best_epoch().unwrap().epoch, 2);
        assert_eq!(h.summary.as_ref().unwrap()["test_accuracy"], 0.79);
    }
}
