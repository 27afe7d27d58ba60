//! Kernel-variant selection, in one place for every family that has variants.
//!
//! A family's `applicable(caps, shape)` lists the variants that can run a shape on an
//! adapter (the tests run each of them against the CPU reference); `choose(caps, shape)`
//! picks one. `Caps` is built once from the adapter; `Caps::prefer` carries `--variant`,
//! which wins wherever it applies (so anyone can time a variant on a new GPU) and leaves
//! the automatic choice elsewhere. The thresholds below were measured on lavapipe (Mesa
//! 22.3, 8-wide SIMD, 2 cores); the hardware-GPU ones are the textbook choice, not yet
//! timed on a GPU.

pub use crate::gpu::{Caps, Variant};

/// Does `--variant` decide among `applicable` (so there is nothing to measure)?
pub fn forced(caps: &Caps, applicable: &[Variant]) -> bool {
    caps.prefer != Variant::Auto && applicable.contains(&caps.prefer)
}

/// The preferred variant if it is among `applicable`, else `auto`.
fn preferred(caps: &Caps, applicable: &[Variant], auto: Variant) -> Variant {
    if caps.prefer != Variant::Auto && applicable.contains(&caps.prefer) {
        caps.prefer
    } else {
        auto
    }
}

/// Products at least this large (rows x columns of a pass's implicit matrix product) use
/// the tiled kernels on hardware adapters, where one workgroup fills a 64x64 tile; smaller
/// ones would leave most of a tile idle.
pub const TILED_MIN_OUTPUTS: usize = 64 * 64;

pub mod conv2d {
    //! conv2d: generic (any shape), `Conv3x3` (3x3, stride 1, pad <= 2), `Subgroup` (the
    //! same shapes with 8-wide subgroups), `Tiled` (any shape).
    use super::{preferred, Caps, Variant, TILED_MIN_OUTPUTS};
    use crate::kernels::conv2d::Conv2dShape;

    /// Which pass a variant is chosen for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Pass {
        Forward,
        /// The gradient to the input (the 3x3 kernels: the forward kernel, flipped weights).
        InputGradient,
        WeightGradient,
    }

    pub const PASSES: [Pass; 3] = [Pass::Forward, Pass::InputGradient, Pass::WeightGradient];

    /// The shapes the 3x3 kernels handle.
    pub fn is_3x3(s: &Conv2dShape) -> bool {
        s.kh == 3 && s.kw == 3 && s.stride == 1 && s.pad <= 2
    }

    pub fn applicable(caps: &Caps, s: &Conv2dShape) -> Vec<Variant> {
        let mut v = vec![Variant::Generic, Variant::Tiled];
        if is_3x3(s) {
            v.push(Variant::Conv3x3);
            if caps.subgroups_of_8 {
                v.push(Variant::Subgroup);
            }
        }
        v
    }

    /// The subgroup kernel works on 32 output channels per subgroup (one input channel per
    /// lane for the weight gradient): with 8 output channels or fewer (under 8 input
    /// channels for the weight gradient) the plain 3x3 kernel wins. Measured on lavapipe
    /// at batch 32: 1 -> 8 channels at 28x28, plain 0.56 ms vs subgroup 1.24; 8 -> 12
    /// channels at 13x13, subgroup 0.62 vs plain 0.94.
    fn subgroup_pays(s: &Conv2dShape, pass: Pass) -> bool {
        match pass {
            Pass::Forward => s.co > 8,
            Pass::InputGradient => s.ci > 8,
            Pass::WeightGradient => s.ci >= 8,
        }
    }

    /// Rows x columns of the pass's implicit matrix product.
    fn outputs(s: &Conv2dShape, pass: Pass) -> usize {
        match pass {
            Pass::Forward => s.co * s.n * s.oh() * s.ow(),
            Pass::InputGradient => s.ci * s.n * s.h * s.w,
            Pass::WeightGradient => s.co * s.ci * s.kh * s.kw,
        }
    }

    pub fn choose(caps: &Caps, s: &Conv2dShape, pass: Pass) -> Variant {
        let auto = if !caps.software {
            if outputs(s, pass) >= TILED_MIN_OUTPUTS {
                Variant::Tiled
            } else if is_3x3(s) {
                Variant::Conv3x3
            } else {
                Variant::Generic
            }
        } else if !is_3x3(s) {
            Variant::Generic
        } else if caps.subgroups_of_8 && subgroup_pays(s, pass) {
            Variant::Subgroup
        } else {
            Variant::Conv3x3
        };
        preferred(caps, &applicable(caps, s), auto)
    }

    /// The bias gradient reads dy as vec4s when its planes hold whole vec4s.
    pub fn bias_vec4(caps: &Caps, s: &Conv2dShape) -> bool {
        caps.prefer != Variant::Generic && (s.oh() * s.ow()).is_multiple_of(4)
    }
}

