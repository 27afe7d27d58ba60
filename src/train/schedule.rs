//! Learning-rate schedules (`--schedule`), as torch.optim.lr_scheduler computes them. The
//! trainer turns a schedule into the per-step learning-rate table the optimizer kernels read
//! on the GPU (`lr[step]`), so nothing is uploaded per step; only reduce-on-plateau, which
//! depends on validation, rewrites the table's remaining steps between epochs.
//!
//! Grammar: one item, `name` or `name(key=value,...)`:
//! - `constant`
//! - `step(every=E, gamma=0.1)`: × gamma every E epochs (StepLR stepped per epoch)
//! - `multistep(at=10:20, gamma=0.1)`: × gamma at each listed epoch (MultiStepLR)
//! - `exp(gamma=0.95)`: × gamma per epoch (ExponentialLR)
//! - `cosine(warmup=0, min=0)`: linear warmup over `warmup` epochs from lr/warmup-steps,
//!   then cosine from lr to `min` over the remaining steps (per step)
//! - `onecycle(pct=0.3, div=25, final_div=1e4)`: OneCycleLR with max_lr = --lr, cosine
//!   annealing (per step, over the run's epochs)
//! - `plateau(factor=0.1, patience=10, threshold=1e-4, min=0)`: ReduceLROnPlateau on the
//!   validation loss (mode min, relative threshold), decided at each epoch's end

use std::fmt;
use thiserror::Error;

#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    Step {
        every: usize,
        gamma: f64,
    },
    MultiStep {
        at: Vec<usize>,
        gamma: f64,
    },
    Exp {
        gamma: f64,
    },
    Cosine {
        warmup: f64,
        min: f64,
    },
    OneCycle {
        pct: f64,
        div: f64,
        final_div: f64,
    },
    Plateau {
        factor: f64,
        patience: usize,
        threshold: f64,
        min: f64,
    },
}

