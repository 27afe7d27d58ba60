//! `wgpu-fmnist ablate`: a study in one command. Every `--vary KEY=V1,V2,…` multiplies the
//! runs; each combination trains, one after the other, into a sibling folder of the study
//! folder, and the study ends with a table and a comparison page (compare.html).
//!
//! KEY is any training setting (as in a config file: `lr`, `weight_decay`, `optimizer`,
//! `schedule`, `flip`, `shift`, `label_smoothing`, `model`, …) or `dropout`, which sets the
//! probability of every dropout layer of the model. Values are separated by commas outside
//! parentheses, so `--vary "schedule=constant,step(every=2,gamma=0.5)"` is two values.

use super::RunSetup;
use crate::model::{self, Layer, ModelSpec};
use crate::train::{ConfigError, PartialConfig, TrainConfig};
use std::path::{Path, PathBuf};

/// Settings a study may not vary: they say where and on what the study runs.
const FIXED: &[&str] = &["out", "name", "data", "backend", "adapter", "software"];

/// One `--vary` flag.
#[derive(Clone, Debug, PartialEq)]
pub struct Vary {
    pub key: String,
    pub values: Vec<String>,
}

fn bad(item: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        flag: "--vary",
        message: format!("`{item}`: {message}"),
    }
}

/// Splits at commas that are not inside parentheses.
fn split_values(text: &str) -> Vec<String> {
    let (mut out, mut depth, mut cur) = (Vec::new(), 0i32, String::new());
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur.trim().to_string());
    out
}

impl Vary {
    pub fn parse(text: &str) -> Result<Vary, ConfigError> {
        let (key, values) = text
            .split_once('=')
            .ok_or_else(|| bad(text, "should be KEY=VALUE1,VALUE2,…".into()))?;
        let key = key.trim().trim_start_matches("--").replace('-', "_");
        let values = split_values(values);
        if values.iter().any(|v| v.is_empty()) {
            return Err(bad(text, "has an empty value".into()));
        }
        if FIXED.contains(&key.as_str()) {
            return Err(bad(
                text,
                format!("`{key}` is where or on what the study runs; give it once as a flag"),
            ));
        }
        if key != "dropout" {
            // Each value must be a setting a config file accepts.
            for v in &values {
                setting(&key, v).map_err(|m| bad(text, m))?;
            }
        }
        Ok(Vary { key, values })
    }
}

/// `key = value` as a config-file fragment (a string when the value is not a TOML literal).
fn setting(key: &str, value: &str) -> Result<PartialConfig, String> {
    let literal = PartialConfig::from_toml(&format!("{key} = {value}"));
    match literal {
        Ok(p) => Ok(p),
        Err(first) => {
            let quoted = format!(
                "{key} = \"{}\"",
                value.replace('\\', "\\\\").replace('"', "\\\"")
            );
            PartialConfig::from_toml(&quoted).map_err(|_| {
                let first = first
                    .lines()
                    .find(|l| l.contains("unknown field"))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                if first.is_empty() {
                    format!("`{value}` is not a valid value for `{key}`")
                } else {
                    format!("`{key}` is not a training setting ({first})")
                }
            })
        }
    }
}

/// The model of `partial` with every dropout layer's probability set to `p`.
fn with_dropout(partial: &mut PartialConfig, item: &str, p: &str) -> Result<String, ConfigError> {
    let p: f32 = p
        .parse()
        .ok()
        .filter(|p| (0.0..1.0).contains(p))
        .ok_or_else(|| {
            bad(
                item,
                format!("dropout `{p}` must be a probability in [0, 1)"),
            )
        })?;
    let name = partial.model.clone().unwrap_or_else(|| "regcnn".into());
    let (spec, _) = model::resolve(&name)?;
    // The rewritten spec is no longer a preset name: keep the preset's training defaults.
    if let Some(p) = model::preset(&name) {
        partial.optimizer.get_or_insert(p.optimizer);
        if partial.optimizer == Some(p.optimizer) {
            partial.lr.get_or_insert(p.lr);
            partial.momentum.get_or_insert(p.momentum);
            partial.weight_decay.get_or_insert(p.weight_decay);
        }
        partial.batch_size.get_or_insert(p.batch_size);
        partial.epochs.get_or_insert(p.epochs);
    }
    if !spec
        .layers
        .iter()
        .any(|l| matches!(l, Layer::Dropout { .. }))
    {
        return Err(bad(
            item,
            format!("the model `{name}` has no dropout layer to vary"),
        ));
    }
    let layers = spec
        .layers
        .iter()
        .map(|l| match l {
            Layer::Dropout { .. } => Layer::Dropout { p },
            other => *other,
        })
        .collect();
    Ok(ModelSpec::from_layers(layers)?.to_text())
}

