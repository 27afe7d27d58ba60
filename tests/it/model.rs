//! The layer-spec parser, shape inference and the presets.

use wgpu_fmnist::model::{self, Layer, ModelSpec, SpecError, PRESETS};

#[test]
fn parses_the_design_example() {
    let s = ModelSpec::parse(
        "conv(32,3) bn dropout(0.2) relu maxpool(2) conv(64,3) bn dropout(0.2) relu maxpool(2) flatten linear(128) relu linear(10)",
    )
    .unwrap();
    assert_eq!(
        s.layers[0],
        Layer::Conv {
            out: 32,
            k: 3,
            stride: 1,
            pad: 0
        }
    );
    assert_eq!(s.layers[4], Layer::MaxPool { k: 2, stride: 2 });
    assert_eq!(s.layers[2], Layer::Dropout { p: 0.2 });
    // 28 -> 26 -> 13 -> 11 -> 5: the first linear layer sees 64x5x5 = 1600, not seed 000's 64x12x12.
    assert_eq!(s.input(11).c, 1600);
    // The canonical text parses back to the same model.
    assert_eq!(ModelSpec::parse(&s.to_text()).unwrap(), s);
}

#[test]
fn accepts_spaces_inside_arguments_and_optional_arguments() {
    let s = ModelSpec::parse("conv( 8, 5, 2, 2 ) relu maxpool(3,2) flatten linear(10)").unwrap();
    assert_eq!(
        s.layers[0],
        Layer::Conv {
            out: 8,
            k: 5,
            stride: 2,
            pad: 2
        }
    );
    assert_eq!(s.output(0).h, 14);
    assert_eq!(s.output(2).h, 6);
}

#[test]
fn preset_shapes_match_the_seeds() {
    let flat_inputs = [
        ("mlp", 784),
        ("cnn1", 1600),
        ("cnn2", 128 * 3 * 3),
        ("regcnn", 1600),
        ("vgg", 128 * 7 * 7),
        ("fast", 128 * 3 * 3),
    ];
    for (name, features) in flat_inputs {
        let (spec, preset) = model::resolve(name).unwrap();
        assert!(preset.is_some());
        let first_linear = spec
            .layers
            .iter()
            .position(|l| matches!(l, Layer::Linear { .. }))
            .unwrap();
        assert_eq!(spec.input(first_linear).c, features, "{name}");
    }
    assert_eq!(PRESETS.len(), 6);
    // Parameter counts as PyTorch reports them for these models.
    let count = |name| {
        let (s, _) = model::resolve(name).unwrap();
        (0..s.layers.len()).map(|i| s.param_count(i)).sum::<usize>()
    };
    assert_eq!(count("mlp"), 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10);
    assert_eq!(
        count("vgg"),
        640 + 128 + 36928 + 128 + 73856 + 256 + 147584 + 256 + 6272 * 640 + 640 + 6410
    );
}

#[test]
fn syntax_errors_name_the_layer() {
    let cases = [
        ("conv(32) relu flatten linear(10)", "layer 0 `conv(32)`"),
        ("flatten linear(10 relu", "missing `)`"),
        ("flatten lineer(10)", "unknown layer"),
        ("flatten dropout(x) linear(10)", "p must be a number"),
        (
            "conv(a,3) flatten linear(10)",
            "out must be a non-negative integer",
        ),
    ];
    for (spec, needle) in cases {
        let err = ModelSpec::parse(spec).unwrap_err();
        assert!(err.to_string().contains(needle), "{spec}: {err}");
    }
}

