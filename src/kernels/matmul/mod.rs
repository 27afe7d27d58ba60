//! Matrix products and the linear layer (`shaders/matmul.wgsl`).
//!
//! One strided kernel computes `C[M,N] = A(M,K) B(K,N)`; the linear layer's three products
//! differ only in strides: forward Y = X W^T + b, backward dX = dY W, dW = dY^T X, and
//! db = the row sums of dY^T, computed beside dW. Weights are [out, in] (PyTorch layout).
//!
//! Variants: strided (any layout), vec4 kernels per layout, a workgroup-tiled kernel for
//! hardware GPUs, and subgroup kernels (`shaders/matmul_subgroup.wgsl`) for adapters with
//! 8-wide subgroups (lavapipe). `Variant::Auto` picks the fastest that applies.

use super::{check_len, dim, select, tune};
use crate::gpu::{Bindable, Dispatch, Gpu, GpuError, Result, Tensor, MATMUL, MATMUL_SUBGROUP};
pub use select::Variant;

mod linear;
pub use linear::*;

/// Binding numbers of shaders/matmul.wgsl and shaders/matmul_subgroup.wgsl; a `4` suffix
/// is the vec4 view of the same tensor.
mod binding {
    pub const PARAMS: u32 = 0;
    pub const A: u32 = 1;
    pub const B: u32 = 2;
    pub const BIAS: u32 = 3;
    pub const C: u32 = 4;
    pub const DB: u32 = 6;
    pub const A4: u32 = 7;
    pub const B4: u32 = 8;
    pub const C4: u32 = 9;
    pub const MASK: u32 = 10;
    pub const PARTIALS: u32 = 11;
}
use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// 1 when the kernel adds a bias row to C.
    pub has_bias: u32,
    pub a_stride_m: u32,
    pub a_stride_k: u32,
    pub b_stride_k: u32,
    pub b_stride_n: u32,
    /// `Epilogue::code`.
    pub epilogue: u32,
    /// Non-zero: the workgroup rows from here on compute row sums of A (`Extras::row_sums`).
    pub row_sums_at: u32,
    /// Split-K: the terms of K each slice sums.
    pub k_chunk: u32,
    pub _pad: u32,
}

/// What the product does to each value of C as it stores it (after the bias): how the
/// linear layer's ReLU, forward and backward, runs without dispatches of its own.
#[derive(Clone, Copy, Default)]
pub enum Epilogue<'a> {
    #[default]
    None,
    /// max(C, 0).
    Relu,
    /// C where `mask` (the ReLU's output, shaped as C) is > 0, else 0: the gradient through
    /// the ReLU.
    ReluMask(&'a Tensor),
}

impl Epilogue<'_> {
    fn code(&self) -> u32 {
        match self {
            Epilogue::None => 0,
            Epilogue::Relu => 1,
            Epilogue::ReluMask(_) => 2,
        }
    }
}

/// What a product does besides C = A B, in the same dispatch.
#[derive(Clone, Copy, Default)]
pub struct Extras<'a> {
    /// Added to every row of C (the linear layer's forward).
    pub bias: Option<&'a Tensor>,
    pub epilogue: Epilogue<'a>,
    /// Overwritten with the row sums of A, `[M]` (the linear layer's bias gradient beside
    /// its weight gradient, where A = dY^T), by workgroups appended to the product's grid.
    pub row_sums: Option<&'a Tensor>,
}

/// The logical problem `C[M,N] = A(M,K) * B(K,N)` with element strides of A and B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// A(m, k) = a[m * a_stride.0 + k * a_stride.1]
    pub a_stride: (usize, usize),
    /// B(k, n) = b[k * b_stride.0 + n * b_stride.1]
    pub b_stride: (usize, usize),
}

impl MatmulShape {
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
    /// Bytes of A, B and C, each moved once.
    pub fn bytes(&self) -> f64 {
        4.0 * (self.m * self.k + self.k * self.n + self.m * self.n) as f64
    }
    fn a_len(&self) -> usize {
        span(self.m, self.a_stride.0, self.k, self.a_stride.1)
    }
    fn b_len(&self) -> usize {
        span(self.k, self.b_stride.0, self.n, self.b_stride.1)
    }
    fn describe(&self) -> String {
        format!("M={} N={} K={}", self.m, self.n, self.k)
    }
}