#[derive(Debug, Error, PartialEq)]
#[error("--schedule `{text}`: {message}")]
pub struct ScheduleError {
    pub text: String,
    pub message: String,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => write!(f, "constant"),
            Schedule::Step { every, gamma } => write!(f, "step(every={every},gamma={gamma})"),
            Schedule::MultiStep { at, gamma } => {
                let at: Vec<String> = at.iter().map(|e| e.to_string()).collect();
                write!(f, "multistep(at={},gamma={gamma})", at.join(":"))
            }
            Schedule::Exp { gamma } => write!(f, "exp(gamma={gamma})"),
            Schedule::Cosine { warmup, min } => write!(f, "cosine(warmup={warmup},min={min})"),
            Schedule::OneCycle {
                pct,
                div,
                final_div,
            } => {
                write!(f, "onecycle(pct={pct},div={div},final_div={final_div})")
            }
            Schedule::Plateau {
                factor,
                patience,
                threshold,
                min,
            } => write!(
                f,
                "plateau(factor={factor},patience={patience},threshold={threshold},min={min})"
            ),
        }
    }
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let err = |message: String| ScheduleError {
            text: text.to_string(),
            message,
        };
        let t = text.trim();
        let (name, args) = match t.find('(') {
            Some(i) => {
                let inner = t[i + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| err("missing the closing `)`".into()))?;
                (&t[..i], inner)
            }
            None => (t, ""),
        };
        let mut pairs: Vec<(String, String)> = Vec::new();
        for item in args.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| err(format!("`{item}` should be key=value")))?;
            pairs.push((k.trim().to_string(), v.trim().to_string()));
        }
        let allowed: &[&str] = match name.trim() {
            "constant" => &[],
            "step" => &["every", "gamma"],
            "multistep" => &["at", "gamma"],
            "exp" => &["gamma"],
            "cosine" => &["warmup", "min"],
            "onecycle" => &["pct", "div", "final_div"],
            "plateau" => &["factor", "patience", "threshold", "min"],
            other => {
                return Err(err(format!(
                    "unknown schedule `{other}` (constant, step, multistep, exp, cosine, onecycle, plateau)"
                )))
            }
        };
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(err(format!(
                "`{name}` has no setting `{k}` (it takes: {})",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let num = |key: &str, default: f64| -> Result<f64, ScheduleError> {
            match get(key) {
                None => Ok(default),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| err(format!("{key} = `{v}` is not a number"))),
            }
        };
        let epochs = |key: &str, v: f64| -> Result<usize, ScheduleError> {
            if v >= 1.0 && v.fract() == 0.0 {
                Ok(v as usize)
            } else {
                Err(err(format!(
                    "{key} = {v} must be a whole number of epochs, at least 1"
                )))
            }
        };
        let gamma = num("gamma", 0.1)?;
        let positive = |key: &str, v: f64| -> Result<f64, ScheduleError> {
            if v > 0.0 {
                Ok(v)
            } else {
                Err(err(format!("{key} = {v} must be positive")))
            }
        };
        let s = match name.trim() {
            "constant" => Schedule::Constant,
            "step" => {
                let every = get("every").ok_or_else(|| err("needs every=E (epochs)".into()))?;
                let v: f64 = every
                    .parse()
                    .map_err(|_| err(format!("every = `{every}` is not a number")))?;
                Schedule::Step {
                    every: epochs("every", v)?,
                    gamma: positive("gamma", gamma)?,
                }
            }
            "multistep" => {
                let list = get("at").ok_or_else(|| err("needs at=E1:E2:… (epochs)".into()))?;
                let mut at = Vec::new();
                for e in list.split(':') {
                    let v: f64 = e
                        .trim()
                        .parse()
                        .map_err(|_| err(format!("at: `{e}` is not an epoch")))?;
                    at.push(epochs("at", v)?);
                }
                if at.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(err("at: the epochs must increase".into()));
                }
                Schedule::MultiStep {
                    at,
                    gamma: positive("gamma", gamma)?,
                }
            }
            "exp" => Schedule::Exp {
                gamma: positive("gamma", num("gamma", 0.95)?)?,
            },
            "cosine" => {
                let warmup = num("warmup", 0.0)?;
                if warmup < 0.0 {
                    return Err(err(format!("warmup = {warmup} must be at least 0")));
                }
                Schedule::Cosine {
                    warmup,
                    min: num("min", 0.0)?.max(0.0),
                }
            }
            "onecycle" => {
                let pct = num("pct", 0.3)?;
                if !(pct > 0.0 && pct < 1.0) {
                    return Err(err(format!("pct = {pct} must be in (0, 1)")));
                }
                Schedule::OneCycle {
                    pct,
                    div: positive("div", num("div", 25.0)?)?,
                    final_div: positive("final_div", num("final_div", 1e4)?)?,
                }
            }
            _ => {
                let factor = num("factor", 0.1)?;
                if !(factor > 0.0 && factor < 1.0) {
                    return Err(err(format!("factor = {factor} must be in (0, 1)")));
                }
                let patience = num("patience", 10.0)?;
                if patience < 0.0 || patience.fract() != 0.0 {
                    return Err(err(format!(
                        "patience = {patience} must be a whole number of epochs"
                    )));
                }
                Schedule::Plateau {
                    factor,
                    patience: patience as usize,
                    threshold: num("threshold", 1e-4)?.max(0.0),
                    min: num("min", 0.0)?.max(0.0),
                }
            }
        };
        Ok(s)
    }

    /// The learning rate of (0-based) step `t`, for a run of `epochs` epochs of
    /// `per_epoch` steps starting from `base`. Plateau's reductions are applied by the
    /// caller (`Plateau::scale`).
    pub fn lr_at(&self, base: f64, t: usize, per_epoch: usize, epochs: usize) -> f64 {
        let per_epoch = per_epoch.max(1);
        let epoch = t / per_epoch; // epochs completed before this step
        let total = (per_epoch * epochs).max(1);
        match self {
            Schedule::Constant | Schedule::Plateau { .. } => base,
            Schedule::Step { every, gamma } => base * gamma.powi((epoch / every) as i32),
            Schedule::MultiStep { at, gamma } => {
                base * gamma.powi(at.iter().filter(|&&m| m <= epoch).count() as i32)
            }
            Schedule::Exp { gamma } => base * gamma.powi(epoch as i32),
            Schedule::Cosine { warmup, min } => {
                let warm = ((warmup * per_epoch as f64).round() as usize).min(total);
                if t < warm {
                    base * (t + 1) as f64 / warm as f64
                } else {
                    let span = (total - warm).max(1) as f64;
                    let progress = ((t - warm) as f64 / span).min(1.0);
                    min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
            Schedule::OneCycle {
                pct,
                div,
                final_div,
            } => {
                // torch.optim.lr_scheduler.OneCycleLR (three_phase=False, cos annealing).
                let initial = base / div;
                let min = initial / final_div;
                let up_end = pct * total as f64 - 1.0;
                let down_end = total as f64 - 1.0;
                let cos = |start: f64, end: f64, p: f64| {
                    end + (start - end) / 2.0 * (1.0 + (std::f64::consts::PI * p).cos())
                };
                let t = t as f64;
                if t <= up_end {
                    cos(initial, base, if up_end > 0.0 { t / up_end } else { 1.0 })
                } else {
                    let p = ((t - up_end) / (down_end - up_end).max(1.0)).min(1.0);
                    cos(base, min, p)
                }
            }
        }
    }

    /// The table for every step of the run (what the GPU reads).
    pub fn table(&self, base: f64, per_epoch: usize, epochs: usize, scale: f64) -> Vec<f32> {
        (0..per_epoch.max(1) * epochs.max(1))
            .map(|t| (self.lr_at(base, t, per_epoch, epochs) * scale) as f32)
            .collect()
    }
}

/// Reduce-on-plateau's state, kept in the checkpoint so that a resumed run decides exactly
/// as an uninterrupted one.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plateau {
    /// Factor applied to the learning rate so far.
    pub scale: f64,
    pub best: f64,
    pub bad_epochs: usize,
}

