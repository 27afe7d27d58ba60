//! The `summary` table of a model: each layer's output shape, parameters and FLOPs, and
//! which GPU step runs it (the fusion of `net::fuse`).

use super::fuse::{self, Mode, Op};
use crate::model::{Layer, ModelSpec};

/// The `summary` table: each layer's output shape, parameters and FLOPs, with totals.
/// The layer table: output shapes, parameters, FLOPs, and which training step runs each
/// layer (`net::fuse`: layers fused into a pool's or a linear layer's kernels say so).
pub fn summary(spec: &ModelSpec) -> String {
    let steps = fuse::steps(spec, Mode::Train);
    let step_of = fuse::step_of_layer(spec, &steps);
    let row = |a: &dyn std::fmt::Display, b: &str, c: &str, d: &str, e: &str, f: &str| {
        let line = format!("{a:<4} {b:<18} {c:<14} {d:>10} {e:>14}  {f}");
        format!("{}\n", line.trim_end())
    };
    let mut s = row(&"#", "layer", "output", "params", "FLOPs/image", "GPU step");
    s += &row(&"", "input", &spec.shapes[0].to_string(), "", "", "");
    let (mut params, mut flops) = (0usize, 0u64);
    for (i, layer) in spec.layers.iter().enumerate() {
        let name = match layer {
            Layer::BatchNorm if spec.input(i).flat => "bn (1d)".to_string(),
            Layer::BatchNorm => "bn (2d)".to_string(),
            l => l.to_string(),
        };
        let (p, f) = (spec.param_count(i), spec.flops(i));
        params += p;
        flops += f;
        let step = match step_of[i].map(|k| (k, steps[k].op)) {
            Some((k, Op::MaxPool { fused, .. })) if fused.conv_forward.is_some() => {
                format!("{k} (forward in step {}'s kernel)", k - 1)
            }
            Some((k, Op::MaxPool { layer, .. })) if layer != i => {
                format!("{k} (in the pool's kernels)")
            }
            Some((k, Op::Linear { layer, .. })) if layer != i => {
                format!("{k} (in the linear layer's kernels)")
            }
            Some((k, _)) if fuse::pool_forward_in_step(&steps, k) => {
                format!("{k} (with the pool: one forward kernel)")
            }
            Some((k, _)) => k.to_string(),
            None => "- (no kernel)".into(),
        };
        let out = spec.output(i).to_string();
        s += &row(&i, &name, &out, &group(p as u64), &group(f), &step);
    }
    s += &row(&"", "total", "", &group(params as u64), &group(flops), "");
    s += &format!(
        "training costs about 3x the forward FLOPs: {:.1} MFLOP per image; {} GPU steps\n",
        3.0 * flops as f64 / 1e6,
        steps.len()
    );
    s
}

/// 1234567 as "1,234,567".
fn group(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
