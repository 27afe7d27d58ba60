//! The layer-spec language: `conv(32,3) bn dropout(0.2) relu maxpool(2) ... linear(10)`.
//!
//! `conv(out,k[,stride][,pad])`, `bn`, `relu`, `maxpool(k[,stride])`, `dropout(p)`,
//! `flatten`, `linear(out)`. Shapes are inferred from the 1x28x28 input; a spec that does not
//! fit is an error naming the layer (by index and text) and the shape it received.

use std::fmt;
use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layer {
    Conv {
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    },
    BatchNorm,
    Relu,
    MaxPool {
        k: usize,
        stride: usize,
    },
    Dropout {
        p: f32,
    },
    Flatten,
    Linear {
        out: usize,
    },
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Layer::Conv {
                out,
                k,
                stride,
                pad,
            } => write!(f, "conv({out},{k},{stride},{pad})"),
            Layer::BatchNorm => write!(f, "bn"),
            Layer::Relu => write!(f, "relu"),
            Layer::MaxPool { k, stride } => write!(f, "maxpool({k},{stride})"),
            Layer::Dropout { p } => write!(f, "dropout({p})"),
            Layer::Flatten => write!(f, "flatten"),
            Layer::Linear { out } => write!(f, "linear({out})"),
        }
    }
}

/// Activation shape of one example: channels x height x width; `flat` after `flatten`
/// (then `c` is the feature count and h = w = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub flat: bool,
}

impl Shape {
    pub const INPUT: Shape = Shape {
        c: 1,
        h: 28,
        w: 28,
        flat: false,
    };
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.flat {
            write!(f, "{}", self.c)
        } else {
            write!(f, "{}x{}x{}", self.c, self.h, self.w)
        }
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum SpecError {
    #[error("model spec is empty")]
    Empty,
    #[error(
        "`{name}` is neither a preset ({presets}) nor a layer spec such as \
             \"conv(32,3) relu maxpool(2) flatten linear(10)\""
    )]
    UnknownModel { name: String, presets: String },
    #[error("layer {index} `{text}`: {message}")]
    Syntax {
        index: usize,
        text: String,
        message: String,
    },
    #[error("layer {index} `{layer}` receives {input}: {message}")]
    Shape {
        index: usize,
        layer: String,
        input: String,
        message: String,
    },
    #[error("the network outputs {got} but must output {classes} class scores; end with linear({classes})")]
    Output { got: String, classes: usize },
}

/// A parsed, shape-checked model: its layers and every layer's output shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub layers: Vec<Layer>,
    /// `shapes[0]` is the input; `shapes[i + 1]` is the output of layer i.
    pub shapes: Vec<Shape>,
}

pub const NUM_CLASSES: usize = 10;

impl ModelSpec {
    pub fn parse(text: &str) -> Result<ModelSpec, SpecError> {
        let layers = parse_layers(text)?;
        ModelSpec::from_layers(layers)
    }

    pub fn from_layers(layers: Vec<Layer>) -> Result<ModelSpec, SpecError> {
        if layers.is_empty() {
            return Err(SpecError::Empty);
        }
        let mut shapes = vec![Shape::INPUT];
        for (index, layer) in layers.iter().enumerate() {
            let input = *shapes.last().expect("input shape");
            let out = infer(index, layer, input)?;
            check_size(index, layer, input, out)?;
            shapes.push(out);
        }
        let last = *shapes.last().expect("output shape");
        if !last.flat || last.c != NUM_CLASSES {
            return Err(SpecError::Output {
                got: last.to_string(),
                classes: NUM_CLASSES,
            });
        }
        Ok(ModelSpec { layers, shapes })
    }

