//! The 3x3 stride-1 path: weights packed as `packed[(i, ky, kx), o]` (output channels padded
//! for the register blocks), then the register-blocked convolution over them; and
//! `WeightPacker`, which packs every 3x3 convolution of a step in one dispatch.

use super::{binding, dim, Variant, CONV2D, CONV2D_SUBGROUP, WG};
use crate::gpu::{Dispatch, Gpu, Result, Tensor};
use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(super) struct Params3 {
    pub(super) n: u32,
    pub(super) ic: u32,
    pub(super) ih: u32,
    pub(super) iw: u32,
    pub(super) oc: u32,
    pub(super) oh: u32,
    pub(super) ow: u32,
    pub(super) pad: u32,
    pub(super) oc_pad: u32,
    pub(super) has_bias: u32,
    pub(super) flip: u32,
    pub(super) chunk: u32,
    /// Forward: the output is stored as max(out, floor): 0 for a fused ReLU, else -inf.
    pub(super) floor: f32,
    /// Tiled weight gradient: 1 when the bias gradient rides as one more column.
    pub(super) bias_column: u32,
    pub(super) _pad: [u32; 2],
}

pub(super) fn pad_to(v: usize, multiple: usize) -> usize {
    v.div_ceil(multiple) * multiple
}

/// Output channels the 3x3 kernels' packed weights are padded to: 8 per invocation for
/// the plain kernel, 32 per subgroup for the subgroup one.
pub(super) fn oc_pad(oc: usize, v: Variant) -> Result<u32> {
    let multiple = if v == Variant::Subgroup { 32 } else { 8 };
    dim("conv2d", pad_to(oc, multiple))
}

/// The packed-weight dispatch and the register-blocked 3x3 convolution over it.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv3x3(
    gpu: &Gpu,
    q: Params3,
    desc: &str,
    entry_label: &str,
    w: &Tensor,
    bias: &Tensor,
    src: &Tensor,
    dst: &Tensor,
    subgroup: bool,
    packer: Option<&mut WeightPacker>,
) -> Result<Vec<Dispatch>> {
    let qb = gpu.uniform("conv2d 3x3 params", &q);
    let mut out = vec![];
    // Packed with the step's other convolutions when a packer takes it, else here.
    let packed = match packer.and_then(|p| p.reserve(w, &q)) {
        Some(packed) => packed,
        None => {
            let len = (q.ic * 9 * q.oc_pad) as usize;
            let packed = gpu.zeros(&format!("{entry_label} packed weights"), len)?;
            out.push(gpu.dispatch(
                &CONV2D,
                "conv2d_pack_weights",
                desc,
                &[
                    (binding::Q, &qb),
                    (binding::WT, &w),
                    (binding::PACKED_OUT, &packed),
                ],
                gpu.caps.grid(len, WG),
            )?);
            packed
        }
    };
    let flops = 2.0 * (q.n * q.oc * q.oh * q.ow) as f64 * (q.ic * 9) as f64;
    let bytes =
        4.0 * ((q.n * q.ic * q.ih * q.iw) + (q.n * q.oc * q.oh * q.ow) + q.ic * 9 * q.oc) as f64;
    let (shader, entry, groups) = if subgroup {
        // Blocks of 32 output channels along y; 4 columns of 2 rows per invocation, the
        // items spread over x and z (the kernel rebuilds the item from both).
        let items = (q.n * q.oh.div_ceil(4) * q.ow.div_ceil(4)) as usize;
        let [x, z, _] = gpu.caps.grid(items, WG);
        (
            &CONV2D_SUBGROUP,
            "conv2d_forward_3x3_subgroup",
            [x, q.oc_pad / 32, z],
        )
    } else {
        let threads = (q.n * q.oc_pad / 8 * q.oh * q.ow.div_ceil(8)) as usize;
        (&CONV2D, "conv2d_forward_3x3", gpu.caps.grid(threads, WG))
    };
    let conv = gpu
        .dispatch(
            shader,
            entry,
            desc,
            &[
                (binding::Q, &qb),
                (binding::PACKED, &packed),
                (binding::SRC, &src),
                (binding::DST, &dst),
                (binding::BIAS, &bias),
            ],
            groups,
        )?
        .with_cost(flops, bytes);
    out.push(conv);
    Ok(out)
}

/// Packs the weights of several 3x3 convolutions (forward and flipped) in one dispatch: each
/// convolution built with the packer reads its packed weights from a slice of one buffer
/// that `dispatch` fills from the parameter arena. On a GPU each dispatch saved is 5–10 µs:
/// vgg packs 7 weight tensors per training step.
pub struct WeightPacker<'a> {
    /// The parameter arena (whole) the weights are slices of.
    weights: &'a Tensor,
    packed: Tensor,
    /// Elements of `packed` handed out so far (each slice starts aligned).
    used: usize,
    align: usize,
    /// start, count, weight offset, ic, oc, oc_pad, flip, 0 (`PackJob` in conv2d.wgsl).
    jobs: Vec<[u32; 8]>,
}

impl<'a> WeightPacker<'a> {
    /// A packer with room for packed weights of `lens` elements (an upper bound: every 3x3
    /// convolution the step may build), reading weights from the arena `weights`. None when
    /// that room does not fit one binding (each convolution then packs its own).
    pub fn new(gpu: &Gpu, weights: &'a Tensor, lens: &[usize]) -> Result<Option<Self>> {
        let align = gpu.offset_alignment() as usize / 4;
        let capacity: usize = lens.iter().map(|l| l.next_multiple_of(align)).sum();
        if capacity == 0 || !gpu.arena_fits([capacity]) {
            return Ok(None);
        }
        Ok(Some(WeightPacker {
            weights,
            packed: gpu.zeros("packed 3x3 weights", capacity)?,
            used: 0,
            align,
            jobs: vec![],
        }))
    }

    /// The slice that will hold `w` packed as `q` says, or None if `w` is not in the arena
    /// or there is no room left.
    fn reserve(&mut self, w: &Tensor, q: &Params3) -> Option<Tensor> {
        let offset = w.element_offset_in(self.weights)?;
        let count = (q.ic * 9 * q.oc_pad) as usize;
        if self.used + count > self.packed.len {
            return None;
        }
        let start = self.used;
        self.used = (start + count).next_multiple_of(self.align);
        self.jobs.push([
            start as u32,
            count as u32,
            offset as u32,
            q.ic,
            q.oc,
            q.oc_pad,
            q.flip,
            0,
        ]);
        Some(self.packed.slice(start, count, "packed 3x3 weights"))
    }

    /// The one dispatch that packs every reserved slice (None if none was): it must run
    /// before the first convolution that reads them and after the weights last change.
    pub fn dispatch(&self, gpu: &Gpu) -> Result<Option<Dispatch>> {
        if self.jobs.is_empty() {
            return Ok(None);
        }
        let total: usize = self.jobs.iter().map(|j| j[1] as usize).sum();
        let jobs = gpu.upload("pack jobs", self.jobs.as_flattened())?;
        let desc = format!("{} weight tensors", self.jobs.len());
        Ok(Some(gpu.dispatch(
            &CONV2D,
            "conv2d_pack_weights_all",
            &desc,
            &[
                (binding::PACK_JOBS, &jobs),
                (binding::WT, self.weights),
                (binding::PACKED_OUT, &self.packed),
            ],
            gpu.caps.grid(total, WG),
        )?))
    }
}
