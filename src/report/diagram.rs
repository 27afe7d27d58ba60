//! The architecture diagram drawn from a model spec (as seed 000's flow page): one box per
//! layer with its kind, settings, output shape and parameter count, grouped into the
//! blocks a person would name (a conv with its bn/relu/pool/dropout; a dense layer; the
//! output), arrows in data-flow order: left to right within a block, top to bottom
//! between blocks.

use super::html::esc;
use crate::model::{Layer, ModelSpec, Shape};
use std::fmt::Write;

const BOX_W: usize = 158;
const BOX_H: usize = 78;
const GAP: usize = 30;
const PAD: usize = 14;
const ROW_GAP: usize = 44;
const LABEL_H: usize = 22;

/// A named group of consecutive layers.
pub struct Block {
    pub name: String,
    pub layers: std::ops::Range<usize>,
}

/// Groups the layers: a block starts at every conv, flatten and linear layer; what follows
/// (bn, relu, pool, dropout) belongs to it.
pub fn blocks(spec: &ModelSpec) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let (mut convs, mut denses) = (0, 0);
    let last_linear = spec
        .layers
        .iter()
        .rposition(|l| matches!(l, Layer::Linear { .. }));
    for (i, layer) in spec.layers.iter().enumerate() {
        let name = match layer {
            Layer::Conv { .. } => {
                convs += 1;
                Some(format!("conv block {convs}"))
            }
            Layer::Flatten => Some("flatten".to_string()),
            Layer::Linear { .. } if Some(i) == last_linear => Some("output".to_string()),
            Layer::Linear { .. } => {
                denses += 1;
                Some(format!("dense block {denses}"))
            }
            _ if out.is_empty() => Some("input processing".to_string()),
            _ => None,
        };
        match name {
            Some(name) => out.push(Block {
                name,
                layers: i..i + 1,
            }),
            None => {
                if let Some(b) = out.last_mut() {
                    b.layers.end = i + 1;
                }
            }
        }
    }
    out
}

fn shape(s: Shape) -> String {
    if s.flat {
        format!("{}", s.c)
    } else {
        format!("{}×{}×{}", s.c, s.h, s.w)
    }
}

/// (title, settings, fill colour) of a layer's box.
fn describe(layer: &Layer) -> (String, String, &'static str) {
    match *layer {
        Layer::Conv {
            out,
            k,
            stride,
            pad,
        } => (
            format!("Conv2d {k}×{k}"),
            format!("{out} filters, stride {stride}, pad {pad}"),
            "#dbe9f6",
        ),
        Layer::BatchNorm => ("BatchNorm".into(), "per-channel".into(), "#e8e1f4"),
        Layer::Relu => ("ReLU".into(), String::new(), "#fde8d4"),
        Layer::MaxPool { k, stride } => (
            format!("MaxPool {k}×{k}"),
            format!("stride {stride}"),
            "#dff1de",
        ),
        Layer::Dropout { p } => ("Dropout".into(), format!("p = {p}"), "#f4f4f4"),
        Layer::Flatten => ("Flatten".into(), String::new(), "#f4f4f4"),
        Layer::Linear { out } => ("Linear".into(), format!("{out} units"), "#fbe3e8"),
    }
}

fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The diagram as a standalone SVG document.
pub fn svg(spec: &ModelSpec) -> String {
    let blocks = blocks(spec);
    let widest = blocks
        .iter()
        .map(|b| b.layers.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let row_w = |n: usize| n * BOX_W + (n - 1) * GAP + 2 * PAD;
    let width = row_w(widest) + 2 * PAD;
    let row_h = LABEL_H + BOX_H + 2 * PAD;
    let input_h = 40;
    let height = PAD + input_h + ROW_GAP + blocks.len() * (row_h + ROW_GAP);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, sans-serif" role="img" aria-label="network architecture">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>
<rect width="{width}" height="{height}" fill="#ffffff"/>
"##
    );
    let center = width / 2;
    // The input.
    let _ = write!(
        s,
        r##"<rect x="{}" y="{PAD}" width="{BOX_W}" height="{input_h}" rx="8" fill="#ffffff" stroke="#888"/>
<text x="{center}" y="{}" text-anchor="middle" font-size="14">input 1×28×28</text>
"##,
        center - BOX_W / 2,
        PAD + 25
    );
    let mut prev_bottom = (center, PAD + input_h);
    let mut y = PAD + input_h + ROW_GAP;
    let mut total = 0;
    for block in &blocks {
        let n = block.layers.len();
        let bw = row_w(n);
        let bx = (width - bw) / 2;
        let params: usize = block.layers.clone().map(|i| spec.param_count(i)).sum();
        total += params;
        let _ = write!(
            s,
            r##"<path d="M {} {} L {} {}" stroke="#555" stroke-width="1.6" fill="none" marker-end="url(#arrow)"/>
<rect x="{bx}" y="{y}" width="{bw}" height="{row_h}" rx="12" fill="#fafafa" stroke="#bbb" stroke-dasharray="5 3"/>
<text x="{}" y="{}" font-size="13" font-weight="bold" fill="#444">{}</text>
<text x="{}" y="{}" font-size="12" fill="#777" text-anchor="end">{} params</text>
"##,
            prev_bottom.0,
            prev_bottom.1,
            center,
            y - 2,
            bx + PAD,
            y + 17,
            esc(&block.name),
            bx + bw - PAD,
            y + 17,
            count(params)
        );
        let by = y + LABEL_H + PAD;
        for (j, i) in block.layers.clone().enumerate() {
            let x = bx + PAD + j * (BOX_W + GAP);
            let (title, settings, fill) = describe(&spec.layers[i]);
            let p = spec.param_count(i);
            let _ = write!(
                s,
                r##"<g class="layer"><rect x="{x}" y="{by}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}" stroke="#777"/>
<text x="{cx}" y="{}" text-anchor="middle" font-size="14" font-weight="bold">{}</text>
<text x="{cx}" y="{}" text-anchor="middle" font-size="11" fill="#444">{}</text>
<text x="{cx}" y="{}" text-anchor="middle" font-size="12">→ {}</text>
<text x="{cx}" y="{}" text-anchor="middle" font-size="11" fill="#666">{}</text></g>
"##,
                by + 19,
                esc(&title),
                by + 36,
                esc(&settings),
                by + 54,
                shape(spec.output(i)),
                by + 70,
                if p > 0 {
                    format!("{} params", count(p))
                } else {
                    String::new()
                },
                cx = x + BOX_W / 2,
            );
            if j > 0 {
                let _ = writeln!(
                    s,
                    r##"<path d="M {} {} L {} {}" stroke="#555" stroke-width="1.6" marker-end="url(#arrow)"/>"##,
                    x - GAP + 2,
                    by + BOX_H / 2,
                    x - 2,
                    by + BOX_H / 2
                );
            }
        }
        prev_bottom = (center, y + row_h);
        y += row_h + ROW_GAP;
    }
    let _ = write!(
        s,
        r##"<text x="{center}" y="{}" text-anchor="middle" font-size="13" fill="#444">{} parameters in all; 10 class scores out</text>
</svg>
"##,
        y - ROW_GAP + 28,
        count(total)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vgg_groups_into_named_blocks_with_every_layer_boxed() {
        let spec = crate::model::resolve("vgg").unwrap().0;
        let names: Vec<String> = blocks(&spec).into_iter().map(|b| b.name).collect();
        assert_eq!(
            names,
            [
                "conv block 1",
                "conv block 2",
                "conv block 3",
                "conv block 4",
                "flatten",
                "dense block 1",
                "output"
            ]
        );
        let svg = svg(&spec);
        assert_eq!(
            svg.matches("<g class=\"layer\">").count(),
            spec.layers.len()
        );
        assert!(svg.contains("128×7×7") && svg.contains("Conv2d 3×3"));
        let total: usize = (0..spec.layers.len()).map(|i| spec.param_count(i)).sum();
        assert!(svg.contains(&format!("{} parameters in all", count(total))));
    }
}
