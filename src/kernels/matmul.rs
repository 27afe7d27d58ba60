//! Matrix products and the linear layer (`shaders/matmul.wgsl`).
//!
//! One strided kernel computes C[M,N] = A(M,K) B(K,N); the linear layer's three products
//! differ only in strides: forward Y = X W^T + b, backward dX = dY W, dW = dY^T X, and
//! db = column sums of dY. Weights are [out, in] (PyTorch layout).
//!
//! Variants: strided (any layout), vec4 kernels per layout, a workgroup-tiled kernel for
//! hardware GPUs, and subgroup kernels (`shaders/matmul_subgroup.wgsl`) for adapters with
//! 8-wide subgroups (lavapipe). `Variant::Auto` picks the fastest that applies.

use super::{check_len, dim};
use crate::gpu::{grid, Dispatch, Gpu, GpuError, Result, Tensor, MATMUL, MATMUL_SUBGROUP};
use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub _pad: u32,
    pub a_stride_m: u32,
    pub a_stride_k: u32,
    pub b_stride_k: u32,
    pub b_stride_n: u32,
}

/// The logical problem C[M,N] = A(M,K) * B(K,N) with element strides of A and B.
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
        _pad: 0,
        a_stride_m: d(shape.a_stride.0)?,
        a_stride_k: d(shape.a_stride.1)?,
        b_stride_k: d(shape.b_stride.0)?,
        b_stride_n: d(shape.b_stride.1)?,
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

/// Which kernel computes a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The vec4 kernel for the layout where it applies, else the strided one.
    Auto,
    /// The general strided kernel (4x4 block per invocation).
    Strided,
    /// The vec4 kernel for the layout; an error where it does not apply.
    Vec4,
    /// Workgroup-memory tiles (64x64 per workgroup): for hardware GPUs, any strides.
    Tiled,
    /// Subgroup broadcasts (8x32 tile per subgroup): adapters with 8-wide subgroups; an
    /// error where it does not apply.
    Subgroup,
}

/// Products at least this large (M*N) use the tiled kernel on hardware adapters.
const TILED_MIN_OUTPUTS: usize = 64 * 64;

/// The vec4 entry point (and its workgroup grid) that handles `s`, if any.
pub fn vec4_kernel(s: &MatmulShape) -> Option<(&'static str, [u32; 3])> {
    let ((sam, sak), (sbk, sbn)) = (s.a_stride, s.b_stride);
    let g = |v: usize, per: usize| v.div_ceil(per).max(1) as u32;
    let by4 = |v: usize| v.is_multiple_of(4);
    if sak == 1 && sbk == 1 && by4(s.k) && by4(sam) && by4(sbn) {
        // 8 rows x 4 columns per invocation, 8 x 8 invocations per workgroup.
        return Some(("matmul_nt4", [g(s.n, 32), g(s.m, 64), 1]));
    }
    if sam == 1 && sbn == 1 && by4(s.m) && by4(s.n) && by4(sak) && by4(sbk) {
        return Some(("matmul_tn4", [g(s.n, 64), g(s.m, 64), 1]));
    }
    if sbn == 1 && by4(s.n) && by4(sbk) {
        return Some(("matmul_nn4", [g(s.n, 64), g(s.m, 32), 1]));
    }
    None
}

/// The subgroup entry point and workgroup grid for `s`, if its layout has one: "NT" (A and
/// B contiguous along K) or "NN" (B contiguous along N; A any strides, so also "TN").
pub fn subgroup_kernel(s: &MatmulShape) -> Option<(&'static str, [u32; 3])> {
    let ((sam, sak), (sbk, sbn)) = (s.a_stride, s.b_stride);
    // Fewer rows than one subgroup tile: the vec4 kernels waste less, and on lavapipe a
    // mostly idle tile lets the driver's uniform inlining shrink the shader enough that it
    // recompiles it at every dispatch (bench's "in step" column showed 0.5 -> 1.6 ms).
    if s.m < 8 {
        return None;
    }
    let by4 = |v: usize| v.is_multiple_of(4);
    // 8 subgroups per workgroup, each a tile of C of `rows` x 32; tiles indexed along x.
    let groups = |rows: usize| match grid(s.m.div_ceil(rows) * s.n.div_ceil(32), 8) {
        [x, 1, 1] => Some([x, 1, 1]),
        _ => None,
    };
    if sak == 1 && sbk == 1 && by4(s.k) && by4(sam) && by4(sbn) {
        return groups(8).map(|g| ("matmul_nt_subgroup", g));
    }
    if sbn == 1 && by4(s.n) && by4(sbk) {
        return groups(16).map(|g| ("matmul_nn_subgroup", g));
    }
    None
}