/// Elements a strided 2-D view covers.
fn span(rows: usize, rs: usize, cols: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

const WG: u32 = 8;
const BLOCK: usize = 4;

fn params(shape: &MatmulShape) -> Result<MatmulParams> {
    let d = |v| dim("matmul", v);
    Ok(MatmulParams {
        m: d(shape.m)?,
        n: d(shape.n)?,
        k: d(shape.k)?,
        has_bias: 0,
        a_stride_m: d(shape.a_stride.0)?,
        a_stride_k: d(shape.a_stride.1)?,
        b_stride_k: d(shape.b_stride.0)?,
        b_stride_n: d(shape.b_stride.1)?,
        epilogue: 0,
        row_sums_at: 0,
        k_chunk: 0,
        _pad: 0,
    })
}

fn workgroups(shape: &MatmulShape) -> [u32; 3] {
    let tile = WG as usize * BLOCK;
    [
        shape.n.div_ceil(tile).max(1) as u32,
        shape.m.div_ceil(tile).max(1) as u32,
        1,
    ]
}

/// C = A * B (+ bias broadcast over rows) with variant `variant` (`Auto`: the choice of
/// `select::matmul::choose`); an error if the variant does not apply to the shape.
pub fn matmul_with(
    gpu: &Gpu,
    variant: Variant,
    shape: MatmulShape,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
) -> Result<Vec<Dispatch>> {
    matmul_epilogue_with(gpu, variant, shape, a, b, bias, Epilogue::None, c)
}

/// `matmul_with` with an epilogue applied to C as it is stored.
#[allow(clippy::too_many_arguments)]
pub fn matmul_epilogue_with(
    gpu: &Gpu,
    variant: Variant,
    shape: MatmulShape,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    epilogue: Epilogue,
    c: &Tensor,
) -> Result<Vec<Dispatch>> {
    let extras = Extras {
        bias,
        epilogue,
        row_sums: None,
    };
    matmul_extras_with(gpu, variant, shape, a, b, extras, c)
}

/// C = A * B with `extras` in the same dispatch (split-K: two dispatches, the extras in the
/// second).
pub fn matmul_extras_with(
    gpu: &Gpu,
    variant: Variant,
    shape: MatmulShape,
    a: &Tensor,
    b: &Tensor,
    extras: Extras,
    c: &Tensor,
) -> Result<Vec<Dispatch>> {
    let Extras {
        bias,
        epilogue,
        row_sums,
    } = extras;
    let mut desc = shape.describe();
    match epilogue {
        Epilogue::None => {}
        Epilogue::Relu => desc.push_str(" +relu"),
        Epilogue::ReluMask(m) => {
            check_len("matmul", &desc, m, shape.m * shape.n)?;
            desc.push_str(" +relu mask");
        }
    }
    check_len("matmul", &desc, a, shape.a_len())?;
    check_len("matmul", &desc, b, shape.b_len())?;
    check_len("matmul", &desc, c, shape.m * shape.n)?;
    if let Some(b) = bias {
        check_len("matmul", &desc, b, shape.n)?;
    }
    if let Some(r) = row_sums {
        desc.push_str(" +row sums");
        check_len("matmul", &desc, r, shape.m)?;
    }
    let caps = &gpu.caps;
    let variant = match variant {
        Variant::Auto => {
            let fallback = select::matmul::choose(caps, &shape, bias.is_some());
            let applicable = select::matmul::applicable(caps, &shape, bias.is_some());
            match tune::Tuner::of(gpu) {
                Some(t) if !select::forced(caps, &applicable) => {
                    let key = tune::shape_key("matmul", &(shape, bias.is_some()));
                    t.choose(gpu, key, &applicable, fallback, |v, size| {
                        // The probe: 16 rows of C (the strides stay, so the layouts do too).
                        let shape = match size {
                            tune::Size::Full => shape,
                            tune::Size::Probe => MatmulShape {
                                m: shape.m.min(16),
                                ..shape
                            },
                        };
                        let a = gpu.zeros("tune a", shape.a_len())?;
                        let b = gpu.zeros("tune b", shape.b_len())?;
                        let c = gpu.zeros("tune c", shape.m * shape.n)?;
                        let bias = bias.map(|_| gpu.zeros("tune bias", shape.n)).transpose()?;
                        matmul_with(gpu, v, shape, &a, &b, bias.as_ref(), &c)
                    })
                }
                _ => fallback,
            }
        }
        v => {
            caps.supports(v).map_err(|why| GpuError::Shape {
                label: "matmul".into(),
                message: why,
            })?;
            if !select::matmul::applicable(caps, &shape, bias.is_some()).contains(&v) {
                return Err(GpuError::Shape {
                    label: "matmul".into(),
                    message: format!(
                        "no {v} kernel for {desc} with strides {:?} {:?}",
                        shape.a_stride, shape.b_stride
                    ),
                });
            }
            v
        }
    };
    let mut p = params(&shape)?;
    p.has_bias = bias.is_some() as u32;
    p.epilogue = epilogue.code();
    let no_bias = gpu.zeros("no bias", 4)?;
    let bias_buf: &Tensor = bias.unwrap_or(&no_bias);
    // Every product binds a mask (the dummy unless the epilogue reads one).
    let mask: &Tensor = match epilogue {
        Epilogue::ReluMask(m) => m,
        _ => &no_bias,
    };
    if variant == Variant::SplitK {
        return split_k(gpu, shape, p, a, b, extras, c, &desc);
    }
    let (shader, entry, mut groups, binds) = match variant {
        Variant::Subgroup => {
            let (entry, groups) =
                select::matmul::subgroup_kernel(caps, &shape).expect("applicable");
            // NT reads A as vec4s and stores scalars; NN reads A as scalars (any strides)
            // and stores vec4s.
            let (a_view, c_view) = if entry.starts_with("matmul_nt_subgroup") {
                (binding::A4, binding::C)
            } else {
                (binding::A, binding::C4)
            };
            let binds: Vec<(u32, &dyn Bindable)> = vec![
                (a_view, &a),
                (binding::B4, &b),
                (binding::BIAS, bias_buf),
                (c_view, &c),
            ];
            (&MATMUL_SUBGROUP, entry, groups, binds)
        }
        Variant::Tiled => {
            let groups = [
                shape.n.div_ceil(64).max(1) as u32,
                shape.m.div_ceil(64).max(1) as u32,
                1,
            ];
            let binds: Vec<(u32, &dyn Bindable)> = vec![
                (binding::A, &a),
                (binding::B, &b),
                (binding::BIAS, bias_buf),
                (binding::C, &c),
            ];
            (&MATMUL, "matmul_tiled", groups, binds)
        }
        Variant::Vec4 => {
            let (entry, groups) =
                select::matmul::vec4_kernel(&shape, bias.is_some()).expect("applicable");
            let mut binds: Vec<(u32, &dyn Bindable)> = vec![(binding::B4, &b), (binding::C, &c)];
            match entry {
                "matmul_nt4" => {
                    binds.push((binding::A4, &a));
                    binds.push((binding::BIAS, bias_buf));
                }
                "matmul_tn4" => binds.push((binding::A4, &a)),
                _ => binds.push((binding::A, &a)),
            }
            (&MATMUL, entry, groups, binds)
        }
        _ => {
            let mut binds: Vec<(u32, &dyn Bindable)> =
                vec![(binding::A, &a), (binding::B, &b), (binding::C, &c)];
            let entry = match bias {
                Some(bb) => {
                    binds.push((binding::BIAS, bb));
                    "matmul_bias"
                }
                None => "matmul",
            };
            (&MATMUL, entry, workgroups(&shape), binds)
        }
    };
    let mut binds = binds;
    binds.push((binding::MASK, mask));
    // Every entry may compute row sums: A as scalars and db are always bound.
    if !binds.iter().any(|(n, _)| *n == binding::A) {
        binds.push((binding::A, a));
    }
    // A writable dummy of its own: a buffer cannot be bound read-only and writable at once.
    let no_row_sums = gpu.zeros("no row sums", 4)?;
    binds.push((binding::DB, row_sums.unwrap_or(&no_row_sums)));
    if row_sums.is_some() {
        let threads = match entry {
            "matmul_tiled" => 256,
            e if e.ends_with("subgroup32") => 8,
            _ => 64,
        };
        let extra = shape.m.div_ceil(groups[0] as usize * threads) as u32;
        p.row_sums_at = groups[1];
        groups[1] += extra;
    }
    let pb = gpu.uniform("matmul params", &p);
    binds.push((binding::PARAMS, &pb));
    Ok(vec![gpu
        .dispatch(shader, entry, &desc, &binds, groups)?
        .with_cost(shape.flops(), shape.bytes())])
}

/// Split-K (`Variant::SplitK`): the tiled product of each K slice into partial sums, then
/// their fixed-order sum with the bias, epilogue and row sums.
#[allow(clippy::too_many_arguments)]
fn split_k(
    gpu: &Gpu,
    shape: MatmulShape,
    mut p: MatmulParams,
    a: &Tensor,
    b: &Tensor,
    extras: Extras,
    c: &Tensor,
    desc: &str,
) -> Result<Vec<Dispatch>> {
    let chunk = select::matmul::split_k_chunk(&shape).expect("applicable");
    let splits = shape.k.div_ceil(chunk);
    p.k_chunk = chunk as u32;
    let partials = gpu.zeros("matmul split-k partials", splits * shape.m * shape.n)?;
    // The combine: one invocation per 4 columns of a row, rows of 65,535 workgroups at most.
    let wgs = (shape.m * shape.n.div_ceil(4)).div_ceil(256).max(1);
    let x = wgs.min(65_535);
    let mut combine_groups = [x as u32, wgs.div_ceil(x) as u32, 1];
    if extras.row_sums.is_some() {
        p.row_sums_at = combine_groups[1];
        combine_groups[1] += shape.m.div_ceil(x * 256) as u32;
    }
    let pb = gpu.uniform("matmul params", &p);
    let product = gpu.dispatch(
        &MATMUL,
        "matmul_split_partials",
        desc,
        &[
            (binding::PARAMS, &pb),
            (binding::A, a),
            (binding::B, b),
            (binding::PARTIALS, &partials),
        ],
        [
            shape.n.div_ceil(64).max(1) as u32,
            shape.m.div_ceil(64).max(1) as u32,
            splits as u32,
        ],
    )?;
    let no_bias = gpu.zeros("no bias", 4)?;
    let no_row_sums = gpu.zeros("no row sums", 4)?;
    let mask: &Tensor = match extras.epilogue {
        Epilogue::ReluMask(m) => m,
        _ => &no_bias,
    };
    let combine = gpu.dispatch(
        &MATMUL,
        "matmul_split_combine",
        desc,
        &[
            (binding::PARAMS, &pb),
            (binding::A, a),
            (binding::BIAS, extras.bias.unwrap_or(&no_bias)),
            (binding::C, c),
            (binding::DB, extras.row_sums.unwrap_or(&no_row_sums)),
            (binding::MASK, mask),
            (binding::PARTIALS, &partials),
        ],
        combine_groups,
    )?;
    Ok(vec![
        product.with_cost(shape.flops(), shape.bytes()),
        combine.with_cost(
            (splits * shape.m * shape.n) as f64,
            4.0 * ((splits + 1) * shape.m * shape.n) as f64,
        ),
    ])
}

/// C = A * B with f64 accumulation.
pub fn matmul_reference(c: &mut [f32], a: &[f32], b: &[f32], s: MatmulShape) {
    for m in 0..s.m {
        for n in 0..s.n {
            let mut acc = 0f64;
            for k in 0..s.k {
                acc += a[m * s.a_stride.0 + k * s.a_stride.1] as f64
                    * b[k * s.b_stride.0 + n * s.b_stride.1] as f64;
            }
            c[m * s.n + n] = acc as f32;
        }
    }
}
