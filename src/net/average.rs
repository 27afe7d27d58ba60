//! `--ema`: a moving average of the parameters and batch-norm running statistics, kept on
//! the GPU beside the network and updated by the optimizer's own dispatch (see
//! `kernels::optim::Averaging`). Evaluation binds a view of the network whose tensors are
//! the averages; training keeps stepping the raw weights.

use super::{LayerState, Network, Param, ParamArena};
use crate::gpu::{Dispatch, Gpu, Result, Tensor};
use crate::kernels::{elementwise, optim::Averaging};
use crate::model::LayerParams;

/// The averages: one buffer per parameter arena, laid out as the arena; the last one also
/// holds the running statistics' average after the weights', laid out as `Network::stats`.
pub struct Average {
    pub decay: f32,
    pub buffers: Vec<Tensor>,
    /// The statistics' average as evaluation binds it: batch norm's evaluation kernels bind
    /// the statistics writable (training updates them), which may not share a buffer with
    /// the weights they read. `sync` copies it from the last buffer.
    pub stats: Tensor,
    /// None for a network without batch norm: no statistics to copy.
    copy_stats: Option<Dispatch>,
}

/// Another handle on the same elements.
fn alias(t: &Tensor) -> Tensor {
    t.slice(0, t.len, &t.label)
}

/// The same elements of `like` in `buffer`, which is laid out as `like`'s buffer shifted by
/// `shift` elements.
fn counterpart(buffer: &Tensor, like: &Tensor, shift: usize) -> Tensor {
    let start = shift + (like.offset_bytes() / 4) as usize;
    buffer.slice(start, like.len, &format!("{} (average)", like.label))
}

impl Network {
    /// Starts averaging with `decay`, the average starting at `from` (the initial or resumed
    /// model). The update at step 0 replaces it with the first step's weights.
    pub fn start_average(&mut self, gpu: &Gpu, decay: f32, from: &[LayerParams]) -> Result<()> {
        let last = self.arenas.len().saturating_sub(1);
        let buffers: Vec<Tensor> = (self.arenas.iter().enumerate())
            .map(|(g, a)| {
                let stats = if g == last { self.stats.len } else { 0 };
                gpu.zeros(&format!("parameters {g} (average)"), a.value.len + stats)
            })
            .collect::<Result<_>>()?;
        let n = self.stats.len;
        let stats = gpu.zeros("running statistics (average)", n)?;
        let in_last = buffers[last].slice(self.arenas[last].value.len, n, "statistics (average)");
        let copy_stats = match n {
            0 => None,
            n => Some(elementwise::copy(gpu, &in_last, &stats, n)?),
        };
        self.average = Some(Average {
            decay,
            buffers,
            stats,
            copy_stats,
        });
        if let Some(view) = self.averaged() {
            view.write(gpu, from)?;
        }
        // The update averages the statistics in the last buffer: they start there too.
        let shift = self.arenas[last].value.len;
        if let Some(a) = &self.average {
            for (st, p) in self.layers.iter().zip(from) {
                let pairs = [
                    (&st.running_mean, &p.running_mean),
                    (&st.running_var, &p.running_var),
                ];
                for (t, v) in pairs {
                    if let Some(t) = t {
                        gpu.write(&counterpart(&a.buffers[last], t, shift), v)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Brings the statistics' average evaluation binds up to date (before each evaluation
    /// or download of the average).
    pub fn sync_average(&self, gpu: &Gpu) -> Result<()> {
        match self.average.as_ref().and_then(|a| a.copy_stats.as_ref()) {
            Some(copy) => gpu.run(&[copy]),
            None => Ok(()),
        }
    }

    /// What the optimizer's update of arena `g` averages (None without `--ema`).
    pub fn averaging(&self, g: usize) -> Option<Averaging<'_>> {
        let average = self.average.as_ref()?;
        let last = g + 1 == self.arenas.len();
        Some(Averaging {
            decay: average.decay,
            average: &average.buffers[g],
            stats: last.then_some(&self.stats),
        })
    }

    /// The network as evaluation sees it with `--ema`: the averages in place of the
    /// parameters and statistics (the gradients and moments are the raw network's, unused).
    pub fn averaged(&self) -> Option<Network> {
        let average = self.average.as_ref()?;
        let arena_of: Vec<usize> = (self.arenas.iter().enumerate())
            .flat_map(|(g, a)| a.params.clone().map(move |_| g))
            .collect();
        let mut index = 0;
        let mut view_param = |p: &Param| {
            let buffer = &average.buffers[arena_of[index]];
            index += 1;
            Param {
                value: counterpart(buffer, &p.value, 0),
                grad: alias(&p.grad),
                m1: alias(&p.m1),
                m2: alias(&p.m2),
            }
        };
        let stat = |t: &Option<Tensor>| t.as_ref().map(|t| counterpart(&average.stats, t, 0));
        let layers = (self.layers.iter())
            .map(|st| LayerState {
                weight: st.weight.as_ref().map(&mut view_param),
                bias: st.bias.as_ref().map(&mut view_param),
                running_mean: stat(&st.running_mean),
                running_var: stat(&st.running_var),
            })
            .collect();
        let arenas = (self.arenas.iter().zip(&average.buffers))
            .map(|(a, buffer)| ParamArena {
                value: buffer.slice(0, a.value.len, &format!("{} (average)", a.value.label)),
                grad: alias(&a.grad),
                m1: alias(&a.m1),
                m2: alias(&a.m2),
                params: a.params.clone(),
            })
            .collect();
        Some(Network {
            spec: self.spec.clone(),
            layers,
            arenas,
            counter: alias(&self.counter),
            stats: alias(&average.stats),
            average: None,
        })
    }

    /// Writes every parameter and running statistic (the shapes `download` returns).
    pub fn write(&self, gpu: &Gpu, params: &[LayerParams]) -> Result<()> {
        for (st, p) in self.layers.iter().zip(params) {
            let pairs = [
                (st.weight.as_ref().map(|p| &p.value), &p.weight),
                (st.bias.as_ref().map(|p| &p.value), &p.bias),
                (st.running_mean.as_ref(), &p.running_mean),
                (st.running_var.as_ref(), &p.running_var),
            ];
            for (t, v) in pairs {
                if let Some(t) = t {
                    gpu.write(t, v)?;
                }
            }
        }
        Ok(())
    }
}
