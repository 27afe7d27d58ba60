//! Validation of a resolved training configuration: every setting is checked as its flag
//! is (so is a resumed run's config.toml), with errors that name the flag.

use super::config::{ConfigError, TrainConfig};
use super::schedule::Schedule;
use crate::kernels::augment::Augment;

impl TrainConfig {
    /// Checks every setting as the flags are checked (also a resumed run's config.toml).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |flag, message: String| Err(ConfigError::Invalid { flag, message });
        if self.epochs == 0 {
            return bad("--epochs", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("--batch-size", "must be at least 1".into());
        }
        if self.batch_size == 1 && self.spec.contains("bn") {
            return bad(
                "--batch-size",
                "batch norm needs at least 2 examples per batch to estimate a variance".into(),
            );
        }
        if let Some(a) = self.target_accuracy {
            if !(a.is_finite() && (1.0..=100.0).contains(&a)) {
                return bad(
                    "--target-accuracy",
                    format!("{a} is not a percentage in [1, 100] (e.g. 93.5)"),
                );
            }
            if self.val == 0 {
                return bad(
                    "--target-accuracy",
                    "needs a validation split to measure (--val N, N > 0)".into(),
                );
            }
        }
        if let Some(d) = self.ema {
            if !(d.is_finite() && d > 0.0 && d < 1.0) {
                return bad(
                    "--ema",
                    format!(
                        "{d} is not a decay in [0, 1) (e.g. 0.999: an average over ~1000 \
                         steps; 0: off)"
                    ),
                );
            }
        }
        if self.eval_batch_size == 0 {
            return bad("--eval-batch-size", "must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(
                "--lr",
                format!("{} is not a positive learning rate", self.lr),
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("--momentum", format!("{} must be in [0, 1)", self.momentum));
        }
        if self.nesterov && self.momentum == 0.0 {
            return bad(
                "--nesterov",
                "needs --momentum > 0 (as torch.optim.SGD)".into(),
            );
        }
        for (flag, v) in [("--weight-decay", self.weight_decay), ("--l1", self.l1)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(flag, format!("{v} must be a non-negative number"));
            }
        }
        for (flag, v) in [("--beta1", self.beta1), ("--beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(flag, format!("{v} must be in [0, 1)"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("--eps", "must be positive".into());
        }
        if !(self.input_std.is_finite() && self.input_std > 0.0) {
            return bad(
                "--input-std",
                format!("{} must be a positive number", self.input_std),
            );
        }
        if !self.input_mean.is_finite() {
            return bad(
                "--input-mean",
                format!("{} is not a number", self.input_mean),
            );
        }
        if !(self.max_loss.is_finite() && self.max_loss > 0.0) {
            return bad(
                "--max-loss",
                format!("{} must be a positive number", self.max_loss),
            );
        }
        if self.patience > 0 && self.val == 0 {
            return bad(
                "--patience",
                "early stopping watches the validation accuracy; it needs --val > 0".into(),
            );
        }
        match Augment::parse(&self.augment) {
            Err(e) => return bad("--augment", format!("`{}`: {}", e.item, e.message)),
            Ok(a) if a.is_on() && (self.flip || self.shift > 0) => return bad(
                "--augment",
                "with --augment, write flip and shift(N) as its items rather than --flip/--shift"
                    .into(),
            ),
            Ok(_) => {}
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(
                "--label-smoothing",
                format!("{} must be in [0, 1)", self.label_smoothing),
            );
        }
        match Schedule::parse(&self.schedule) {
            Err(e) => return bad("--schedule", format!("`{}`: {}", self.schedule, e.message)),
            Ok(Schedule::Plateau { .. }) if self.val == 0 => {
                return bad(
                    "--schedule",
                    "plateau watches the validation loss; it needs --val > 0".into(),
                )
            }
            Ok(_) => {}
        }
        if self.shift > 14 {
            return bad(
                "--shift",
                format!(
                    "{} pixels would move a 28x28 image out of view; use at most 14",
                    self.shift
                ),
            );
        }
        if self.name.is_empty()
            || self.name.contains(['/', '\\'])
            || self.name == "."
            || self.name == ".."
        {
            return bad(
                "--name",
                format!("`{}` is not a usable folder name", self.name),
            );
        }
        Ok(())
    }
}
