//! The fusion rules, step by step, on small specs and every preset.
use super::*;

fn spec(text: &str) -> ModelSpec {
    ModelSpec::parse(text).unwrap()
}

fn dropout(layer: usize, p: f32) -> Option<DropoutLayer> {
    Some(DropoutLayer { layer, p })
}

#[test]
fn regcnn_block_is_one_pool_step() {
    // conv bn dropout relu maxpool: the batch norm, dropout and ReLU run in the pool.
    let s = spec("conv(32,3) bn dropout(0.2) relu maxpool(2) flatten linear(10)");
    let train = steps(&s, Mode::Train);
    assert_eq!(train.len(), 3);
    assert_eq!(
        train[0].op,
        Op::Conv {
            layer: 0,
            relu: false
        }
    );
    let fused = PoolFused {
        batch_norm: Some(1),
        batch_norm_backward: true,
        relu: true,
        pre_dropout: dropout(2, 0.2),
        post_dropout: None,
        conv_bias: None,
        conv_forward: None,
    };
    assert_eq!(
        train[1],
        Step {
            op: Op::MaxPool { layer: 4, fused },
            first: 1,
            last: 4
        }
    );
    // The flatten is no step; the linear layer reads the pool's output.
    assert_eq!(
        train[2].op,
        Op::Linear {
            layer: 6,
            relu: false
        }
    );
    // Evaluating: the same steps, without dropout and without a backward.
    let eval = steps(&s, Mode::Eval);
    let Op::MaxPool { fused, .. } = eval[1].op else {
        panic!("{eval:?}")
    };
    assert_eq!(fused.pre_dropout, None);
    assert!(!fused.batch_norm_backward && fused.relu && fused.batch_norm == Some(1));
    assert_eq!(
        step_of_layer(&s, &train),
        vec![Some(0), Some(1), Some(1), Some(1), Some(1), None, Some(2)]
    );
}