#[test]
fn shape_errors_name_the_layer_and_the_shape() {
    let err = ModelSpec::parse("conv(8,3) linear(10)").unwrap_err();
    assert!(matches!(err, SpecError::Shape { index: 1, .. }));
    assert!(
        err.to_string().contains("8x26x26") && err.to_string().contains("flatten"),
        "{err}"
    );
    let err = ModelSpec::parse(
        "maxpool(2) maxpool(2) maxpool(2) maxpool(2) maxpool(2) flatten linear(10)",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("layer 4") && err.to_string().contains("1x1"),
        "{err}"
    );
    let err = ModelSpec::parse("flatten conv(3,3) linear(10)").unwrap_err();
    assert!(err.to_string().contains("layer 1"), "{err}");
    let err = ModelSpec::parse("flatten dropout(1.5) linear(10)").unwrap_err();
    assert!(err.to_string().contains("[0, 1)"), "{err}");
    assert!(matches!(
        ModelSpec::parse("flatten linear(7)"),
        Err(SpecError::Output { .. })
    ));
    assert!(matches!(ModelSpec::parse("   "), Err(SpecError::Empty)));
}

#[test]
fn init_follows_pytorch_bounds() {
    let (spec, _) = model::resolve("regcnn").unwrap();
    let p = spec.init_params(1);
    let bound = 1.0 / 9f32.sqrt(); // conv0: fan_in 1*3*3
    assert!(
        p[0].weight.iter().all(|w| w.abs() <= bound)
            && p[0].weight.iter().any(|w| w.abs() > bound * 0.9)
    );
    assert_eq!(p[1].weight, vec![1.0; 32]);
    assert_eq!(p[1].running_var, vec![1.0; 32]);
    let b = 1.0 / 1600f32.sqrt();
    assert!(p[11].weight.iter().all(|w| w.abs() <= b));
    assert_ne!(
        spec.init_params(2)[0].weight,
        p[0].weight,
        "seed changes the init"
    );
    assert_eq!(spec.init_params(1), p, "same seed, same init");
}

