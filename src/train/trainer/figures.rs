//! The metrics ring's snapshots as progress, as JSON values, and the divergence check.

use crate::infer::Evaluation;
use crate::kernels::softmax_xent::metrics;
use crate::train::readback::Snapshot;
use crate::train::{Progress, TrainError};
use web_time::Instant;

pub(super) fn finite_or_null(v: f64) -> serde_json::Value {
    if v.is_finite() {
        v.into()
    } else {
        serde_json::Value::Null
    }
}

pub(super) fn progress(s: &Snapshot, steps_per_epoch: usize, since: Instant) -> Progress {
    let e = Evaluation::from_metrics(&s.values);
    Progress {
        step: s.steps,
        steps: steps_per_epoch,
        running_loss: e.loss,
        running_accuracy: e.accuracy,
        images: e.count,
        images_per_second: e.count as f64 / since.elapsed().as_secs_f64().max(1e-9),
    }
}

/// A NaN/inf running loss, or one above `max_loss`, stops the run: the last good checkpoint
/// (saved at the end of the previous epoch) stays as it is.
pub(super) fn check_loss(s: &Snapshot, epoch: usize, max_loss: f32) -> Result<(), TrainError> {
    let e = Evaluation::from_metrics(&s.values);
    let sum = s.values[metrics::LOSS_SUM];
    if !sum.is_finite() || e.loss > max_loss as f64 {
        return Err(TrainError::Diverged {
            epoch,
            step: s.steps,
            loss: if sum.is_finite() { e.loss as f32 } else { sum },
        });
    }
    Ok(())
}