/// C = A * B (no bias). The tensors may be longer than the view (strided sub-views).
pub fn matmul(
    gpu: &Gpu,
    shape: MatmulShape,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
) -> Result<Dispatch> {
    matmul_with(gpu, Variant::Auto, shape, a, b, None, c)
}

/// C = A * B (+ bias broadcast over rows) with the chosen kernel.
pub fn matmul_with(
    gpu: &Gpu,
    variant: Variant,
    shape: MatmulShape,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
) -> Result<Dispatch> {
    let desc = shape.describe();
    check_len("matmul", &desc, a, shape.a_len())?;
    check_len("matmul", &desc, b, shape.b_len())?;
    check_len("matmul", &desc, c, shape.m * shape.n)?;
    if let Some(b) = bias {
        check_len("matmul", &desc, b, shape.n)?;
    }
    let subgroup = match variant {
        Variant::Subgroup if !gpu.subgroups_of_8() => {
            return Err(GpuError::Shape {
                label: "matmul".into(),
                message: format!(
                    "the subgroup kernels need subgroups of 8 invocations; {} has {}..{}",
                    gpu.info.name, gpu.info.subgroup_min_size, gpu.info.subgroup_max_size
                ),
            })
        }
        Variant::Subgroup => Some(subgroup_kernel(&shape).ok_or_else(|| GpuError::Shape {
            label: "matmul".into(),
            message: format!(
                "no subgroup kernel for {desc} with strides {:?} {:?}",
                shape.a_stride, shape.b_stride
            ),
        })?),
        Variant::Auto if gpu.subgroups_of_8() => subgroup_kernel(&shape),
        _ => None,
    };
    if let Some((entry, groups)) = subgroup {
        let mut p = params(&shape)?;
        p._pad = bias.is_some() as u32;
        let pb = gpu.uniform("matmul params", &p);
        let no_bias = gpu.zeros("no bias", 4)?;
        let bias_buf = bias.map_or(&no_bias.buffer, |b| &b.buffer);
        // NT reads A as vec4s and stores scalars; NN reads A as scalars (any strides) and
        // stores vec4s.
        let (a_binding, c_binding) = if entry == "matmul_nt_subgroup" {
            (7, 4)
        } else {
            (1, 9)
        };
        return Ok(gpu
            .dispatch(
                &MATMUL_SUBGROUP,
                entry,
                &desc,
                &[
                    (0, &pb),
                    (a_binding, &a.buffer),
                    (8, &b.buffer),
                    (3, bias_buf),
                    (c_binding, &c.buffer),
                ],
                groups,
            )?
            .with_cost(shape.flops(), shape.bytes()));
    }
    let tiled = match variant {
        Variant::Tiled => true,
        Variant::Auto => !gpu.is_software() && shape.m * shape.n >= TILED_MIN_OUTPUTS,
        _ => false,
    };
    if tiled {
        let mut p = params(&shape)?;
        p._pad = bias.is_some() as u32;
        let pb = gpu.uniform("matmul params", &p);
        let no_bias = gpu.zeros("no bias", 4)?;
        let bias_buf = bias.map_or(&no_bias.buffer, |b| &b.buffer);
        let groups = [
            shape.n.div_ceil(64).max(1) as u32,
            shape.m.div_ceil(64).max(1) as u32,
            1,
        ];
        return Ok(gpu
            .dispatch(
                &MATMUL,
                "matmul_tiled",
                &desc,
                &[
                    (0, &pb),
                    (1, &a.buffer),
                    (2, &b.buffer),
                    (3, bias_buf),
                    (4, &c.buffer),
                ],
                groups,
            )?
            .with_cost(shape.flops(), shape.bytes()));
    }
    let fast = match variant {
        Variant::Strided | Variant::Tiled | Variant::Subgroup => None,
        // Only the NT kernel adds a bias (the linear forward); other layouts never need one.
        Variant::Auto => vec4_kernel(&shape).filter(|(e, _)| bias.is_none() || *e == "matmul_nt4"),
        Variant::Vec4 => Some(
            vec4_kernel(&shape)
                .filter(|(e, _)| bias.is_none() || *e == "matmul_nt4")
                .ok_or_else(|| GpuError::Shape {
                    label: "matmul".into(),
                    message: format!(
                        "no vec4 kernel for {desc} with strides {:?} {:?}",
                        shape.a_stride, shape.b_stride
                    ),
                })?,
        ),
    };
    let mut p = params(&shape)?;
    let d = match (fast, bias) {
        (Some((entry, groups)), _) => {
            p._pad = bias.is_some() as u32;
            let pb = gpu.uniform("matmul params", &p);
            let no_bias = gpu.zeros("no bias", 4)?;
            let bias_buf = bias.map_or(&no_bias.buffer, |b| &b.buffer);
            let mut binds = vec![(0, &pb), (8, &b.buffer), (4, &c.buffer)];
            match entry {
                "matmul_nt4" => binds.extend([(7, &a.buffer), (3, bias_buf)]),
                "matmul_tn4" => binds.push((7, &a.buffer)),
                _ => binds.push((1, &a.buffer)),
            }
            gpu.dispatch(&MATMUL, entry, &desc, &binds, groups)?
        }
        (None, Some(bb)) => {
            let pb = gpu.uniform("matmul params", &p);
            gpu.dispatch(
                &MATMUL,
                "matmul_bias",
                &desc,
                &[
                    (0, &pb),
                    (1, &a.buffer),
                    (2, &b.buffer),
                    (3, &bb.buffer),
                    (4, &c.buffer),
                ],
                workgroups(&shape),
            )?
        }
        (None, None) => {
            let pb = gpu.uniform("matmul params", &p);
            gpu.dispatch(
                &MATMUL,
                "matmul",
                &desc,
                &[(0, &pb), (1, &a.buffer), (2, &b.buffer), (4, &c.buffer)],
                workgroups(&shape),
            )?
        }
    };
    Ok(d.with_cost(shape.flops(), shape.bytes()))
}

