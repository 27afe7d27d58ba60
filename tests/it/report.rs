//! What a run shows people: curves.png every epoch, report.html at the end (and from
//! `report RUN_DIR`), the comparison page of several runs, and `summary --html/--svg`.
//! Pages are self-contained, escape user text and render in headless Chromium.

use crate::common::real_data;
use std::path::{Path, PathBuf};
use std::process::Command;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_wgpu-fmnist")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgpu-fmnist-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Trains a tiny run into `out/name` and returns its folder.
fn tiny_run(out: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let data = real_data().unwrap();
    let r = Command::new(binary())
        .args([
            "train",
            "--epochs",
            "2",
            "--limit-train",
            "700",
            "--val",
            "100",
        ])
        .args(["--limit-test", "300", "--quiet", "--name", name, "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    out.join(name)
}

/// Every `http` in a page must be an XML namespace name, never something fetched.
fn assert_self_contained(html: &str) {
    let mut rest = html;
    while let Some(i) = rest.find("http") {
        let tail = &rest[i..];
        assert!(
            tail.starts_with("http://www.w3.org/2000/svg")
                || tail.starts_with("http://www.w3.org/1999/xlink"),
            "the page refers to {}",
            &tail[..tail.len().min(80)]
        );
        rest = &tail[4..];
    }
    for fetch in ["<link", "@import", "src=\"//", "url(//"] {
        assert!(!html.contains(fetch), "the page has {fetch}");
    }
}

fn assert_png(path: &Path, width: u32, height: u32) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), (width, height), "{}", path.display());
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() > 20,
        "{} looks blank: {} colours",
        path.display(),
        colours.len()
    );
}

