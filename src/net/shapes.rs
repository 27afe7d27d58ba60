//! Kernel shapes of a model's layers at a batch size: the one place that turns a layer of
//! the spec into the shape its kernels take (the GPU plans and the CPU reference both use
//! these).

use crate::kernels::{
    batchnorm::BatchNormShape, conv2d::Conv2dShape, matmul::LinearShape, pool::PoolShape,
};
use crate::model::{Layer, ModelSpec};

pub fn conv(spec: &ModelSpec, i: usize, batch: usize) -> Conv2dShape {
    let s = spec.input(i);
    let Layer::Conv {
        out,
        k,
        stride,
        pad,
    } = spec.layers[i]
    else {
        panic!("layer {i} is {}, not a convolution", spec.layers[i])
    };
    Conv2dShape {
        n: batch,
        ci: s.c,
        h: s.h,
        w: s.w,
        co: out,
        kh: k,
        kw: k,
        stride,
        pad,
    }
}

pub fn linear(spec: &ModelSpec, i: usize, batch: usize) -> LinearShape {
    LinearShape {
        batch,
        inputs: spec.input(i).c,
        outputs: spec.output(i).c,
    }
}

/// Batch norm over channels (2-D: planes of h*w; 1-D after flatten: planes of 1).
pub fn batch_norm(spec: &ModelSpec, i: usize, batch: usize) -> BatchNormShape {
    let s = spec.input(i);
    BatchNormShape::new(batch, s.c, s.h * s.w)
}

pub fn pool(spec: &ModelSpec, i: usize, batch: usize) -> PoolShape {
    let s = spec.input(i);
    let Layer::MaxPool { k, stride } = spec.layers[i] else {
        panic!("layer {i} is {}, not a max pool", spec.layers[i])
    };
    PoolShape {
        n: batch,
        c: s.c,
        h: s.h,
        w: s.w,
        k,
        stride,
    }
}

/// Elements of layer `i`'s output over the batch (for elementwise kernels).
pub fn elements(spec: &ModelSpec, i: usize, batch: usize) -> usize {
    batch * spec.output(i).len()
}