impl Default for Plateau {
    fn default() -> Plateau {
        Plateau {
            scale: 1.0,
            best: f64::INFINITY,
            bad_epochs: 0,
        }
    }
}

impl Plateau {
    /// Records an epoch's validation loss; true when the learning rate was reduced (as
    /// ReduceLROnPlateau: mode min, threshold_mode rel, cooldown 0).
    pub fn observe(&mut self, schedule: &Schedule, base: f64, val_loss: f64) -> bool {
        let Schedule::Plateau {
            factor,
            patience,
            threshold,
            min,
        } = *schedule
        else {
            return false;
        };
        if val_loss < self.best * (1.0 - threshold) {
            self.best = val_loss;
            self.bad_epochs = 0;
            return false;
        }
        self.bad_epochs += 1;
        if self.bad_epochs > patience {
            self.bad_epochs = 0;
            let lr = base * self.scale;
            let reduced = (lr * factor).max(min);
            // torch skips reductions smaller than eps = 1e-8.
            if lr - reduced > 1e-8 {
                self.scale = reduced / base;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lr(s: &str, t: usize) -> f64 {
        Schedule::parse(s).unwrap().lr_at(0.1, t, 10, 5)
    }

    #[test]
    fn schedules_follow_torch() {
        assert_eq!(lr("constant", 49), 0.1);
        assert_eq!(lr("step(every=2,gamma=0.5)", 19), 0.1);
        assert!((lr("step(every=2,gamma=0.5)", 20) - 0.05).abs() < 1e-12);
        assert!((lr("step(every=2,gamma=0.5)", 40) - 0.025).abs() < 1e-12);
        assert!((lr("multistep(at=1:3,gamma=0.1)", 9) - 0.1).abs() < 1e-12);
        assert!((lr("multistep(at=1:3,gamma=0.1)", 10) - 0.01).abs() < 1e-12);
        assert!((lr("multistep(at=1:3,gamma=0.1)", 30) - 0.001).abs() < 1e-12);
        assert!((lr("exp(gamma=0.9)", 25) - 0.1 * 0.81).abs() < 1e-12);
        // cosine: 1 warmup epoch of 10 steps, then 40 cosine steps to 0.
        assert!((lr("cosine(warmup=1)", 0) - 0.01).abs() < 1e-12);
        assert!((lr("cosine(warmup=1)", 9) - 0.1).abs() < 1e-12);
        assert!((lr("cosine(warmup=1)", 10) - 0.1).abs() < 1e-12);
        assert!((lr("cosine(warmup=1)", 30) - 0.05).abs() < 1e-12);
        assert!(lr("cosine(warmup=1)", 49) < 0.001);
        // onecycle (torch: OneCycleLR(max_lr=0.1, total_steps=50)): starts at max/25,
        // peaks at step 14 (pct 0.3 * 50 - 1), ends at max/25/1e4.
        assert!((lr("onecycle", 0) - 0.004).abs() < 1e-12);
        assert!((lr("onecycle", 14) - 0.1).abs() < 1e-12);
        assert!((lr("onecycle", 30) - 0.05671183644422961).abs() < 1e-12);
        assert!((lr("onecycle", 49) - 0.1 / 25.0 / 1e4).abs() < 1e-12);
    }

    #[test]
    fn plateau_reduces_after_patience_epochs_without_improvement() {
        let s = Schedule::parse("plateau(factor=0.5,patience=1)").unwrap();
        let mut p = Plateau::default();
        assert!(!p.observe(&s, 0.1, 1.0));
        assert!(!p.observe(&s, 0.1, 1.0)); // 1 bad epoch: within patience
        assert!(p.observe(&s, 0.1, 1.0)); // 2 bad epochs: reduce
        assert_eq!(p.scale, 0.5);
        assert!(!p.observe(&s, 0.1, 0.5));
        assert_eq!(p.best, 0.5);
    }

    #[test]
    fn errors_name_the_problem_and_text_round_trips() {
        for (text, says) in [
            ("cosinus", "unknown schedule `cosinus`"),
            ("step", "needs every=E"),
            ("step(every=0)", "at least 1"),
            ("cosine(warmpu=1)", "no setting `warmpu`"),
            ("multistep(at=3:2)", "must increase"),
            ("onecycle(pct=2)", "pct = 2"),
            ("plateau(factor=x)", "factor = `x` is not a number"),
            ("cosine(warmup=1", "closing"),
        ] {
            let e = Schedule::parse(text).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("--schedule"), "{text}: {e}");
        }
        for text in [
            "constant",
            "step(every=3,gamma=0.5)",
            "multistep(at=10:20,gamma=0.1)",
            "cosine(warmup=1.5,min=0.0001)",
            "onecycle(pct=0.25,div=10,final_div=100)",
            "plateau(factor=0.2,patience=3,threshold=0.001,min=0)",
        ] {
            let s = Schedule::parse(text).unwrap();
            assert_eq!(Schedule::parse(&s.to_string()).unwrap(), s);
        }
    }
}