/// One run of a study.
pub struct StudyRun {
    /// `key=value` of each varied setting, e.g. `lr=0.01 dropout=0.2`.
    pub label: String,
    pub setup: RunSetup,
}

/// The study folder and its runs, every configuration validated before anything trains.
pub struct Study {
    pub dir: PathBuf,
    pub runs: Vec<StudyRun>,
}

/// A folder name for a run label (no path separators or spaces).
fn folder_name(label: &str) -> String {
    label
        .chars()
        .map(|c| match c {
            '/' | '\\' | ' ' | ':' => '_',
            c => c,
        })
        .collect()
}

impl Study {
    pub fn plan(
        file: Option<&Path>,
        flags: &PartialConfig,
        varies: &[String],
        one_at_a_time: bool,
    ) -> Result<Study, ConfigError> {
        let varies = varies
            .iter()
            .map(|v| Vary::parse(v))
            .collect::<Result<Vec<_>, _>>()?;
        if varies.is_empty() {
            return Err(bad("", "give at least one --vary KEY=V1,V2".into()));
        }
        let base = match file {
            Some(path) => PartialConfig::from_file(path)?.overlay(flags),
            None => flags.clone(),
        };
        let model_name = base.model.clone().unwrap_or_else(|| "regcnn".into());
        let study_name = base
            .name
            .clone()
            .unwrap_or_else(|| match model::preset(&model_name) {
                Some(p) => format!("ablate-{}", p.name),
                None => "ablate".into(),
            });
        let dir = base
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs"))
            .join(study_name);
        // Every combination, the first --vary changing slowest; or the baseline (nothing
        // changed) and then each value of each --vary alone.
        let mut combos: Vec<Vec<(usize, &str)>> = vec![vec![]];
        for (i, v) in varies.iter().enumerate().filter(|_| one_at_a_time) {
            combos.extend(v.values.iter().map(|value| vec![(i, value.as_str())]));
        }
        for (i, v) in varies.iter().enumerate().filter(|_| !one_at_a_time) {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    v.values.iter().map(move |value| {
                        let mut c = c.clone();
                        c.push((i, value.as_str()));
                        c
                    })
                })
                .collect();
        }
        let mut runs = Vec::new();
        for combo in combos {
            let mut partial = base.clone();
            // Settings first, dropout last (it rewrites whichever model the run has).
            for &(i, value) in combo.iter().filter(|(i, _)| varies[*i].key != "dropout") {
                let item = format!("{}={value}", varies[i].key);
                partial =
                    partial.overlay(&setting(&varies[i].key, value).map_err(|m| bad(&item, m))?);
            }
            for &(_, value) in combo.iter().filter(|(i, _)| varies[*i].key == "dropout") {
                let item = format!("dropout={value}");
                partial.model = Some(with_dropout(&mut partial, &item, value)?);
            }
            let label = match combo.is_empty() {
                true => "baseline".to_string(),
                false => combo
                    .iter()
                    .map(|&(i, value)| format!("{}={value}", varies[i].key))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            partial.out = Some(dir.clone());
            partial.name = Some(folder_name(&label));
            let cfg = TrainConfig::resolve(&partial).map_err(|e| bad(&label, e.to_string()))?;
            runs.push(StudyRun {
                label,
                setup: RunSetup::for_study(cfg),
            });
        }
        Ok(Study { dir, runs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_split_outside_parentheses_and_keys_are_checked() {
        let v = Vary::parse("schedule=constant,step(every=2,gamma=0.5)").unwrap();
        assert_eq!(v.values, vec!["constant", "step(every=2,gamma=0.5)"]);
        let v = Vary::parse("weight-decay=0,1e-3").unwrap();
        assert_eq!(v.key, "weight_decay");
        for (text, says) in [
            ("lrr=0.1", "`lrr` is not a training setting"),
            ("lr=fast", "not a valid value"),
            ("lr", "KEY=VALUE"),
            ("out=a,b", "give it once as a flag"),
            ("lr=0.1,", "empty value"),
        ] {
            let e = Vary::parse(text).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("--vary"), "{text}: {e}");
        }
    }

    #[test]
    fn a_study_is_every_combination_with_dropout_rewriting_the_model() {
        let flags = PartialConfig {
            model: Some("regcnn".into()),
            out: Some(PathBuf::from("/tmp/studies")),
            ..Default::default()
        };
        let s = Study::plan(
            None,
            &flags,
            &[
                "dropout=0,0.3".into(),
                "lr=0.01,0.1".into(),
                "flip=false,true".into(),
            ],
            false,
        )
        .unwrap();
        assert_eq!(s.dir, PathBuf::from("/tmp/studies/ablate-regcnn"));
        assert_eq!(s.runs.len(), 8);
        assert_eq!(s.runs[0].label, "dropout=0 lr=0.01 flip=false");
        assert_eq!(s.runs[7].label, "dropout=0.3 lr=0.1 flip=true");
        let last = &s.runs[7].setup.cfg;
        assert!(
            last.spec.contains("dropout(0.3)") && !last.spec.contains("dropout(0.2)"),
            "{}",
            last.spec
        );
        assert!(last.flip && last.lr == 0.1);
        assert_eq!(last.name, "dropout=0.3_lr=0.1_flip=true");
        assert_eq!(last.out, PathBuf::from("/tmp/studies/ablate-regcnn"));
        // The preset's defaults still apply to what is not varied.
        assert_eq!(last.momentum, 0.9);
        let e = Study::plan(
            None,
            &PartialConfig {
                model: Some("mlp".into()),
                ..Default::default()
            },
            &["dropout=0.1".into()],
            false,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("no dropout layer"), "{e}");
    }

    #[test]
    fn one_at_a_time_changes_each_setting_alone_after_a_baseline() {
        let flags = PartialConfig {
            model: Some("fast".into()),
            epochs: Some(2),
            ..Default::default()
        };
        let s = Study::plan(
            None,
            &flags,
            &[
                "ema=0".into(),
                "augment=none,flip".into(),
                "tta=none".into(),
            ],
            true,
        )
        .unwrap();
        let labels: Vec<&str> = s.runs.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "baseline",
                "ema=0",
                "augment=none",
                "augment=flip",
                "tta=none"
            ]
        );
        let cfg = |i: usize| &s.runs[i].setup.cfg;
        // The baseline is the preset's recipe; each run changes only its own setting.
        assert_eq!(cfg(0).ema, Some(0.99));
        assert_eq!(cfg(0).augment, "flip(p=0.5) shift(2)");
        assert_eq!(
            (cfg(1).ema, cfg(1).augment.as_str()),
            (None, "flip(p=0.5) shift(2)")
        );
        assert_eq!((cfg(2).ema, cfg(2).augment.as_str()), (Some(0.99), "none"));
        assert_eq!(cfg(3).augment, "flip(p=0.5)");
        assert_eq!(cfg(4).tta, crate::train::Tta::None);
        assert_eq!(cfg(3).tta, crate::train::Tta::Flip);
        assert!(s.runs.iter().all(|r| r.setup.cfg.epochs == 2));
        assert_eq!(cfg(0).name, "baseline");
    }
}