/// Shape of a linear layer applied to a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub batch: usize,
    pub inputs: usize,
    pub outputs: usize,
}

impl LinearShape {
    fn describe(&self) -> String {
        format!(
            "batch={} in={} out={}",
            self.batch, self.inputs, self.outputs
        )
    }
    /// Y[batch,out] = X[batch,in] * W[out,in]^T
    pub fn forward(&self) -> MatmulShape {
        MatmulShape {
            m: self.batch,
            n: self.outputs,
            k: self.inputs,
            a_stride: (self.inputs, 1),
            b_stride: (1, self.inputs),
        }
    }
    /// dX[batch,in] = dY[batch,out] * W[out,in]
    pub fn backward_input(&self) -> MatmulShape {
        MatmulShape {
            m: self.batch,
            n: self.inputs,
            k: self.outputs,
            a_stride: (self.outputs, 1),
            b_stride: (self.inputs, 1),
        }
    }
    /// dW[out,in] = dY[batch,out]^T * X[batch,in]
    pub fn backward_weight(&self) -> MatmulShape {
        MatmulShape {
            m: self.outputs,
            n: self.inputs,
            k: self.batch,
            a_stride: (1, self.outputs),
            b_stride: (self.inputs, 1),
        }
    }
}

/// y = x W^T + b
pub fn linear_forward(
    gpu: &Gpu,
    s: LinearShape,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
) -> Result<Dispatch> {
    linear_forward_with(gpu, Variant::Auto, s, x, w, b, y)
}