pub mod matmul {
    //! Matrix products: `Generic` (the strided kernel, any layout), `Vec4` (per layout:
    //! NT, TN, NN), `Tiled` (any layout), `Subgroup` (NT and NN layouts, 8-wide subgroups),
    //! `SplitK` (any layout, long K and few tiles).
    use super::{preferred, Caps, Variant, TILED_MIN_OUTPUTS};
    use crate::kernels::matmul::MatmulShape;

    /// The vec4 entry point and its workgroup grid for `s`, if its layout has one. Only the
    /// NT kernel adds a bias (the linear forward; no other layout needs one).
    pub fn vec4_kernel(s: &MatmulShape, bias: bool) -> Option<(&'static str, [u32; 3])> {
        let ((sam, sak), (sbk, sbn)) = (s.a_stride, s.b_stride);
        let g = |v: usize, per: usize| v.div_ceil(per).max(1) as u32;
        let by4 = |v: usize| v.is_multiple_of(4);
        if sak == 1 && sbk == 1 && by4(s.k) && by4(sam) && by4(sbn) {
            // 8 rows x 4 columns per invocation, 8 x 8 invocations per workgroup.
            return Some(("matmul_nt4", [g(s.n, 32), g(s.m, 64), 1]));
        }
        if bias {
            return None;
        }
        if sam == 1 && sbn == 1 && by4(s.m) && by4(s.n) && by4(sak) && by4(sbk) {
            return Some(("matmul_tn4", [g(s.n, 64), g(s.m, 64), 1]));
        }
        if sbn == 1 && by4(s.n) && by4(sbk) {
            return Some(("matmul_nn4", [g(s.n, 64), g(s.m, 32), 1]));
        }
        None
    }

    /// The subgroup entry point and workgroup grid for `s`, if its layout has one: "NT" (A
    /// and B contiguous along K) or "NN" (B contiguous along N; A any strides, so also
    /// "TN"). From 32 rows (every preset's batch) the 32-row kernels, one subgroup per
    /// workgroup; below, the 8-row (NT) and 16-row (NN) ones, 8 subgroups per workgroup.
    /// Fewer rows than one subgroup tile: the vec4 kernels waste less, and on
    /// lavapipe a mostly idle tile lets the driver's uniform inlining shrink the shader
    /// enough that it recompiles it at every dispatch (bench's "in step" column showed
    /// 0.5 -> 1.6 ms).
    pub fn subgroup_kernel(caps: &Caps, s: &MatmulShape) -> Option<(&'static str, [u32; 3])> {
        let ((sam, sak), (sbk, sbn)) = (s.a_stride, s.b_stride);
        if s.m < 8 {
            return None;
        }
        let by4 = |v: usize| v.is_multiple_of(4);
        // 8 subgroups per workgroup, each a tile of C of `rows` x 32, tiles along x only.
        let groups = |rows: usize| match caps.grid(s.m.div_ceil(rows) * s.n.div_ceil(32), 8) {
            [x, 1, 1] => Some([x, 1, 1]),
            _ => None,
        };
        if sak == 1 && sbk == 1 && by4(s.k) && by4(sam) && by4(sbn) {
            if s.m >= 32 {
                // One subgroup per workgroup, each a tile of 32 x 32.
                return match caps.grid(s.m.div_ceil(32) * s.n.div_ceil(32), 1) {
                    [x, 1, 1] => Some(("matmul_nt_subgroup32", [x, 1, 1])),
                    _ => None,
                };
            }
            return groups(8).map(|g| ("matmul_nt_subgroup", g));
        }
        if sbn == 1 && by4(s.n) && by4(sbk) {
            if s.m >= 32 {
                return match caps.grid(s.m.div_ceil(32) * s.n.div_ceil(32), 1) {
                    [x, 1, 1] => Some(("matmul_nn_subgroup32", [x, 1, 1])),
                    _ => None,
                };
            }
            return groups(16).map(|g| ("matmul_nn_subgroup", g));
        }
        None
    }

    /// 64x64 tiles of C.
    fn tiles(s: &MatmulShape) -> usize {
        s.m.div_ceil(64) * s.n.div_ceil(64)
    }

