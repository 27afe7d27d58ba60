//! Measured kernel choice (`kernels::tune`): what a tuned device computes is what the
//! variant it chose computes when forced (and matches the reference), and the cache file is
//! reused, re-measures stale entries, and survives damage.

use crate::common::*;
use wgpu_fmnist::gpu::{AdapterRequest, Gpu, Variant};
use wgpu_fmnist::kernels::conv2d::{self, Conv2dShape, Pass};
use wgpu_fmnist::kernels::matmul::{self, LinearShape};
use wgpu_fmnist::kernels::select;
use wgpu_fmnist::kernels::tune::{shape_key, Size, Tuner};

fn cache_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-fmnist-tune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("kernel-choices-v3.json")
}

#[test]
fn tuned_choices_compute_what_the_forced_variants_do() {
    let path = cache_file("forced");
    let tuned = Tuner::measuring(
        Gpu::new(&AdapterRequest::default()).unwrap(),
        Some(path.clone()),
    );
    let tuner = Tuner::of(&tuned).unwrap();
    let mut r = rng(11);

    // The regcnn classifier's first layer at batch 32, and its 3x3 convolution at batch 4.
    let s = LinearShape {
        batch: 32,
        inputs: 1600,
        outputs: 128,
    };
    let (x, w, b) = (
        r.vec(32 * 1600, -1.0, 1.0),
        r.vec(128 * 1600, -0.025, 0.025),
        r.vec(128, -0.025, 0.025),
    );
    let (tx, tw, tb) = (
        tuned.upload("x", &x).unwrap(),
        tuned.upload("w", &w).unwrap(),
        tuned.upload("b", &b).unwrap(),
    );
    let linear = |v: Variant| {
        let y = tuned.zeros("y", 32 * 128).unwrap();
        let d = matmul::linear_forward_with(&tuned, v, s, &tx, &tw, &tb, &y).unwrap();
        tuned.run(&d.iter().collect::<Vec<_>>()).unwrap();
        tuned.read::<f32>(&y).unwrap()
    };
    let auto = linear(Variant::Auto);
    let applicable = select::matmul::applicable(&tuned.caps, &s.forward(), true);
    let chosen = tuner
        .stored(&shape_key("matmul", &(s.forward(), true)), &applicable)
        .expect("the shape was measured and stored");
    assert_eq!(
        auto,
        linear(chosen),
        "auto ({chosen}) differs from --variant {chosen}"
    );
    let mut want = vec![0.0; 32 * 128];
    matmul::linear_forward_reference(&mut want, &x, &w, &b, s);
    assert_kernel_close("tuned linear forward", &auto, &want);

    let c = Conv2dShape {
        n: 4,
        ci: 32,
        h: 13,
        w: 13,
        co: 64,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: 0,
    };
    let (x, w, b) = (
        r.vec(c.input_len(), -1.0, 1.0),
        r.vec(c.weight_len(), -0.06, 0.06),
        r.vec(c.co, -0.06, 0.06),
    );
    let (tx, tw, tb) = (
        tuned.upload("x", &x).unwrap(),
        tuned.upload("w", &w).unwrap(),
        tuned.upload("b", &b).unwrap(),
    );
    let conv = |v: Variant| {
        let y = tuned.zeros("y", c.output_len()).unwrap();
        let plan = conv2d::conv2d_forward_with(&tuned, v, c, &tx, &tw, &tb, &y).unwrap();
        tuned.run(&plan.iter().collect::<Vec<_>>()).unwrap();
        tuned.read::<f32>(&y).unwrap()
    };
    let auto = conv(Variant::Auto);
    let applicable = select::conv2d::applicable(&tuned.caps, &c);
    let chosen = tuner
        .stored(&shape_key("conv2d", &(c, Pass::Forward)), &applicable)
        .expect("the convolution was measured and stored");
    assert_eq!(
        auto,
        conv(chosen),
        "auto ({chosen}) differs from --variant {chosen}"
    );
    let mut want = vec![0.0; c.output_len()];
    conv2d::conv2d_forward_reference(&mut want, &x, &w, &b, c);
    assert_kernel_close("tuned conv2d forward", &auto, &want);
    assert_eq!(tuner.measured(), 2);

    // `--variant` decides where it applies: nothing is measured or stored for it.
    let forced = Tuner::measuring(
        Gpu::new(&AdapterRequest::default())
            .unwrap()
            .prefer(Variant::Generic)
            .unwrap(),
        Some(cache_file("forced-generic")),
    );
    let y = forced.zeros("y", c.output_len()).unwrap();
    let (fx, fw, fb) = (
        forced.upload("x", &x).unwrap(),
        forced.upload("w", &w).unwrap(),
        forced.upload("b", &b).unwrap(),
    );
    let plan = conv2d::conv2d_forward(&forced, c, &fx, &fw, &fb, &y).unwrap();
    assert!(
        plan[0].label().starts_with("conv2d::conv2d_forward "),
        "{}",
        plan[0].label()
    );
    assert_eq!(Tuner::of(&forced).unwrap().measured(), 0);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn the_cache_is_reused_rewritten_when_damaged_and_remeasured_when_stale() {
    let path = cache_file("file");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "{ not json").unwrap();
    let g = gpu();
    let s = LinearShape {
        batch: 8,
        inputs: 64,
        outputs: 16,
    }
    .forward();
    let key = shape_key("matmul", &(s, true));
    let applicable = select::matmul::applicable(&g.caps, &s, true);
    assert!(applicable.len() >= 2, "{applicable:?}");
    let build =
        |v: Variant, _: Size| -> wgpu_fmnist::gpu::Result<Vec<wgpu_fmnist::gpu::Dispatch>> {
            let (a, b, bias, c) = (
                zeros("a", 8 * 64),
                zeros("b", 64 * 16),
                zeros("bias", 16),
                zeros("c", 8 * 16),
            );
            matmul::matmul_with(g, v, s, &a, &b, Some(&bias), &c)
        };

    // A damaged file is ignored, then rewritten whole with the new choice; the notice comes
    // once, before the measurement.
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut t = Tuner::open(g, Some(path.clone()));
    let log = told.clone();
    t.set_notice(move |line| log.lock().unwrap().push(line.to_string()));
    let first = t.choose(g, key.clone(), &applicable, Variant::Generic, build);
    assert!(applicable.contains(&first));
    assert_eq!(t.measured(), 1);
    let _ = t.choose(g, key.clone(), &applicable, Variant::Generic, build);
    let lines = told.lock().unwrap().clone();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("measuring") && lines[0].contains(&path.display().to_string()));
    let text = std::fs::read_to_string(&path).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let stored = file["adapters"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_eq!(stored[&key], first.to_string(), "{text}");

    // The next process reuses it without measuring (a build would panic) or a notice.
    let mut t = Tuner::open(g, Some(path.clone()));
    t.set_notice(|line| panic!("nothing is measured, yet: {line}"));
    let again = t.choose(g, key.clone(), &applicable, Variant::Generic, |_, _| {
        panic!("a stored choice must not be measured again")
    });
    assert_eq!((again, t.measured()), (first, 0));

    // A stored choice is used as it is (here the slowest kind)...
    std::fs::write(&path, text.replace(&format!("\"{first}\""), "\"generic\"")).unwrap();
    let t = Tuner::open(g, Some(path.clone()));
    assert_eq!(t.stored(&key, &applicable), Some(Variant::Generic));
    // ...unless it no longer applies to the shape: then it is measured again.
    std::fs::write(&path, text.replace(&format!("\"{first}\""), "\"3x3\"")).unwrap();
    let t = Tuner::open(g, Some(path.clone()));
    let remeasured = t.choose(g, key.clone(), &applicable, Variant::Generic, build);
    assert!(applicable.contains(&remeasured));
    assert_eq!(t.measured(), 1);

    // A file of another format is ignored too.
    assert!(text.contains("\"format\": 3"), "{text}");
    std::fs::write(&path, text.replace("\"format\": 3", "\"format\": 99")).unwrap();
    let t = Tuner::open(g, Some(path.clone()));
    assert_eq!(t.stored(&key, &applicable), None);

    // Keys carry their family's shader digest: a choice stored under other matmul shaders
    // is not used. When the file is written, each family keeps the entries of its last 3
    // versions (the writer's and the 2 that wrote before it), so two builds in use do not
    // erase each other's choices; older versions and unknown keys are dropped, and other
    // families are untouched.
    let digest = key.split(' ').nth(1).unwrap().to_string();
    assert_eq!(digest.len(), 32, "{key}");
    let version = |d: char| d.to_string().repeat(32);
    let old_key = |d: char| key.replace(&digest, &version(d));
    let other_family = shape_key("conv2d", &(1, 2));
    let conv_version = other_family
        .split(' ')
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let section = format!(
        "\"{}\": \"generic\", \"{}\": \"generic\", \"{}\": \"generic\", \"{other_family}\": \"generic\", \"matmul bad\": \"generic\"",
        old_key('1'),
        old_key('2'),
        old_key('3'),
    );
    let recent = format!(
        "\"matmul {}\", \"matmul {}\", \"{conv_version}\", \"matmul {}\"",
        version('1'),
        version('2'),
        version('3'),
    );
    let adapter = file["adapters"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    std::fs::write(
        &path,
        format!(
            "{{\"format\": 3, \"adapters\": {{\"{adapter}\": {{{section}}}}}, \"recent\": {{\"{adapter}\": [{recent}]}}}}"
        ),
    )
    .unwrap();
    let t = Tuner::open(g, Some(path.clone()));
    assert_eq!(t.stored(&key, &applicable), None);
    let chosen = t.choose(g, key.clone(), &applicable, Variant::Generic, build);
    assert_eq!(t.measured(), 1);
    let text = std::fs::read_to_string(&path).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let stored = file["adapters"][&adapter].as_object().unwrap();
    let mut keys: Vec<&String> = stored.keys().collect();
    keys.sort();
    let mut want = vec![&key, &other_family];
    let (two, three) = (old_key('2'), old_key('3'));
    want.extend([&two, &three]);
    want.sort();
    assert_eq!(keys, want, "{text}");
    assert_eq!(stored[&key], chosen.to_string(), "{text}");
    assert_eq!(stored[&other_family], "generic", "{text}");
    let order: Vec<&str> = file["recent"][&adapter]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mine = format!("matmul {digest}");
    let (v2, v3) = (
        format!("matmul {}", version('2')),
        format!("matmul {}", version('3')),
    );
    assert_eq!(
        order,
        [
            v2.as_str(),
            conv_version.as_str(),
            v3.as_str(),
            mine.as_str()
        ],
        "{text}"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
