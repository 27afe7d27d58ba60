//! What `auto` picks, pinned: lavapipe's choices for the presets' shapes (what CI and most
//! runs use), a hardware GPU's, and `--variant` overriding only where it applies.

use wgpu_fmnist::kernels::conv2d::Conv2dShape;
use wgpu_fmnist::kernels::matmul::LinearShape;
use wgpu_fmnist::kernels::select::{self, conv2d::Pass, Caps, Variant};

fn conv(n: usize, ci: usize, hw: usize, co: usize, pad: usize) -> Conv2dShape {
    Conv2dShape {
        n,
        ci,
        h: hw,
        w: hw,
        co,
        kh: 3,
        kw: 3,
        stride: 1,
        pad,
    }
}

/// (layer, shape, [forward, input gradient, weight gradient] on lavapipe)
fn preset_convs() -> Vec<(&'static str, Conv2dShape, [Variant; 3])> {
    use Variant::{Conv3x3 as C3, Subgroup as Sg};
    vec![
        // One input channel: too few lanes for the subgroup input/weight gradients.
        (
            "regcnn conv1 (batch 32)",
            conv(32, 1, 28, 32, 0),
            [Sg, C3, C3],
        ),
        ("regcnn conv2", conv(32, 32, 13, 64, 0), [Sg, Sg, Sg]),
        (
            "cnn1 conv2 (batch 64)",
            conv(64, 32, 13, 64, 0),
            [Sg, Sg, Sg],
        ),
        ("cnn2 conv1", conv(64, 1, 28, 32, 1), [Sg, C3, C3]),
        ("cnn2 conv3", conv(64, 64, 7, 128, 1), [Sg, Sg, Sg]),
        ("vgg conv2", conv(64, 64, 28, 64, 1), [Sg, Sg, Sg]),
        ("vgg conv4", conv(64, 128, 14, 128, 1), [Sg, Sg, Sg]),
        // 8 output channels or fewer: the plain 3x3 kernel (measured faster).
        ("narrow conv", conv(32, 1, 28, 8, 0), [C3, C3, C3]),
    ]
}

#[test]
fn lavapipe_choices_for_the_preset_convolutions_are_pinned() {
    for (what, s, want) in preset_convs() {
        for (pass, want) in select::conv2d::PASSES.into_iter().zip(want) {
            let got = select::conv2d::choose(&Caps::LAVAPIPE, &s, pass);
            assert_eq!(got, want, "{what} {pass:?}");
        }
    }
    // Not 3x3 stride 1: the generic kernel.
    let mut s = conv(32, 3, 28, 16, 0);
    s.stride = 2;
    assert_eq!(
        select::conv2d::choose(&Caps::LAVAPIPE, &s, Pass::Forward),
        Variant::Generic
    );
}

#[test]
fn hardware_choices_are_tiled_for_large_products_only() {
    let big = conv(64, 64, 28, 64, 1);
    for pass in select::conv2d::PASSES {
        assert_eq!(
            select::conv2d::choose(&Caps::HARDWARE, &big, pass),
            Variant::Tiled
        );
    }
    // A 3x3 product under 64x64 outputs: the register-blocked kernel.
    let small = conv(1, 1, 6, 4, 0);
    assert_eq!(
        select::conv2d::choose(&Caps::HARDWARE, &small, Pass::Forward),
        Variant::Conv3x3
    );
    // No subgroup kernels without 8-wide subgroups.
    assert!(!select::conv2d::applicable(&Caps::HARDWARE, &big).contains(&Variant::Subgroup));
}

#[test]
fn lavapipe_choices_for_the_preset_linear_layers_are_pinned() {
    use Variant::{Subgroup as Sg, Vec4 as V4};
    // (batch, in, out) -> [forward, input gradient, weight gradient]
    let cases = [
        ((32, 784, 128), [Sg, Sg, Sg]),  // mlp layer 1
        ((32, 64, 10), [Sg, Sg, Sg]),    // mlp classifier
        ((32, 1600, 128), [Sg, Sg, Sg]), // regcnn / cnn1 first linear
        ((1, 784, 128), [V4, V4, Sg]),   // batch 1: fewer rows than a subgroup tile
        ((64, 6272, 640), [Sg, Sg, Sg]), // vgg first linear
    ];
    for ((batch, inputs, outputs), want) in cases {
        let s = LinearShape {
            batch,
            inputs,
            outputs,
        };
        let got = [
            select::matmul::choose(&Caps::LAVAPIPE, &s.forward(), true),
            select::matmul::choose(&Caps::LAVAPIPE, &s.backward_input(), false),
            select::matmul::choose(&Caps::LAVAPIPE, &s.backward_weight(), false),
        ];
        assert_eq!(got, want, "linear {batch}x{inputs}->{outputs}");
    }
}

