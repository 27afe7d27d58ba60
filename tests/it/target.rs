//! `--target-accuracy` and time to accuracy: the run stops at the first epoch whose
//! validation reaches the target, and records (metrics.jsonl, the summary, report.html,
//! compare.html) the training and wall time at which it did; a resumed run keeps counting.

use crate::common::real_data;
use serde_json::Value;
use std::process::Command;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_wgpu-fmnist")
}

fn lines(path: &std::path::Path, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == kind)
        .collect()
}

#[test]
fn target_accuracy_stops_the_run_and_records_when_it_was_reached() {
    let Some(data) = real_data() else { return };
    let out = std::env::temp_dir().join(format!("wgpu-fmnist-target-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let train = |args: &[&str]| {
        let r = Command::new(binary())
            .args(["train", "--json"])
            .args(args)
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr).into_owned();
        assert_eq!(r.status.code(), Some(0), "{args:?}: {err}");
        let stdout = String::from_utf8_lossy(&r.stdout).into_owned();
        serde_json::from_str::<Value>(stdout.lines().last().unwrap()).unwrap()
    };
    let small = [
        "--model",
        "mlp",
        "--limit-train",
        "3000",
        "--val",
        "1000",
        "--limit-test",
        "500",
    ];
    // 65 % is reached within a few epochs of 2,000 images; 6 would be allowed.
    let args: Vec<&str> = small
        .iter()
        .copied()
        .chain(["--epochs", "6", "--target-accuracy", "65", "--name", "t"])
        .collect();
    let summary = train(&args);
    let epochs = lines(&out.join("t/metrics.jsonl"), "epoch");
    let first = epochs
        .iter()
        .position(|e| e["val_accuracy"].as_f64().unwrap() * 100.0 >= 65.0)
        .expect("an epoch reached 65 %");
    assert_eq!(
        epochs.len(),
        first + 1,
        "stopped at the first epoch at the target"
    );
    assert_eq!(summary["epochs"], first + 1);
    assert_eq!(summary["reached_target"], true);
    assert_eq!(summary["stopped_early"], false);
    let e = &epochs[first];
    let summed: f64 = epochs.iter().map(|e| e["seconds"].as_f64().unwrap()).sum();
    let total = e["train_seconds_total"].as_f64().unwrap();
    assert!((total - summed).abs() < 1e-9, "{total} vs {summed}");
    assert_eq!(
        summary["seconds_to_val_accuracy"]["65"].as_f64(),
        Some(total)
    );
    let wall = summary["wall_seconds_to_val_accuracy"]["65"]
        .as_f64()
        .unwrap();
    assert_eq!(Some(wall), e["wall_seconds_total"].as_f64());
    assert!(wall >= total, "{wall} < {total}");
    // Milestones not reached are absent, not zero.
    assert!(
        summary["seconds_to_val_accuracy"].get("94").is_none(),
        "{summary}"
    );
    let report = std::fs::read_to_string(out.join("t/report.html")).unwrap();
    assert!(
        report.contains(&format!("65 %: {total:.1} s")),
        "report.html"
    );
    assert!(report.contains("94 %: –"), "report.html");

    // An unreached target: every epoch runs; the resumed epochs keep adding to the totals.
    let args: Vec<&str> = small
        .iter()
        .copied()
        .chain(["--epochs", "1", "--target-accuracy", "99.5", "--name", "r"])
        .collect();
    let first_run = train(&args);
    assert_eq!(first_run["reached_target"], false);
    let run_dir = out.join("r");
    let r = Command::new(binary())
        .args(["train", "--json", "--epochs", "2", "--resume"])
        .arg(&run_dir)
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let epochs = lines(&run_dir.join("metrics.jsonl"), "epoch");
    assert_eq!(epochs.len(), 2);
    let f = |i: usize, k: &str| epochs[i][k].as_f64().unwrap();
    let both = f(0, "seconds") + f(1, "seconds");
    assert!((f(1, "train_seconds_total") - both).abs() < 1e-9);
    assert!(f(1, "wall_seconds_total") > f(0, "wall_seconds_total"));
    // compare.html: the training seconds to 90..94 % per run ("–" where not reached).
    let page = out.join("compare.html");
    let compare = Command::new(binary())
        .arg("report")
        .arg(out.join("t"))
        .arg(&run_dir)
        .arg("--out")
        .arg(&page)
        .output()
        .unwrap();
    assert_eq!(
        compare.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&compare.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("s to 90/91/92/93/94 %"), "compare.html");
    assert!(html.contains("<td>– / – / – / – / –</td>"), "compare.html");
    let _ = std::fs::remove_dir_all(&out);
}
