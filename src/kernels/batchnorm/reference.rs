//! The CPU references of the batch-norm passes, in f64.

use super::BatchNormShape;

fn idx(s: &BatchNormShape, b: usize, c: usize, j: usize) -> usize {
    (b * s.c + c) * s.hw + j
}

/// Training forward. Writes y, save_mean, save_invstd; updates running_mean/var in place.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train_reference(
    y: &mut [f32],
    save_mean: &mut [f32],
    save_invstd: &mut [f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    s: BatchNormShape,
) {
    let count = (s.n * s.hw) as f64;
    for c in 0..s.c {
        let vals = || (0..s.n).flat_map(move |b| (0..s.hw).map(move |j| (b, j)));
        let mean = vals().map(|(b, j)| x[idx(&s, b, c, j)] as f64).sum::<f64>() / count;
        let ss = vals()
            .map(|(b, j)| (x[idx(&s, b, c, j)] as f64 - mean).powi(2))
            .sum::<f64>();
        let var = ss / count;
        let unbiased = if count > 1.0 { ss / (count - 1.0) } else { var };
        let invstd = 1.0 / (var + s.eps as f64).sqrt();
        save_mean[c] = mean as f32;
        save_invstd[c] = invstd as f32;
        let m = s.momentum as f64;
        running_mean[c] = ((1.0 - m) * running_mean[c] as f64 + m * mean) as f32;
        running_var[c] = ((1.0 - m) * running_var[c] as f64 + m * unbiased) as f32;
        for (b, j) in vals() {
            let i = idx(&s, b, c, j);
            y[i] = ((x[i] as f64 - mean) * invstd * gamma[c] as f64 + beta[c] as f64) as f32;
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval_reference(
    y: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    s: BatchNormShape,
) {
    for (i, out) in y.iter_mut().enumerate() {
        let c = (i / s.hw) % s.c;
        let inv = 1.0 / (running_var[c] as f64 + s.eps as f64).sqrt();
        *out = ((x[i] as f64 - running_mean[c] as f64) * inv * gamma[c] as f64 + beta[c] as f64)
            as f32;
    }
}

/// Training-mode backward: dx, dgamma, dbeta (overwritten), recomputing the batch statistics
/// from x.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_reference(
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    s: BatchNormShape,
) {
    let count = (s.n * s.hw) as f64;
    for c in 0..s.c {
        let vals = || (0..s.n).flat_map(move |b| (0..s.hw).map(move |j| idx(&s, b, c, j)));
        let mean = vals().map(|i| x[i] as f64).sum::<f64>() / count;
        let var = vals().map(|i| (x[i] as f64 - mean).powi(2)).sum::<f64>() / count;
        let invstd = 1.0 / (var + s.eps as f64).sqrt();
        let dg: f64 = vals()
            .map(|i| dy[i] as f64 * (x[i] as f64 - mean) * invstd)
            .sum();
        let db: f64 = vals().map(|i| dy[i] as f64).sum();
        dgamma[c] = dg as f32;
        dbeta[c] = db as f32;
        for i in vals() {
            let xhat = (x[i] as f64 - mean) * invstd;
            dx[i] =
                (gamma[c] as f64 * invstd / count * (count * dy[i] as f64 - db - xhat * dg)) as f32;
        }
    }
}