/// Loads `page` in headless Chromium: the rendered parts (body[data-rendered]), the
/// console errors, and a screenshot. None when Chromium is not installed (CI installs it).
fn chromium(page: &Path, shot: &Path) -> Option<(String, Vec<String>)> {
    let Some(exe) = crate::common::chromium() else {
        eprintln!("skipped the browser check: no chromium (CI installs Debian's chromium)");
        return None;
    };
    let profile = shot.with_extension("profile");
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let run = |extra: &[String]| {
        Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let dom = run(&["--dump-dom".to_string()]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot_run = run(&[
        format!("--screenshot={}", shot.display()),
        "--window-size=1280,4000".into(),
    ]);
    assert!(
        shot_run.status.success(),
        "{}",
        String::from_utf8_lossy(&shot_run.stderr)
    );
    let text = String::from_utf8_lossy(&dom.stdout).into_owned();
    let rendered = text
        .split("data-rendered=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_string();
    let logs = format!(
        "{}\n{}",
        String::from_utf8_lossy(&dom.stderr),
        String::from_utf8_lossy(&shot_run.stderr)
    );
    let errors = logs
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains(":ERROR:")))
        .map(str::to_string)
        .collect();
    Some((rendered, errors))
}

#[test]
fn a_run_writes_curves_and_a_report_that_renders() {
    if real_data().is_none() {
        return;
    }
    let out = tmp("run");
    // A name with markup: it must show as text, not run.
    let name = "<script>alert(1)";
    let run = tiny_run(&out, name, &["--model", "regcnn"]);
    assert_png(&run.join("curves.png"), 1200, 480);
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert_self_contained(&html);
    assert!(
        !html.contains("<script>alert"),
        "the run name was not escaped"
    );
    assert!(html.contains("&lt;script&gt;alert(1)"));
    for part in [
        "data-part=\"curves\"",
        "data-part=\"diagram\"",
        "data-part=\"confusion\"",
        "data-part=\"mistakes\"",
    ] {
        assert!(html.contains(part), "report.html lacks {part}");
    }
    // The test figures are those of the summary: same model, same 300 images.
    let test: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("test.json")).unwrap()).unwrap();
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(test["count"], 300);
    let (a, b) = (
        test["accuracy"].as_f64().unwrap(),
        summary["test_accuracy"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() < 0.5 / 300.0,
        "test.json accuracy {a} vs summary {b}"
    );
    let confusion: Vec<Vec<u64>> = serde_json::from_value(test["confusion"].clone()).unwrap();
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 300);
    // `report RUN_DIR` redraws both from the folder alone.
    std::fs::remove_file(run.join("report.html")).unwrap();
    std::fs::remove_file(run.join("curves.png")).unwrap();
    let r = Command::new(binary())
        .arg("report")
        .arg(&run)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(run.join("report.html").is_file() && run.join("curves.png").is_file());
    if let Some((rendered, errors)) = chromium(&run.join("report.html"), &out.join("report.png")) {
        assert!(errors.is_empty(), "console errors: {errors:?}");
        for part in ["curves", "diagram", "confusion", "mistakes"] {
            assert!(
                rendered.split(' ').any(|p| p == part),
                "{part} did not render: {rendered:?}"
            );
        }
        assert_png(&out.join("report.png"), 1280, 4000);
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn report_compares_runs_side_by_side() {
    if real_data().is_none() {
        return;
    }
    let out = tmp("compare");
    let a = tiny_run(&out, "plain", &["--model", "cnn1", "--lr", "0.002"]);
    let b = tiny_run(
        &out,
        "regularized",
        &["--model", "regcnn", "--augment", "affine(rotate=5) flip"],
    );
    let page = out.join("compare.html");
    let r = Command::new(binary())
        .arg("report")
        .arg(&a)
        .arg(&b)
        .arg("-o")
        .arg(&page)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&html);
    for text in [
        "plain",
        "regularized",
        "adam 0.002",
        "flip(p=0.5) affine(rotate=5",
        "batch norm",
        "dropout 0.2/0.2",
        "Ankle boot",
    ] {
        assert!(html.contains(text), "compare.html lacks {text}");
    }
    if let Some((rendered, errors)) = chromium(&page, &out.join("compare.png")) {
        assert!(errors.is_empty(), "console errors: {errors:?}");
        for part in ["runs", "curves", "per-class"] {
            assert!(
                rendered.split(' ').any(|p| p == part),
                "{part} did not render: {rendered:?}"
            );
        }
    }
    // Not a run folder: a clear error naming it.
    let r = Command::new(binary())
        .arg("report")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("not a run folder"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn summary_writes_the_architecture_as_html_and_svg() {
    let out = tmp("summary");
    let (html, svg) = (out.join("vgg.html"), out.join("vgg.svg"));
    let r = Command::new(binary())
        .args(["summary", "--model", "vgg", "--html"])
        .arg(&html)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert_self_contained(&page);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("conv block 4") && svg.contains("MaxPool 2×2"));
    if let Some((rendered, errors)) = chromium(&html, &out.join("vgg.png")) {
        assert!(errors.is_empty(), "console errors: {errors:?}");
        assert_eq!(rendered, "diagram");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn augment_preview_writes_a_grid_of_augmented_images() {
    if real_data().is_none() {
        return;
    }
    let out = tmp("preview");
    let png = out.join("grid.png");
    let r = Command::new(binary())
        .args([
            "augment-preview",
            "--augment",
            "affine(rotate=20,translate=0.1) erase(p=1) noise(0.05)",
            "--draws",
            "4",
        ])
        .arg("-o")
        .arg(&png)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // 10 classes x (original + 4 draws), 84-pixel cells with 2-pixel gaps.
    assert_png(&png, 5 * 86 + 2 + 4, 10 * 86 + 2);
    let img = image::open(&png).unwrap().to_luma8();
    let cell = |row: u32, col: u32| -> Vec<u8> {
        let (x0, y0) = (2 + col * 86 + if col > 0 { 4 } else { 0 }, 2 + row * 86);
        (0..84)
            .flat_map(|y| (0..84).map(move |x| (x, y)))
            .map(|(x, y)| img.get_pixel(x0 + x, y0 + y)[0])
            .collect()
    };
    for row in 0..10 {
        let original = cell(row, 0);
        for col in 1..5 {
            assert_ne!(
                cell(row, col),
                original,
                "row {row} draw {col} is not augmented"
            );
        }
    }
    let r = Command::new(binary())
        .args(["augment-preview", "--augment", "twirl(3)"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("unknown augmentation `twirl`"));
    let _ = std::fs::remove_dir_all(&out);
}
