//! Time to accuracy: when validation first reached each milestone (90..94 %, and the
//! run's `--target-accuracy`), in training seconds (the epochs' training time, validation
//! and checkpoints excluded) and in wall seconds since the run started. Carried across a
//! resume in the checkpoint's metrics.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The milestones every run records (percent).
pub const MILESTONES: [f64; 5] = [90.0, 91.0, 92.0, 93.0, 94.0];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeToAccuracy {
    /// Milestone ("93", "93.5") -> training seconds when validation first reached it.
    pub training: BTreeMap<String, f64>,
    /// The same milestones -> wall seconds since the run started.
    pub wall: BTreeMap<String, f64>,
}

/// The key of a milestone: "93" for 93 %, "93.5" for 93.5 %.
pub fn key(percent: f64) -> String {
    format!("{percent}")
}

/// Does an accuracy (a fraction) reach a milestone (percent)? Exactly at it counts: 93.5 %
/// of 2,000 images is 1,870 correct, whose fraction times 100 may round below 93.5.
pub fn reaches(accuracy: f64, percent: f64) -> bool {
    accuracy * 100.0 + 1e-9 >= percent
}

impl TimeToAccuracy {
    /// Records the milestones `accuracy` (a fraction) reaches for the first time.
    pub fn observe(
        &mut self,
        accuracy: f64,
        target: Option<f64>,
        training_seconds: f64,
        wall_seconds: f64,
    ) {
        for m in MILESTONES.into_iter().chain(target) {
            if reaches(accuracy, m) && !self.training.contains_key(&key(m)) {
                self.training.insert(key(m), training_seconds);
                self.wall.insert(key(m), wall_seconds);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestones_are_recorded_once_at_their_first_crossing() {
        let mut t = TimeToAccuracy::default();
        t.observe(0.905, None, 10.0, 12.0);
        t.observe(0.899, Some(93.5), 20.0, 25.0);
        t.observe(0.935, Some(93.5), 30.0, 40.0);
        t.observe(0.95, Some(93.5), 45.0, 60.0);
        let want = |v: &[(&str, f64)]| -> BTreeMap<String, f64> {
            v.iter().map(|(k, s)| (k.to_string(), *s)).collect()
        };
        let training = [
            ("90", 10.0),
            ("91", 30.0),
            ("92", 30.0),
            ("93", 30.0),
            ("93.5", 30.0),
            ("94", 45.0),
        ];
        let wall = [
            ("90", 12.0),
            ("91", 40.0),
            ("92", 40.0),
            ("93", 40.0),
            ("93.5", 40.0),
            ("94", 60.0),
        ];
        assert_eq!(t.training, want(&training));
        assert_eq!(t.wall, want(&wall));
        // 1,870 of 2,000 is exactly 93.5 %.
        assert!(reaches(1870.0 / 2000.0, 93.5));
        assert!(!reaches(1869.0 / 2000.0, 93.5));
    }
}
