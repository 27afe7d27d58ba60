//! The linear layer's three products and its bias gradient, as `matmul` calls with the
//! layer's strides (forward Y = X W^T + b, dX = dY W, dW = dY^T X with db beside it), with
//! the ReLU epilogues that fuse the activation after it; and their references.

use super::{check_len, matmul_epilogue_with, matmul_extras_with, matmul_reference, matmul_with};
use super::{Epilogue, Extras, MatmulShape, Variant};
use crate::gpu::{Dispatch, Gpu, Result, Tensor};

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
    /// `Y[batch,out] = X[batch,in] * W[out,in]^T`
    pub fn forward(&self) -> MatmulShape {
        MatmulShape {
            m: self.batch,
            n: self.outputs,
            k: self.inputs,
            a_stride: (self.inputs, 1),
            b_stride: (1, self.inputs),
        }
    }
    /// `dX[batch,in] = dY[batch,out] * W[out,in]`
    pub fn backward_input(&self) -> MatmulShape {
        MatmulShape {
            m: self.batch,
            n: self.inputs,
            k: self.outputs,
            a_stride: (self.outputs, 1),
            b_stride: (self.inputs, 1),
        }
    }
    /// `dW[out,in] = dY[batch,out]^T * X[batch,in]`
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
) -> Result<Vec<Dispatch>> {
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
) -> Result<Vec<Dispatch>> {
    let desc = s.describe();
    check_len("linear_forward", &desc, x, s.batch * s.inputs)?;
    check_len("linear_forward", &desc, w, s.outputs * s.inputs)?;
    check_len("linear_forward", &desc, b, s.outputs)?;
    check_len("linear_forward", &desc, y, s.batch * s.outputs)?;
    matmul_with(gpu, v, s.forward(), x, w, Some(b), y)
}

/// y = relu(x W^T + b) in one dispatch.
pub fn linear_relu_forward(
    gpu: &Gpu,
    s: LinearShape,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    linear_relu_forward_with(gpu, Variant::Auto, s, x, w, b, y)
}

pub fn linear_relu_forward_with(
    gpu: &Gpu,
    v: Variant,
    s: LinearShape,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    let desc = s.describe();
    check_len("linear_relu_forward", &desc, x, s.batch * s.inputs)?;
    check_len("linear_relu_forward", &desc, w, s.outputs * s.inputs)?;
    check_len("linear_relu_forward", &desc, b, s.outputs)?;
    check_len("linear_relu_forward", &desc, y, s.batch * s.outputs)?;
    matmul_epilogue_with(gpu, v, s.forward(), x, w, Some(b), Epilogue::Relu, y)
}

/// dx = dy W (overwrites dx).
pub fn linear_backward_input(
    gpu: &Gpu,
    s: LinearShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Dispatch>> {
    linear_backward_input_with(gpu, Variant::Auto, s, dy, w, dx)
}

pub fn linear_backward_input_with(
    gpu: &Gpu,
    v: Variant,
    s: LinearShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Dispatch>> {
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

/// dx = (dy W) where relu_out > 0, else 0: the gradient to the input of the ReLU whose
/// output `relu_out` is this layer's input (overwrites dx).
pub fn linear_backward_input_relu(
    gpu: &Gpu,
    s: LinearShape,
    dy: &Tensor,
    w: &Tensor,
    relu_out: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Dispatch>> {
    linear_backward_input_relu_with(gpu, Variant::Auto, s, dy, w, relu_out, dx)
}

pub fn linear_backward_input_relu_with(
    gpu: &Gpu,
    v: Variant,
    s: LinearShape,
    dy: &Tensor,
    w: &Tensor,
    relu_out: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Dispatch>> {
    let desc = s.describe();
    check_len("linear_backward_input_relu", &desc, dy, s.batch * s.outputs)?;
    check_len("linear_backward_input_relu", &desc, w, s.outputs * s.inputs)?;
    check_len("linear_backward_input_relu", &desc, dx, s.batch * s.inputs)?;
    let e = Epilogue::ReluMask(relu_out);
    matmul_epilogue_with(gpu, v, s.backward_input(), dy, w, None, e, dx)
}

/// dw = dy^T x (overwrites dw).
pub fn linear_backward_weight(
    gpu: &Gpu,
    s: LinearShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
) -> Result<Vec<Dispatch>> {
    linear_backward_weight_with(gpu, Variant::Auto, s, dy, x, dw)
}

pub fn linear_backward_weight_with(
    gpu: &Gpu,
    v: Variant,
    s: LinearShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
) -> Result<Vec<Dispatch>> {
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

/// dw = dy^T x and db = the sum over the batch of dy, in one dispatch (both overwritten;
/// split-K: in its second):
/// db's workgroups are appended to the product's grid (`Extras::row_sums`).
pub fn linear_backward_weight_bias(
    gpu: &Gpu,
    s: LinearShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
    db: &Tensor,
) -> Result<Vec<Dispatch>> {
    linear_backward_weight_bias_with(gpu, Variant::Auto, s, dy, x, dw, db)
}

pub fn linear_backward_weight_bias_with(
    gpu: &Gpu,
    v: Variant,
    s: LinearShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
    db: &Tensor,
) -> Result<Vec<Dispatch>> {
    let desc = s.describe();
    check_len(
        "linear_backward_weight_bias",
        &desc,
        dy,
        s.batch * s.outputs,
    )?;
    check_len("linear_backward_weight_bias", &desc, x, s.batch * s.inputs)?;
    check_len(
        "linear_backward_weight_bias",
        &desc,
        dw,
        s.outputs * s.inputs,
    )?;
    check_len("linear_backward_weight_bias", &desc, db, s.outputs)?;
    let extras = Extras {
        row_sums: Some(db),
        ..Extras::default()
    };
    matmul_extras_with(gpu, v, s.backward_weight(), dy, x, extras, dw)
}

/// db as the GPU sums it: over the batch in order, in f32 (the reference sums in f64).
pub fn linear_bias_gradient_in_order(db: &mut [f32], dy: &[f32], s: LinearShape) {
    for (o, v) in db.iter_mut().enumerate() {
        *v = (0..s.batch).fold(0f32, |acc, r| acc + dy[r * s.outputs + o]);
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