#[test]
fn relu_runs_in_the_linear_step_before_it_where_the_backward_allows() {
    let linear = |layer, relu| Op::Linear { layer, relu };
    let ops =
        |text: &str, mode| -> Vec<Op> { steps(&spec(text), mode).iter().map(|s| s.op).collect() };
    let mlp = "flatten linear(128) relu linear(64) relu linear(10)";
    for mode in [Mode::Train, Mode::Eval] {
        assert_eq!(
            ops(mlp, mode),
            vec![linear(1, true), linear(3, true), linear(5, false)]
        );
    }
    let t = steps(&spec(mlp), Mode::Train);
    assert_eq!((t[0].first, t[0].last, t[1].first, t[1].last), (1, 2, 3, 4));
    assert_eq!(
        (0..3)
            .map(|k| masks_input_gradient(&t, k))
            .collect::<Vec<_>>(),
        [false, true, true]
    );
    // A dropout between the ReLU and the next linear step: that step masks by the dropout's
    // output, which is 0 wherever the ReLU's is. Evaluating, the dropout is no step.
    let dropout = "flatten linear(128) relu dropout(0.5) linear(10)";
    let t = steps(&spec(dropout), Mode::Train);
    assert_eq!(
        t.iter().map(|s| s.op).collect::<Vec<_>>(),
        vec![
            linear(1, true),
            Op::Dropout(DropoutLayer { layer: 3, p: 0.5 }),
            linear(4, false)
        ]
    );
    assert_eq!(
        (0..3)
            .map(|k| masks_input_gradient(&t, k))
            .collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(
        ops(dropout, Mode::Eval),
        vec![linear(1, true), linear(4, false)]
    );
    // Two dropouts: the second one's step would need the mask; the ReLU keeps its step.
    let two = "flatten linear(128) relu dropout(0.5) dropout(0.5) linear(10)";
    assert_eq!(ops(two, Mode::Train)[1], Op::Relu { layer: 2 });
    // A ReLU on the logits: nothing after it to run its backward.
    let last = "flatten linear(10) relu";
    assert_eq!(
        ops(last, Mode::Train),
        vec![linear(1, false), Op::Relu { layer: 2 }]
    );
    assert_eq!(ops(last, Mode::Eval), vec![linear(1, true)]);
}

#[test]
fn relu_runs_in_the_conv_step_before_it_where_the_backward_allows() {
    let conv = |layer, relu| Op::Conv { layer, relu };
    // vgg's blocks: conv relu bn, and conv relu dropout bn (the batch norm masks by its
    // input), and conv relu bn maxpool (the pool's fused batch-norm backward masks).
    let text = "conv(8,3,1,1) relu bn conv(8,3,1,1) relu dropout(0.1) bn \
                conv(8,3,1,1) relu bn maxpool(2,2) flatten linear(10)";
    let t = steps(&spec(text), Mode::Train);
    let ops: Vec<Op> = t.iter().map(|s| s.op).collect();
    assert_eq!(ops[0], conv(0, true));
    assert_eq!(ops[1], Op::BatchNorm { layer: 2 });
    assert_eq!(ops[2], conv(3, true));
    assert_eq!(ops[3], Op::Dropout(DropoutLayer { layer: 5, p: 0.1 }));
    assert_eq!(ops[4], Op::BatchNorm { layer: 6 });
    assert_eq!(ops[5], conv(7, true));
    assert!(matches!(ops[6], Op::MaxPool { layer: 10, .. }));
    assert_eq!(ops.len(), 8);
    assert_eq!((t[0].first, t[0].last), (0, 1));
    let masked: Vec<bool> = (0..t.len()).map(|k| masks_input_gradient(&t, k)).collect();
    assert_eq!(
        masked,
        [false, true, false, false, true, false, true, false]
    );
    // conv relu conv: a convolution cannot mask its input gradient, so training keeps the
    // ReLU's step; evaluating fuses it.
    let text = "conv(4,3) relu conv(4,3) flatten linear(10)";
    let train: Vec<Op> = steps(&spec(text), Mode::Train)
        .iter()
        .map(|s| s.op)
        .collect();
    assert_eq!(train[1], Op::Relu { layer: 1 });
    let eval: Vec<Op> = steps(&spec(text), Mode::Eval)
        .iter()
        .map(|s| s.op)
        .collect();
    assert_eq!(eval[0], conv(0, true));
}

#[test]
fn overlapping_windows_keep_the_batch_norm_backward_separate() {
    let s = spec("conv(6,3) bn dropout(0.3) relu maxpool(3,2) dropout(0.25) flatten linear(10)");
    let t = steps(&s, Mode::Train);
    let Op::MaxPool { layer: 4, fused } = t[1].op else {
        panic!("{t:?}")
    };
    assert_eq!((t[1].first, t[1].last), (1, 5));
    assert_eq!(fused.batch_norm, Some(1));
    assert!(!fused.batch_norm_backward);
    assert_eq!(fused.pre_dropout, dropout(2, 0.3));
    assert_eq!(fused.post_dropout, dropout(5, 0.25));
    assert!(t[1].writes_input_gradient());
    assert!(!t[0].writes_input_gradient());
}

#[test]
fn only_one_relu_and_one_dropout_fuse_and_nothing_past_a_conv() {
    // relu relu maxpool: only the nearer ReLU fuses, the other stays its own step.
    let s = spec("conv(4,3) relu relu maxpool(2) flatten linear(10)");
    let t = steps(&s, Mode::Train);
    assert_eq!(t.len(), 4);
    assert_eq!(t[1].op, Op::Relu { layer: 1 });
    assert_eq!((t[2].first, t[2].last), (2, 3));
    // A pool straight after a conv fuses no layer, only the conv's bias gradient and
    // (a 1-channel input) its forward.
    let s = spec("conv(4,3) maxpool(2) flatten linear(10)");
    let t = steps(&s, Mode::Train);
    assert_eq!(
        t[1].op,
        Op::MaxPool {
            layer: 1,
            fused: PoolFused {
                conv_bias: Some(0),
                conv_forward: Some(0),
                ..PoolFused::default()
            }
        }
    );
}

#[test]
fn a_one_channel_conv_runs_the_pool_forward_after_it() {
    let forward_of = |st: &Step| match st.op {
        Op::MaxPool { fused, .. } => fused.conv_forward,
        _ => None,
    };
    // cnn1: the first block (1 input channel) only, when training and evaluating.
    let cnn1 = spec(crate::model::preset("cnn1").unwrap().spec);
    for mode in [Mode::Train, Mode::Eval] {
        let t = steps(&cnn1, mode);
        let fused: Vec<_> = t.iter().map(forward_of).collect();
        assert_eq!(fused, [None, Some(0), None, None, None, None], "{mode:?}");
        assert!(pool_forward_in_step(&t, 0) && !pool_forward_in_step(&t, 2));
    }
    // Not with a batch norm or dropout in the block, 3x3 pools, 5x5 kernels, stride 2,
    // or more than 64 channels.
    for text in [
        "conv(4,3) bn relu maxpool(2) flatten linear(10)",
        "conv(4,3) relu dropout(0.5) maxpool(2) flatten linear(10)",
        "conv(4,3) relu maxpool(2) dropout(0.5) flatten linear(10)",
        "conv(4,3) relu maxpool(3) flatten linear(10)",
        "conv(4,5) relu maxpool(2) flatten linear(10)",
        "conv(4,3,2) relu maxpool(2) flatten linear(10)",
        "conv(65,3) relu maxpool(2) flatten linear(10)",
    ] {
        let t = steps(&spec(text), Mode::Train);
        assert!(t.iter().all(|st| forward_of(st).is_none()), "{text}");
        assert!(!pool_forward_in_step(&t, 0), "{text}");
    }
    // Padding is fine.
    let t = steps(
        &spec("conv(8,3,1,1) relu maxpool(2) flatten linear(10)"),
        Mode::Eval,
    );
    assert!(pool_forward_in_step(&t, 0));
}

#[test]
fn a_tiling_pool_after_a_conv_computes_its_bias_gradient() {
    // cnn1's blocks: conv relu maxpool(2), the ReLU in the pool.
    let s =
        spec("conv(4,3) relu maxpool(2) conv(8,3) dropout(0.5) relu maxpool(2) flatten linear(10)");
    let t = steps(&s, Mode::Train);
    let bias_of = |st: &Step| match st.op {
        Op::MaxPool { fused, .. } => fused.conv_bias,
        _ => None,
    };
    assert_eq!(
        t.iter().map(bias_of).collect::<Vec<_>>(),
        [None, Some(0), None, Some(3), None]
    );
    assert!(bias_gradient_in_next_step(&t, 0) && bias_gradient_in_next_step(&t, 2));
    assert!(!bias_gradient_in_next_step(&t, 1) && !bias_gradient_in_next_step(&t, 4));
    // Not when evaluating, not with overlapping windows, not with a batch norm between
    // (the conv's gradient is then the batch norm's input gradient), not after a linear.
    for (text, mode) in [
        ("conv(4,3) relu maxpool(2) flatten linear(10)", Mode::Eval),
        (
            "conv(4,3) relu maxpool(3,2) flatten linear(10)",
            Mode::Train,
        ),
        (
            "conv(4,3) bn relu maxpool(2) flatten linear(10)",
            Mode::Train,
        ),
        (
            "conv(4,3) relu relu maxpool(2) flatten linear(10)",
            Mode::Train,
        ),
    ] {
        let t = steps(&spec(text), mode);
        assert!(t.iter().all(|st| bias_of(st).is_none()), "{text}");
        assert!(!bias_gradient_in_next_step(&t, 0), "{text}");
    }
}

#[test]
fn a_dropout_after_one_pool_is_not_taken_by_the_next() {
    let s = spec("maxpool(2) dropout(0.5) maxpool(2) flatten linear(10)");
    let t = steps(&s, Mode::Train);
    assert_eq!(t.len(), 3);
    let Op::MaxPool { fused: f0, .. } = t[0].op else {
        panic!()
    };
    let Op::MaxPool { fused: f1, .. } = t[1].op else {
        panic!()
    };
    assert_eq!(f0.post_dropout, dropout(1, 0.5));
    assert_eq!(f1, PoolFused::default());
}

#[test]
fn unfused_layers_are_one_step_each_and_eval_drops_dropout() {
    let s = spec("flatten linear(24) bn relu dropout(0.5) linear(10)");
    let kinds = |m| {
        steps(&s, m)
            .iter()
            .map(|st| {
                format!("{:?}", st.op)
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kinds(Mode::Train),
        [
            "Linear",
            "BatchNorm",
            "Relu",
            "Dropout(DropoutLayer",
            "Linear"
        ]
    );
    assert_eq!(kinds(Mode::Eval), ["Linear", "BatchNorm", "Relu", "Linear"]);
    // A batch norm on the network's input writes the input's gradient.
    let s = spec("bn flatten linear(10)");
    assert!(steps(&s, Mode::Train)[0].writes_input_gradient());
}

#[test]
fn every_preset_compiles_to_the_expected_number_of_steps() {
    // mlp: linear+relu linear+relu linear; cnn1: conv pool conv pool linear+relu linear
    // (ReLUs in the pools); cnn2: 3x (conv, pool with bn/relu/dropout) + linear+relu
    // dropout linear (linear+relu linear when evaluating); regcnn: 2x (conv, pool) +
    // linear+relu linear; vgg: below.
    for (name, train, eval) in [
        ("mlp", 3, 3),
        ("cnn1", 6, 6),
        ("cnn2", 9, 8),
        ("regcnn", 6, 6),
    ] {
        let s = spec(crate::model::preset(name).unwrap().spec);
        assert_eq!(steps(&s, Mode::Train).len(), train, "{name} train");
        assert_eq!(steps(&s, Mode::Eval).len(), eval, "{name} eval");
    }
}