    /// Canonical text: every argument written out, so parsing it gives the same model.
    pub fn to_text(&self) -> String {
        self.layers
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn input(&self, layer: usize) -> Shape {
        self.shapes[layer]
    }

    pub fn output(&self, layer: usize) -> Shape {
        self.shapes[layer + 1]
    }
}

/// The most elements one tensor of a model may hold (per image for activations): 2^28
/// f32 = 1 GiB, more than any storage binding an adapter offers in practice. Checked when a
/// spec is parsed, before anything is allocated for it, so a typo such as linear(1000000000)
/// is an error naming the layer instead of an allocation failure.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 28;

fn check_size(index: usize, layer: &Layer, input: Shape, out: Shape) -> Result<(), SpecError> {
    let fail = |what: &str, n: u128| SpecError::Shape {
        index,
        layer: layer.to_string(),
        input: input.to_string(),
        message: format!(
            "{what} {n} elements, more than the {MAX_TENSOR_ELEMENTS} one tensor may hold"
        ),
    };
    let elements = out.c as u128 * out.h as u128 * out.w as u128;
    if elements > MAX_TENSOR_ELEMENTS as u128 {
        return Err(fail("its output per image has", elements));
    }
    let (c, big) = (input.c as u128, |v: usize| v as u128);
    let params = match *layer {
        Layer::Conv { out, k, .. } => big(out) * c * big(k) * big(k),
        Layer::Linear { out } => big(out) * c,
        _ => 0,
    };
    if params > MAX_TENSOR_ELEMENTS as u128 {
        return Err(fail("its weight has", params));
    }
    Ok(())
}

fn infer(index: usize, layer: &Layer, input: Shape) -> Result<Shape, SpecError> {
    let fail = |message: String| SpecError::Shape {
        index,
        layer: layer.to_string(),
        input: input.to_string(),
        message,
    };
    // Every argument bounded first, so the shape arithmetic below cannot overflow.
    let args: &[usize] = match layer {
        Layer::Conv {
            out,
            k,
            stride,
            pad,
        } => &[*out, *k, *stride, *pad],
        Layer::MaxPool { k, stride } => &[*k, *stride],
        Layer::Linear { out } => &[*out],
        _ => &[],
    };
    if let Some(a) = args.iter().find(|&&a| a > MAX_TENSOR_ELEMENTS) {
        return Err(fail(format!(
            "{a} is larger than any tensor may be ({MAX_TENSOR_ELEMENTS} elements)"
        )));
    }
    match *layer {
        Layer::Conv {
            out,
            k,
            stride,
            pad,
        } => {
            if input.flat {
                return Err(fail("a convolution needs an image (CxHxW), not a flat vector; move it before `flatten`".into()));
            }
            if out == 0 || k == 0 || stride == 0 {
                return Err(fail(
                    "channels, kernel and stride must be at least 1".into(),
                ));
            }
            if input.h + 2 * pad < k || input.w + 2 * pad < k {
                return Err(fail(format!(
                    "a {k}x{k} kernel with padding {pad} does not fit a {}x{} image",
                    input.h, input.w
                )));
            }
            Ok(Shape {
                c: out,
                h: (input.h + 2 * pad - k) / stride + 1,
                w: (input.w + 2 * pad - k) / stride + 1,
                flat: false,
            })
        }
        Layer::MaxPool { k, stride } => {
            if input.flat {
                return Err(fail(
                    "pooling needs an image (CxHxW), not a flat vector".into(),
                ));
            }
            if k == 0 || stride == 0 {
                return Err(fail("kernel and stride must be at least 1".into()));
            }
            if input.h < k || input.w < k {
                return Err(fail(format!(
                    "a {k}x{k} window does not fit a {}x{} image",
                    input.h, input.w
                )));
            }
            Ok(Shape {
                c: input.c,
                h: (input.h - k) / stride + 1,
                w: (input.w - k) / stride + 1,
                flat: false,
            })
        }
        Layer::Linear { out } => {
            if !input.flat {
                return Err(fail(
                    "a linear layer needs a flat vector; add `flatten` before it".into(),
                ));
            }
            if out == 0 {
                return Err(fail("output size must be at least 1".into()));
            }
            Ok(Shape {
                c: out,
                h: 1,
                w: 1,
                flat: true,
            })
        }
        Layer::Flatten => {
            if input.flat {
                return Err(fail("the input is already flat".into()));
            }
            Ok(Shape {
                c: input.len(),
                h: 1,
                w: 1,
                flat: true,
            })
        }
        Layer::Dropout { p } => {
            if !(0.0..1.0).contains(&p) {
                return Err(fail(format!("dropout probability {p} must be in [0, 1)")));
            }
            Ok(input)
        }
        Layer::BatchNorm | Layer::Relu => Ok(input),
    }
}

fn parse_layers(text: &str) -> Result<Vec<Layer>, SpecError> {
    let mut layers = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut tokens = Vec::new();
    // Split on whitespace outside parentheses ("conv(32, 3)" is one token).
    let mut depth = 0;
    let mut start = None;
    while let Some((i, ch)) = chars.next() {
        match ch {
            '(' => depth += 1,
            ')' if depth == 0 => {
                return Err(SpecError::Syntax {
                    index: tokens.len(),
                    text: text[start.unwrap_or(i)..=i].to_string(),
                    message: "this `)` closes no `(`".into(),
                });
            }
            ')' => depth -= 1,
            _ => {}
        }
        if ch.is_whitespace() && depth == 0 {
            if let Some(s) = start.take() {
                tokens.push(&text[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
        if chars.peek().is_none() {
            if let Some(s) = start.take() {
                tokens.push(&text[s..]);
            }
        }
    }
    for (index, token) in tokens.iter().enumerate() {
        layers.push(parse_layer(index, token)?);
    }
    Ok(layers)
}

fn parse_layer(index: usize, token: &str) -> Result<Layer, SpecError> {
    let fail = |message: &str| SpecError::Syntax {
        index,
        text: token.to_string(),
        message: message.to_string(),
    };
    let (name, args): (&str, Vec<&str>) = match token.find('(') {
        Some(open) => {
            if !token.ends_with(')') {
                return Err(fail("missing `)`"));
            }
            let inner = &token[open + 1..token.len() - 1];
            let args = if inner.trim().is_empty() {
                Vec::new()
            } else {
                inner.split(',').map(str::trim).collect()
            };
            (&token[..open], args)
        }
        None => (token, Vec::new()),
    };
    let int = |i: usize, what: &str| -> Result<usize, SpecError> {
        args[i].parse::<usize>().map_err(|_| {
            fail(&format!(
                "{what} must be a non-negative integer, got `{}`",
                args[i]
            ))
        })
    };
    let arity = |lo: usize, hi: usize, usage: &str| -> Result<(), SpecError> {
        if args.len() < lo || args.len() > hi {
            Err(fail(&format!("expected {usage}")))
        } else {
            Ok(())
        }
    };
    match name.to_ascii_lowercase().as_str() {
        "conv" | "conv2d" => {
            arity(2, 4, "conv(out, kernel[, stride][, pad])")?;
            Ok(Layer::Conv {
                out: int(0, "out")?,
                k: int(1, "kernel")?,
                stride: if args.len() > 2 { int(2, "stride")? } else { 1 },
                pad: if args.len() > 3 { int(3, "pad")? } else { 0 },
            })
        }
        "bn" | "batchnorm" => arity(0, 0, "`bn` without arguments").map(|_| Layer::BatchNorm),
        "relu" => arity(0, 0, "`relu` without arguments").map(|_| Layer::Relu),
        "flatten" => arity(0, 0, "`flatten` without arguments").map(|_| Layer::Flatten),
        "maxpool" | "pool" => {
            arity(1, 2, "maxpool(kernel[, stride])")?;
            let k = int(0, "kernel")?;
            Ok(Layer::MaxPool {
                k,
                stride: if args.len() > 1 { int(1, "stride")? } else { k },
            })
        }
        "dropout" => {
            arity(1, 1, "dropout(p)")?;
            let p: f32 = args[0]
                .parse()
                .map_err(|_| fail(&format!("p must be a number, got `{}`", args[0])))?;
            Ok(Layer::Dropout { p })
        }
        "linear" | "fc" => {
            arity(1, 1, "linear(out)")?;
            Ok(Layer::Linear {
                out: int(0, "out")?,
            })
        }
        _ => Err(fail(
            "unknown layer; expected conv, bn, relu, maxpool, dropout, flatten or linear",
        )),
    }
}
