//! The convolution's shape (`nn.Conv2d(ci, co, k, stride, padding)` over an N x CI x H x W
//! batch), its uniform parameters, and which variant runs it (`kernels::select::conv2d`).

use super::super::{dim, select};
use super::{Pass, Variant};
use crate::gpu::{Dispatch, Gpu, GpuError, Result};
use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(super) struct Params {
    pub n: u32,
    pub ci: u32,
    pub h: u32,
    pub w: u32,
    pub co: u32,
    pub kh: u32,
    pub kw: u32,
    pub oh: u32,
    pub ow: u32,
    pub stride: u32,
    pub pad: u32,
    /// Forward: the output is stored as max(y, floor): 0 for a fused ReLU, else -inf.
    pub floor: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub n: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2dShape {
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad).saturating_sub(self.kh) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad).saturating_sub(self.kw) / self.stride + 1
    }
    pub fn input_len(&self) -> usize {
        self.n * self.ci * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.n * self.co * self.oh() * self.ow()
    }
    pub fn weight_len(&self) -> usize {
        self.co * self.ci * self.kh * self.kw
    }
    /// Bytes one pass must move at least: input, weight and output once each.
    pub fn bytes(&self) -> f64 {
        4.0 * (self.input_len() + self.weight_len() + self.output_len()) as f64
    }
    /// Multiply-adds x2 of the forward pass (each backward pass costs the same).
    pub fn flops(&self) -> f64 {
        2.0 * self.output_len() as f64 * (self.ci * self.kh * self.kw) as f64
    }
    pub fn describe(&self) -> String {
        format!(
            "x[{},{},{},{}] w[{},{},{},{}] stride {} pad {}",
            self.n,
            self.ci,
            self.h,
            self.w,
            self.co,
            self.ci,
            self.kh,
            self.kw,
            self.stride,
            self.pad
        )
    }
    fn validate(&self) -> Result<()> {
        let fits = self.h + 2 * self.pad >= self.kh && self.w + 2 * self.pad >= self.kw;
        if self.stride == 0 || !fits || self.n == 0 || self.ci == 0 || self.co == 0 {
            return Err(GpuError::Shape {
                label: "conv2d".into(),
                message: format!("invalid convolution {}", self.describe()),
            });
        }
        Ok(())
    }
    pub(super) fn params(&self) -> Result<Params> {
        self.validate()?;
        let d = |v| dim("conv2d", v);
        Ok(Params {
            n: d(self.n)?,
            ci: d(self.ci)?,
            h: d(self.h)?,
            w: d(self.w)?,
            co: d(self.co)?,
            kh: d(self.kh)?,
            kw: d(self.kw)?,
            oh: d(self.oh())?,
            ow: d(self.ow())?,
            stride: d(self.stride)?,
            pad: d(self.pad)?,
            floor: f32::NEG_INFINITY,
        })
    }
}

impl Conv2dShape {
    /// `pass` with variant `v` on zeroed scratch tensors of this shape (for timing).
    fn pass_on_scratch(&self, gpu: &Gpu, v: Variant, pass: Pass) -> Result<Vec<Dispatch>> {
        let x = gpu.zeros("tune x", self.input_len())?;
        let w = gpu.zeros("tune w", self.weight_len())?;
        let y = gpu.zeros("tune y", self.output_len())?;
        match pass {
            Pass::Forward => {
                let b = gpu.zeros("tune bias", self.co)?;
                super::conv2d_forward_with(gpu, v, *self, &x, &w, &b, &y)
            }
            Pass::InputGradient => super::conv2d_backward_input_with(gpu, v, *self, &y, &w, &x),
            Pass::WeightGradient => super::conv2d_backward_weight_with(gpu, v, *self, &y, &x, &w),
        }
    }

    /// The concrete variant for `v` (never `Auto`), or an error if `v` does not apply.
    pub(super) fn resolve(&self, gpu: &Gpu, v: Variant, pass: Pass) -> Result<Variant> {
        if v == Variant::Auto {
            let fallback = select::conv2d::choose(&gpu.caps, self, pass);
            let applicable = select::conv2d::applicable(&gpu.caps, self);
            return Ok(match crate::kernels::tune::Tuner::of(gpu) {
                Some(t) if !select::forced(&gpu.caps, &applicable) => {
                    let key = crate::kernels::tune::shape_key("conv2d", &(self, pass));
                    t.choose(gpu, key, &applicable, fallback, |v, size| {
                        // The probe: 4 images.
                        let shape = match size {
                            crate::kernels::tune::Size::Full => *self,
                            crate::kernels::tune::Size::Probe => Conv2dShape {
                                n: self.n.min(4),
                                ..*self
                            },
                        };
                        shape.pass_on_scratch(gpu, v, pass)
                    })
                }
                _ => fallback,
            });
        }
        // The shape first: a stride-2 convolution is refused for its stride on every
        // adapter, whatever the adapter's subgroups would also rule out.
        let any_adapter = select::Caps {
            subgroups_of_8: true,
            ..gpu.caps
        };
        if !select::conv2d::applicable(&any_adapter, self).contains(&v) {
            return Err(GpuError::Shape {
                label: "conv2d".into(),
                message: format!("the {v} kernels do not apply to {}", self.describe()),
            });
        }
        if let Err(why) = gpu.caps.supports(v) {
            return Err(GpuError::Shape {
                label: "conv2d".into(),
                message: why,
            });
        }
        Ok(v)
    }
}