#[test]
fn summary_lists_every_layer_with_totals() {
    let (spec, _) = model::resolve("regcnn").unwrap();
    let text = wgpu_fmnist::net::summary(&spec);
    assert!(
        text.contains("64x5x5") && text.contains("1600") && text.contains("225,226"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2 + spec.layers.len() + 2);
}

#[test]
fn summary_shows_which_gpu_step_runs_each_layer() {
    let (spec, _) = model::resolve("regcnn").unwrap();
    let text = wgpu_fmnist::net::summary(&spec);
    let line = |i: usize| {
        text.lines()
            .find(|l| l.starts_with(&format!("{i:<4} ")))
            .unwrap_or_else(|| panic!("no row {i}:\n{text}"))
            .to_string()
    };
    // The batch norm, dropout and ReLU before the first pool run in its kernels (step 1).
    assert!(
        line(1).ends_with("1 (in the pool's kernels)"),
        "{}",
        line(1)
    );
    assert!(line(4).ends_with("  1"), "{}", line(4));
    assert!(line(10).ends_with("- (no kernel)"), "{}", line(10));
    // The ReLU after the first linear layer runs in its product (and, training, in the next
    // product's gradient).
    assert!(line(11).ends_with("  4"), "{}", line(11));
    assert!(
        line(12).ends_with("4 (in the linear layer's kernels)"),
        "{}",
        line(12)
    );
    assert!(text.contains("; 6 GPU steps"), "{text}");
    // cnn1's first block runs its forward as one kernel, in the convolution's step.
    let text = wgpu_fmnist::net::summary(&model::resolve("cnn1").unwrap().0);
    let row = |i: usize| {
        text.lines()
            .find(|l| l.starts_with(&format!("{i:<4} ")))
            .unwrap()
    };
    assert!(
        row(0).ends_with("0 (with the pool: one forward kernel)"),
        "{text}"
    );
    assert!(row(1).ends_with("1 (forward in step 0's kernel)"), "{text}");
    assert!(row(2).ends_with("1 (forward in step 0's kernel)"), "{text}");
    assert!(row(3).ends_with("  2"), "{text}");
}

#[test]
fn sizes_are_checked_before_anything_is_allocated() {
    // Each would ask the host for gigabytes (or overflow) before any GPU limit is seen.
    for (text, says) in [
        (
            "flatten linear(1000000000) linear(10)",
            "larger than any tensor",
        ),
        (
            "flatten linear(18446744073709551615) linear(10)",
            "larger than any tensor",
        ),
        (
            "conv(32,3,1,18446744073709551615) flatten linear(10)",
            "larger than any tensor",
        ),
        (
            "conv(100000,3) flatten linear(10)",
            "its weight has 676000000 elements",
        ),
    ] {
        let err = ModelSpec::parse(text).unwrap_err().to_string();
        assert!(err.contains(says) && err.contains("layer"), "{text}: {err}");
        assert!(
            !err.contains("batch"),
            "{text}: the batch is not the cause: {err}"
        );
    }
}

#[test]
fn oversize_batches_and_layers_are_clear_errors_from_the_cli() {
    let run = |args: &[&str]| {
        let r = std::process::Command::new(env!("CARGO_BIN_EXE_wgpu-fmnist"))
            .args(args)
            .output()
            .unwrap();
        (
            r.status.code(),
            String::from_utf8_lossy(&r.stderr).to_string(),
        )
    };
    // The batch is the cause: the error says which tensor and which flag.
    let (code, err) = run(&["bench", "--model", "mlp", "--batch-size", "100000000"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the input batch at batch 100000000") && err.contains("--batch-size"));
    let (code, err) = run(&[
        "summary",
        "--model",
        "flatten linear(1000000000) linear(10)",
    ]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn an_unbalanced_parenthesis_is_named() {
    let err = ModelSpec::parse("conv(3,3)) relu maxpool(2) flatten linear(10)")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`conv(3,3))`") && err.contains("closes no `(`"),
        "{err}"
    );
    let err = ModelSpec::parse("conv(3,3 relu").unwrap_err().to_string();
    assert!(err.contains("missing `)`"), "{err}");
}

/// `bench --json` saved, then `bench --compare` against it: every kernel of the step is
/// matched (same model and batch), ratios and speedups are real numbers, a different batch
/// is pointed out, and a bad file is a usage error naming it.
#[test]
fn bench_compares_with_a_saved_result() {
    let bench = |args: &[&str]| {
        let r = std::process::Command::new(env!("CARGO_BIN_EXE_wgpu-fmnist"))
            .args(["bench", "--model", "flatten linear(32) relu linear(10)"])
            .args(["--seconds", "0.2", "--json"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr).to_string();
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&r.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (r.status.code(), lines, stderr)
    };
    let dir = std::env::temp_dir().join(format!("wgpu-fmnist-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("base.json");
    let (code, lines, err) = bench(&[]);
    assert_eq!(code, Some(0), "{err}");
    // What else ran while it timed (Linux: from /proc), a share of the CPUs.
    if cfg!(target_os = "linux") {
        let share = lines.last().unwrap()["others_cpu_share"].as_f64();
        assert!(share.is_some_and(|x| (0.0..=1.0).contains(&x)), "{share:?}");
    }
    assert!(lines.last().unwrap()["augment_step_ratio"].is_null());
    let text: Vec<String> = lines.iter().map(|v| v.to_string()).collect();
    std::fs::write(&saved, text.join("\n")).unwrap();

    // With --augment, the step without it is timed in alternating windows: both are real
    // times, and the ratio is theirs (a ratio of medians is not the median of ratios, but
    // they cannot be far apart).
    let (code, lines, err) = bench(&["--augment", "affine(rotate=10) contrast(0.2) blur(k=3)"]);
    assert_eq!(code, Some(0), "{err}");
    let s = lines.last().unwrap();
    let plain = s["plain_step_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("{s}"));
    let ratio = s["augment_step_ratio"]
        .as_f64()
        .unwrap_or_else(|| panic!("{s}"));
    let step = s["step_seconds"].as_f64().unwrap();
    assert!(plain > 0.0 && step > 0.0 && ratio > 0.0, "{s}");
    assert!((ratio / (step / plain)).ln().abs() < 0.7, "{s}");
    let kernels = lines.len() - 1;

    let (code, lines, err) = bench(&["--compare", saved.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let (rows, summary) = lines.split_at(lines.len() - 1);
    assert!(!rows.is_empty() && rows.len() <= kernels, "{lines:?}");
    for row in rows {
        let ratio = row["ratio"].as_f64().unwrap_or_else(|| panic!("{row}"));
        assert!(ratio.is_finite() && ratio > 0.0, "{row}");
    }
    let s = &summary[0];
    for key in ["train_speedup", "infer_speedup"] {
        let x = s[key].as_f64().unwrap_or_else(|| panic!("{s}"));
        assert!(x.is_finite() && x > 0.0, "{s}");
    }
    // The same model, batch and adapter: nothing differs but, perhaps, the machine's load.
    let differences: Vec<&str> = s["differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d.as_str())
        .filter(|d| !d.starts_with("other processes took"))
        .collect();
    assert!(differences.is_empty(), "{s}");

    let (code, lines, err) = bench(&["--batch-size", "16", "--compare", saved.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let differences = lines.last().unwrap()["differences"].to_string();
    assert!(
        differences.contains("batch 32 then, 16 now"),
        "{differences}"
    );

    std::fs::write(&saved, "{\"kernel\":\"x\",\"seconds\":1}\n").unwrap();
    let (code, _, err) = bench(&["--compare", saved.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("base.json") && err.contains("no summary line"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_fast_preset_brings_its_recipe_and_flags_override_each_part() {
    use wgpu_fmnist::train::{PartialConfig, TrainConfig, Tta};
    let resolve = |p: PartialConfig| {
        TrainConfig::resolve(&PartialConfig {
            model: Some("fast".into()),
            ..p
        })
        .unwrap()
    };
    let cfg = resolve(PartialConfig::default());
    assert_eq!(cfg.optimizer, model::OptimizerKind::Sgd);
    assert!(cfg.nesterov);
    assert_eq!(cfg.schedule, "onecycle(pct=0.3,div=25,final_div=10000)");
    assert_eq!(cfg.label_smoothing, 0.1);
    assert_eq!(cfg.augment, "flip(p=0.5) shift(2)");
    assert_eq!(cfg.ema, Some(0.99));
    assert_eq!(cfg.tta, Tta::Flip);
    let plain = resolve(PartialConfig {
        nesterov: Some(false),
        schedule: Some("constant".into()),
        label_smoothing: Some(0.0),
        augment: Some("none".into()),
        ema: Some(0.0),
        tta: Some(Tta::None),
        ..PartialConfig::default()
    });
    assert!(!plain.nesterov);
    assert_eq!(plain.schedule, "constant");
    assert_eq!(plain.label_smoothing, 0.0);
    assert_eq!(plain.augment, "none");
    assert_eq!(plain.ema, None);
    assert_eq!(plain.tta, Tta::None);
    // A checkpoint's recorded config tells eval and predict which TTA its run scored.
    assert_eq!(Tta::recorded_in(&cfg.to_toml()), Tta::Flip);
    assert_eq!(Tta::recorded_in(&plain.to_toml()), Tta::None);
    assert_eq!(
        Tta::recorded_in(""),
        Tta::None,
        "no recorded config (PyTorch's)"
    );
    assert_eq!(Tta::recorded_in("tta = ["), Tta::None, "unreadable");
    // Another optimizer drops the preset's SGD settings, Nesterov among them.
    let adam = resolve(PartialConfig {
        optimizer: Some(model::OptimizerKind::Adam),
        ..PartialConfig::default()
    });
    assert!(!adam.nesterov && adam.momentum == 0.0);
    // The seeds' presets keep plain training.
    let regcnn = TrainConfig::resolve(&PartialConfig {
        model: Some("regcnn".into()),
        ..PartialConfig::default()
    })
    .unwrap();
    assert!(!regcnn.nesterov && regcnn.ema.is_none() && regcnn.tta == Tta::None);
    assert_eq!(
        (regcnn.schedule.as_str(), regcnn.augment.as_str()),
        ("constant", "none")
    );
}
