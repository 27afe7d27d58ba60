//! Every kernel against its CPU reference on seeded random data, over shapes that include
//! sizes off the workgroup/tile multiples, batch 1 and the layers of the five presets; and
//! every backward reference against finite differences of its forward reference.

mod augment;
mod batchnorm;
mod conv2d;
mod conv2d_pool;
mod data;
mod dropout;
mod elementwise;
mod errors;
mod grid;
mod matmul;
mod optim;
mod pool;
mod select;
mod softmax_xent;
mod tune;
