//! Many training steps recorded once and encoded in ranges, so that one submission runs
//! many steps with no host work between them.

use crate::gpu::{Dispatch, Gpu, Result};

/// The plans of one pass over a list of examples: `full` for each whole batch and
/// `partial` for a last, smaller one. Training, evaluation and inference all record their
/// steps through it.
pub struct StepPlans {
    pub full: Vec<Dispatch>,
    pub partial: Vec<Dispatch>,
    pub steps_full: usize,
}

impl StepPlans {
    /// Plans for `examples` in batches of `batch`: `make(n)` builds the plan of a batch of n.
    pub fn build(
        examples: usize,
        batch: usize,
        make: impl Fn(usize) -> Result<Vec<Dispatch>>,
    ) -> Result<StepPlans> {
        let rem = examples % batch;
        Ok(StepPlans {
            full: make(batch)?,
            partial: if rem > 0 { make(rem)? } else { vec![] },
            steps_full: examples / batch,
        })
    }

    /// Steps in one pass (the partial batch included).
    pub fn steps(&self) -> usize {
        self.steps_full + usize::from(!self.partial.is_empty())
    }

    /// Steps `range` of the pass recorded into one command encoder.
    pub fn encode(&self, gpu: &Gpu, range: std::ops::Range<usize>) -> wgpu::CommandEncoder {
        gpu.encode(range.flat_map(|s| {
            if s < self.steps_full {
                &self.full
            } else {
                &self.partial
            }
        }))
    }
}