pub fn linear_forward_with(
    gpu: &Gpu,
    v: Variant,
    s: LinearShape,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
) -> Result<Dispatch> {
    let desc = s.describe();
    check_len("linear_forward", &desc, x, s.batch * s.inputs)?;
    check_len("linear_forward", &desc, w, s.outputs * s.inputs)?;
    check_len("linear_forward", &desc, b, s.outputs)?;
    check_len("linear_forward", &desc, y, s.batch * s.outputs)?;
    matmul_with(gpu, v, s.forward(), x, w, Some(b), y)
}

/// dx = dy W (overwrites dx).
pub fn linear_backward_input(
    gpu: &Gpu,
    s: LinearShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch> {
    linear_backward_input_with(gpu, Variant::Auto, s, dy, w, dx)
}

pub fn linear_backward_input_with(
    gpu: &Gpu,
    v: Variant,
    s: LinearShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch> {
    check_len(
        "linear_backward_input",
        &s.describe(),
        dy,
        s.batch * s.outputs,
    )?;
    check_len(
        "linear_backward_input",
        &s.describe(),
        w,
        s.outputs * s.inputs,
    )?;
    check_len(
        "linear_backward_input",
        &s.describe(),
        dx,
        s.batch * s.inputs,
    )?;
    matmul_with(gpu, v, s.backward_input(), dy, w, None, dx)
}

/// dw = dy^T x (overwrites dw).
pub fn linear_backward_weight(
    gpu: &Gpu,
    s: LinearShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
) -> Result<Dispatch> {
    linear_backward_weight_with(gpu, Variant::Auto, s, dy, x, dw)
}

pub fn linear_backward_weight_with(
    gpu: &Gpu,
    v: Variant,
    s: LinearShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
) -> Result<Dispatch> {
    check_len(
        "linear_backward_weight",
        &s.describe(),
        dy,
        s.batch * s.outputs,
    )?;
    check_len(
        "linear_backward_weight",
        &s.describe(),
        x,
        s.batch * s.inputs,
    )?;
    check_len(
        "linear_backward_weight",
        &s.describe(),
        dw,
        s.outputs * s.inputs,
    )?;
    matmul_with(gpu, v, s.backward_weight(), dy, x, None, dw)
}

/// db = sum over the batch of dy (overwrites db).
pub fn linear_backward_bias(
    gpu: &Gpu,
    s: LinearShape,
    dy: &Tensor,
    db: &Tensor,
) -> Result<Dispatch> {
    let desc = s.describe();
    check_len("linear_backward_bias", &desc, dy, s.batch * s.outputs)?;
    check_len("linear_backward_bias", &desc, db, s.outputs)?;
    let mut p = params(&s.forward())?;
    p.m = dim("linear", s.batch)?;
    p.n = dim("linear", s.outputs)?;
    let p = gpu.uniform("linear bias params", &p);
    gpu.dispatch(
        &MATMUL,
        "bias_backward",
        &desc,
        &[(0, &p), (5, &dy.buffer), (6, &db.buffer)],
        [s.outputs.div_ceil(64).max(1) as u32, 1, 1],
    )
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

pub fn linear_forward_reference(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], s: LinearShape) {
    matmul_reference(y, x, w, s.forward());
    for row in y.chunks_mut(s.outputs) {
        for (v, &bias) in row.iter_mut().zip(b) {
            *v += bias;
        }
    }
}

/// Gradients of y = x W^T + b: dx, dw, db (all overwritten).
pub fn linear_backward_reference(
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    s: LinearShape,
) {
    matmul_reference(dx, dy, w, s.backward_input());
    matmul_reference(dw, dy, x, s.backward_weight());
    for (o, v) in db.iter_mut().enumerate() {
        *v = (0..s.batch)
            .map(|r| dy[r * s.outputs + o] as f64)
            .sum::<f64>() as f32;
    }
}