    /// Split-K's slice length, if it applies: products of at most `SPLIT_K_MAX_TILES` tiles
    /// whose K makes at least two slices of `SPLIT_K_MIN_CHUNK` terms. Slices are enough to
    /// give ~256 workgroups (two per SM of a 132-SM GPU), whole 16-term steps of the tiled
    /// loop.
    pub fn split_k_chunk(s: &MatmulShape) -> Option<usize> {
        let tiles = tiles(s);
        if tiles > SPLIT_K_MAX_TILES || s.k < 2 * SPLIT_K_MIN_CHUNK {
            return None;
        }
        let splits = 256usize.div_ceil(tiles).min(s.k / SPLIT_K_MIN_CHUNK).max(2);
        Some(s.k.div_ceil(splits).next_multiple_of(16))
    }

    pub const SPLIT_K_MAX_TILES: usize = 64;
    pub const SPLIT_K_PAYS_K: usize = 1024;
    pub const SPLIT_K_MIN_CHUNK: usize = 128;

    pub fn applicable(caps: &Caps, s: &MatmulShape, bias: bool) -> Vec<Variant> {
        let mut v = vec![Variant::Generic, Variant::Tiled];
        if split_k_chunk(s).is_some() {
            v.push(Variant::SplitK);
        }
        if vec4_kernel(s, bias).is_some() {
            v.push(Variant::Vec4);
        }
        if caps.subgroups_of_8 && subgroup_kernel(caps, s).is_some() {
            v.push(Variant::Subgroup);
        }
        v
    }

    /// Software: subgroup where it applies (17-27 GFLOP/s on lavapipe), else vec4 (~16-19),
    /// else strided. Hardware: split-K where it applies to 16 tiles or fewer with K of
    /// `SPLIT_K_PAYS_K` or more (the rest of the GPU would idle through a long loop; a
    /// shorter one does not pay for the combine's dispatch: mlp's 784-input layer keeps
    /// one), tiled for products of 64x64 outputs or more, else vec4. The tuner measures.
    pub fn choose(caps: &Caps, s: &MatmulShape, bias: bool) -> Variant {
        let applicable = applicable(caps, s, bias);
        let has = |v| applicable.contains(&v);
        let auto =
            if !caps.software && has(Variant::SplitK) && tiles(s) <= 16 && s.k >= SPLIT_K_PAYS_K {
                Variant::SplitK
            } else if !caps.software && s.m * s.n >= TILED_MIN_OUTPUTS {
                Variant::Tiled
            } else if caps.software && has(Variant::Subgroup) {
                Variant::Subgroup
            } else if has(Variant::Vec4) {
                Variant::Vec4
            } else {
                Variant::Generic
            };
        preferred(caps, &applicable, auto)
    }
}

pub mod batchnorm {
    //! Batch norm: one workgroup per channel walking its planes, as scalars (`Generic`) or,
    //! when a plane holds whole vec4s, as vec4s (`Vec4`, the automatic choice there on
    //! software adapters); `Tiled`: one workgroup per (image, channel) plane with two-level
    //! reductions (`shaders/batchnorm_planes.wgsl`), for hardware GPUs, where one workgroup
    //! per channel leaves most of the GPU idle. Planes under `PLANES_MIN` elements would
    //! leave most of each workgroup idle instead (BatchNorm1d's planes hold one).
    use super::{preferred, Caps, Variant};

    pub const PLANES_MIN: usize = 16;

    pub fn applicable(plane: usize) -> Vec<Variant> {
        let mut v = vec![Variant::Generic];
        if plane.is_multiple_of(4) {
            v.push(Variant::Vec4);
        }
        if plane >= PLANES_MIN {
            v.push(Variant::Tiled);
        }
        v
    }

    pub fn choose(caps: &Caps, plane: usize) -> Variant {
        let applicable = applicable(plane);
        let auto = if !caps.software && applicable.contains(&Variant::Tiled) {
            Variant::Tiled
        } else if applicable.contains(&Variant::Vec4) {
            Variant::Vec4
        } else {
            Variant::Generic
        };
        preferred(caps, &applicable, auto)
    }
}

pub mod pool {
    //! Max pooling: `Generic` one invocation per output row, serial along it (one index
    //! division per row: integer division is scalarised on CPU adapters, so lavapipe pays
    //! for it per invocation), and one workgroup per channel for the fused batch norm's sums;
    //! `Tiled` one invocation per output or input element and one workgroup per plane for
    //! the sums (two levels), so neighbouring invocations touch neighbouring elements and
    //! the grid grows with the batch: for hardware GPUs.
    use super::{preferred, Caps, Variant};

    pub fn applicable() -> Vec<Variant> {
        vec![Variant::Generic, Variant::Tiled]
    }

    pub fn choose(caps: &Caps) -> Variant {
        let auto = if caps.software {
            Variant::Generic
        } else {
            Variant::Tiled
        };
        preferred(caps, &applicable(), auto)
    }
}