#[test]
fn hardware_splits_long_products_on_few_tiles() {
    use Variant::{SplitK as Sk, Tiled as T, Vec4 as V4};
    // (batch, in, out) -> [forward, input gradient, weight gradient]
    let cases = [
        ((32, 1600, 128), [Sk, T, T]), // regcnn / cnn1 first linear: 2 tiles, K 1600
        ((64, 6272, 640), [Sk, T, T]), // vgg first linear: 10 tiles; dx has 98
        ((32, 784, 128), [T, T, T]),   // mlp layer 1: K 784 does not pay for a dispatch
        ((1024, 1600, 128), [T, T, T]), // 32 tiles: enough workgroups already
        ((32, 64, 10), [V4, V4, V4]),  // under 64x64 outputs
    ];
    for ((batch, inputs, outputs), want) in cases {
        let s = LinearShape {
            batch,
            inputs,
            outputs,
        };
        let got = [
            select::matmul::choose(&Caps::HARDWARE, &s.forward(), true),
            select::matmul::choose(&Caps::HARDWARE, &s.backward_input(), false),
            select::matmul::choose(&Caps::HARDWARE, &s.backward_weight(), false),
        ];
        assert_eq!(got, want, "linear {batch}x{inputs}->{outputs}");
    }
    // Applicable (for the tuner and --variant split-k) up to 64 tiles with two slices.
    let s = LinearShape {
        batch: 32,
        inputs: 784,
        outputs: 128,
    };
    assert_eq!(select::matmul::split_k_chunk(&s.forward()), Some(144));
    let short = LinearShape {
        batch: 32,
        inputs: 200,
        outputs: 128,
    };
    assert_eq!(select::matmul::split_k_chunk(&short.forward()), None);
}

#[test]
fn a_preferred_variant_applies_only_where_it_can() {
    let generic = Caps {
        prefer: Variant::Generic,
        ..Caps::LAVAPIPE
    };
    let s = conv(32, 32, 13, 64, 0);
    let l = LinearShape {
        batch: 32,
        inputs: 1600,
        outputs: 128,
    };
    assert_eq!(
        select::conv2d::choose(&generic, &s, Pass::Forward),
        Variant::Generic
    );
    assert_eq!(
        select::matmul::choose(&generic, &l.forward(), true),
        Variant::Generic
    );
    assert_eq!(select::batchnorm::choose(&generic, 169), Variant::Generic);
    assert_eq!(
        select::batchnorm::choose(&Caps::LAVAPIPE, 196),
        Variant::Vec4
    );
    // `3x3` on a strided convolution: the automatic choice there.
    let prefer_3x3 = Caps {
        prefer: Variant::Conv3x3,
        ..Caps::LAVAPIPE
    };
    let mut strided = s;
    strided.stride = 2;
    assert_eq!(
        select::conv2d::choose(&prefer_3x3, &strided, Pass::Forward),
        Variant::Generic
    );
    assert_eq!(
        select::conv2d::choose(&prefer_3x3, &s, Pass::Forward),
        Variant::Conv3x3
    );
    // Subgroups are refused up front where the adapter lacks 8-wide ones.
    assert!(Caps::HARDWARE.supports(Variant::Subgroup).is_err());
    assert!(Caps::LAVAPIPE.supports(Variant::Subgroup).is_ok());
}

#[test]
fn grids_split_over_two_dimensions_at_the_device_limit() {
    let caps = Caps {
        max_workgroups: 100,
        ..Caps::LAVAPIPE
    };
    assert_eq!(caps.grid(64 * 100, 64), [100, 1, 1]);
    let [x, y, _] = caps.grid(64 * 101, 64);
    assert!(x <= 100 && y == 2 && x * y >= 101);
}
