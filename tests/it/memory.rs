//! Device memory stays flat: every epoch of a run, and every repeated eval, predict and
//! bench call, ends with the allocator holding exactly what it held after the first one.
//! Each test makes its own device, so that tests running beside it do not move its counts.

use crate::common::synthetic;
use std::path::PathBuf;
use wgpu_fmnist::checkpoint::{Checkpoint, Meta};
use wgpu_fmnist::data::Dataset;
use wgpu_fmnist::gpu::{AdapterRequest, Gpu, GpuMemory};
use wgpu_fmnist::model::{resolve, OptimizerKind};
use wgpu_fmnist::train::{self, report::Silent, PartialConfig, TrainConfig};

fn own_gpu() -> Gpu {
    Gpu::new(&AdapterRequest::default()).expect("a GPU adapter for the tests")
}

fn memory(gpu: &Gpu) -> GpuMemory {
    gpu.memory()
        .expect("the Vulkan backend reports its allocator (lavapipe included)")
}

fn checkpoint(model: &str) -> Checkpoint {
    let spec = resolve(model).unwrap().0;
    Checkpoint {
        params: spec.init_params(3),
        spec,
        meta: Meta::default(),
        optim: None,
    }
}

#[test]
fn training_memory_is_flat_after_the_first_epoch() {
    let gpu = own_gpu();
    let data = Dataset {
        dir: PathBuf::from("synthetic"),
        train: synthetic(300, 1),
        test: synthetic(100, 2),
    };
    // regcnn: batch norm, dropout and the pool fusion; 250 training images at batch 32 end
    // on a partial batch, so both step plans run every epoch.
    let cfg = TrainConfig::resolve(&PartialConfig {
        model: Some("regcnn".into()),
        epochs: Some(4),
        val: Some(50),
        ..Default::default()
    })
    .unwrap();
    let before = memory(&gpu);
    let outcome = train::train(&gpu, &cfg, &data, &mut Silent).unwrap();
    let per_epoch: Vec<GpuMemory> = outcome
        .history
        .iter()
        .map(|h| h.gpu_memory.expect("each epoch records device memory"))
        .collect();
    assert_eq!(per_epoch.len(), 4);
    assert!(per_epoch[0].allocated_bytes > before.allocated_bytes);
    for (epoch, m) in per_epoch.iter().enumerate().skip(1) {
        assert_eq!(
            *m,
            per_epoch[0],
            "device memory after epoch {} differs from after epoch 1",
            epoch + 1
        );
    }
    // The run's buffers are released when it returns (wgpu may also have dropped a
    // buffer of its own that `before` still counted, hence at most).
    assert!(memory(&gpu).allocated_bytes <= before.allocated_bytes);
}

#[test]
fn eval_predict_and_bench_release_what_they_allocate() {
    let gpu = own_gpu();
    let ckpt = checkpoint("regcnn");
    let split = synthetic(300, 4);
    let images: Vec<Vec<u8>> = split
        .images
        .pixels
        .chunks(784)
        .map(|c| c.to_vec())
        .collect();
    let before = memory(&gpu);
    // Each kind of call once, then again: the second and third calls must end where the
    // first ended, and nothing a call allocates outlives it.
    let mut after_first: Option<GpuMemory> = None;
    let mut check = |what: &str, round: usize| {
        let now = memory(&gpu);
        assert!(
            now.allocated_bytes <= before.allocated_bytes,
            "{what} call {round} left {} bytes allocated (before: {})",
            now.allocated_bytes,
            before.allocated_bytes
        );
        match after_first {
            None => after_first = Some(now),
            Some(first) => assert_eq!(now, first, "device memory after {what} call {round}"),
        }
    };
    for round in 1..=3 {
        let report = wgpu_fmnist::infer::evaluate(&gpu, &ckpt, &split, 128).unwrap();
        assert_eq!(report.count, 300);
        check("eval", round);
        let probs = wgpu_fmnist::infer::predict(&gpu, &ckpt, &images, false).unwrap();
        assert_eq!(probs.len(), 300);
        check("predict", round);
    }
    for round in 1..=2 {
        let r = wgpu_fmnist::bench::run(
            &gpu,
            &resolve("mlp").unwrap().0,
            32,
            OptimizerKind::Adam,
            &Default::default(),
            0.05,
        )
        .unwrap();
        assert!(r.train_images_per_second > 0.0);
        check("bench", round);
    }
}

/// Resident memory of a process, from /proc (Linux).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    Some(
        kb.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?
            * 1024,
    )
}

#[test]
fn training_host_memory_is_flat_with_every_augmentation() {
    // The process's own memory, not only the device's: a driver can leak on the host for
    // every dispatch of one kernel (SwiftShader did, ~50 MB/s, for the contrast and blur
    // pass while it passed arrays between functions). Every item, through the CLI; the
    // resident size is read at each epoch line and may not grow after the first epoch.
    let Some(data) = crate::common::real_data() else {
        return;
    };
    if !cfg!(target_os = "linux") {
        return;
    }
    let out = tempfile_dir("host-memory");
    let every_item = "flip vflip shift(2) resized_crop(scale=0.5:1) \
        affine(rotate=15,translate=0.1,scale=0.9:1.1,shear=5) perspective(0.3) brightness(0.2) \
        contrast(0.3) blur(k=5,p=0.7) noise(0.05) erase(p=0.5)";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wgpu-fmnist"))
        .args([
            "train",
            "--model",
            "mlp",
            "--epochs",
            "6",
            "--limit-train",
            "1184",
        ])
        .args([
            "--val",
            "160",
            "--limit-test",
            "100",
            "--json",
            "--augment",
            every_item,
        ])
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut resident = Vec::new();
    for line in std::io::BufRead::lines(stdout) {
        let line = line.unwrap();
        if line.contains("\"kind\":\"epoch\"") {
            resident.push(resident_bytes(pid).expect("/proc/PID/status has VmRSS"));
        }
    }
    let status = child.wait_with_output().unwrap();
    assert!(
        status.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(resident.len(), 6, "one epoch line per epoch");
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "resident MiB after each epoch: {:?}",
        resident.iter().map(|&b| mib(b).round()).collect::<Vec<_>>()
    );
    // Epoch 2 on: five epochs of 32 steps, each with every augmentation pass. A leak of a
    // few hundred bytes per dispatch stays under this; SwiftShader's grew by megabytes.
    let grown = resident[5] as i64 - resident[1] as i64;
    assert!(
        grown < 24 << 20,
        "resident memory grew by {:.1} MiB from epoch 2 to epoch 6",
        grown as f64 / (1 << 20) as f64
    );
    let _ = std::fs::remove_dir_all(&out);
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-fmnist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
