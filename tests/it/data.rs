//! The IDX reader on good and bad files, data discovery, and the download path against a
//! local HTTP server (good files, a corrupted file, a missing file).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use wgpu_fmnist::data::{self, idx, DataError, Images};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgpu-fmnist-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn images(count: usize) -> Images {
    Images {
        count,
        rows: 28,
        cols: 28,
        pixels: (0..count * 784).map(|i| (i % 251) as u8).collect(),
    }
}

fn labels(count: usize) -> Vec<u8> {
    (0..count).map(|i| (i % 10) as u8).collect()
}

/// Writes a complete data directory (gzipped train, plain test) with the given counts.
fn write_dataset(dir: &Path, train: usize, test: usize) {
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gzip(&idx::encode_images(&images(train))),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte.gz"),
        gzip(&idx::encode_labels(&labels(train))),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx::encode_images(&images(test)),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        idx::encode_labels(&labels(test)),
    )
    .unwrap();
}

#[test]
fn reads_gzipped_and_plain_files() {
    let dir = tmpdir("good");
    write_dataset(&dir, 12, 5);
    let ds = data::load_dir(&dir).unwrap();
    assert_eq!(ds.train.len(), 12);
    assert_eq!(ds.test.len(), 5);
    assert_eq!(ds.train.images, images(12));
    assert_eq!(ds.test.labels, labels(5));
}

#[test]
fn wrong_magic_is_reported() {
    let dir = tmpdir("magic");
    let p = dir.join("x");
    // A label file where an image file is expected.
    std::fs::write(&p, idx::encode_labels(&labels(3))).unwrap();
    match idx::read_images(&p) {
        Err(e @ DataError::BadMagic { .. }) => assert!(e.to_string().contains("0x00000801"), "{e}"),
        other => panic!("expected BadMagic, got {other:?}"),
    }
}

#[test]
fn dimensions_whose_product_overflows_are_malformed() {
    // Found by `fuzz/run-all.sh` (target idx): 2^22 x 2^21 x 2^21 images wraps to 0 bytes
    // in 64 bits, so an unchecked product accepted a header-only file as 4 million images.
    let mut bytes = vec![0, 0, 8, 3];
    for d in [1u32 << 22, 1 << 21, 1 << 21] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    let err = idx::parse_images(Path::new("wrap"), &bytes).unwrap_err();
    assert!(matches!(err, DataError::Malformed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("more bytes than can exist"),
        "{err}"
    );
}

#[test]
fn truncated_files_are_reported() {
    let dir = tmpdir("trunc");
    let p = dir.join("x");
    let mut bytes = idx::encode_images(&images(4));
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&p, &bytes).unwrap();
    let err = idx::read_images(&p).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&p.display().to_string()),
        "the error names the file: {err}"
    );
    // Shorter than the header.
    std::fs::write(&p, &bytes[..10]).unwrap();
    assert!(matches!(
        idx::read_images(&p),
        Err(DataError::Truncated { .. })
    ));
    // A gzip stream cut short.
    let gz = gzip(&idx::encode_images(&images(4)));
    std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
    assert!(matches!(
        idx::read_images(&p),
        Err(DataError::BadGzip { .. })
    ));
}

#[test]
fn corrupt_gzip_is_reported() {
    let dir = tmpdir("gzip");
    let p = dir.join("x.gz");
    let mut gz = gzip(&idx::encode_images(&images(4)));
    let mid = gz.len() / 2;
    for b in &mut gz[mid..mid + 16] {
        *b ^= 0xa5;
    }
    std::fs::write(&p, &gz).unwrap();
    assert!(matches!(
        idx::read_images(&p),
        Err(DataError::BadGzip { .. })
    ));
}

#[test]
fn count_mismatch_is_reported() {
    let dir = tmpdir("count");
    write_dataset(&dir, 12, 5);
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        idx::encode_labels(&labels(6)),
    )
    .unwrap();
    match data::load_dir(&dir) {
        Err(DataError::CountMismatch {
            image_count: 5,
            label_count: 6,
            ..
        }) => {}
        other => panic!("expected CountMismatch, got {other:?}"),
    }
}

#[test]
fn label_out_of_range_is_reported() {
    let dir = tmpdir("label");
    let p = dir.join("labels");
    std::fs::write(&p, idx::encode_labels(&[0, 9, 10, 1])).unwrap();
    match idx::read_labels(&p, 10) {
        Err(DataError::LabelOutOfRange {
            index: 2,
            label: 10,
            ..
        }) => {}
        other => panic!("expected LabelOutOfRange, got {other:?}"),
    }
}

#[test]
fn wrong_image_size_and_missing_files_are_reported() {
    let dir = tmpdir("size");
    write_dataset(&dir, 3, 3);
    let small = Images {
        count: 3,
        rows: 8,
        cols: 8,
        pixels: vec![0; 192],
    };
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx::encode_images(&small),
    )
    .unwrap();
    assert!(matches!(
        data::load_dir(&dir),
        Err(DataError::WrongImageSize {
            rows: 8,
            cols: 8,
            ..
        })
    ));
    std::fs::remove_file(dir.join("t10k-images-idx3-ubyte")).unwrap();
    let err = data::find(Some(&dir), true).unwrap_err();
    assert!(err.to_string().contains("t10k-images-idx3-ubyte"), "{err}");
}

#[test]
fn real_fashion_mnist_loads_when_installed() {
    let dir = Path::new(data::DEBIAN_DIR);
    if !dir.is_dir() {
        eprintln!("skipped: {} not installed", dir.display());
        return;
    }
    let ds = data::load_dir(dir).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (60_000, 10_000));
    // Every class appears 6,000 times in train and 1,000 in test.
    for (split, per) in [(&ds.train, 6000), (&ds.test, 1000)] {
        let mut counts = [0; 10];
        for &l in &split.labels {
            counts[l as usize] += 1;
        }
        assert_eq!(counts, [per; 10]);
    }
}

/// Serves `files` (name -> bytes) over HTTP on 127.0.0.1 for `requests` requests.
fn serve(files: Vec<(String, Vec<u8>)>, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut s = stream.unwrap();
            // Read the whole request head before answering.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let req = String::from_utf8_lossy(&head);
            let path = req
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            match files.iter().find(|(name, _)| *name == path) {
                Some((_, body)) => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(body);
                }
                None => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    format!("http://{addr}/")
}

fn dataset_files() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "train-images-idx3-ubyte.gz".into(),
            gzip(&idx::encode_images(&images(20))),
        ),
        (
            "train-labels-idx1-ubyte.gz".into(),
            gzip(&idx::encode_labels(&labels(20))),
        ),
        (
            "t10k-images-idx3-ubyte.gz".into(),
            gzip(&idx::encode_images(&images(10))),
        ),
        (
            "t10k-labels-idx1-ubyte.gz".into(),
            gzip(&idx::encode_labels(&labels(10))),
        ),
    ]
}

fn md5_of(files: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(n, b)| (n.clone(), format!("{:x}", md5::compute(b))))
        .collect()
}

#[test]
fn download_fetches_and_verifies_files() {
    let files = dataset_files();
    let sums = md5_of(&files);
    let url = serve(files, 4);
    let dir = tmpdir("download");
    let sums_ref: Vec<(&str, &str)> = sums.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    data::download::fetch_all_with(&url, &dir, &sums_ref, true).unwrap();
    let ds = data::load_dir(&dir).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (20, 10));
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".part")));
}

#[test]
fn corrupted_download_is_rejected_and_removed() {
    let mut files = dataset_files();
    let sums = md5_of(&files);
    // The server sends a corrupted first file.
    files[0].1[40] ^= 0xff;
    let url = serve(files, 1);
    let dir = tmpdir("corrupt");
    let sums_ref: Vec<(&str, &str)> = sums.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let err = data::download::fetch_all_with(&url, &dir, &sums_ref, true).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err:?}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing may be left behind"
    );
}

#[test]
fn missing_file_on_the_server_is_an_http_error() {
    let url = serve(vec![], 1);
    let dir = tmpdir("404");
    let err =
        data::download::fetch_all_with(&url, &dir, &[("nothing.gz", "00")], true).unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");
}

#[test]
fn canonical_checksums_are_the_published_ones() {
    // From the Fashion-MNIST README (and torchvision): a typo here would reject good downloads.
    let sums: Vec<&str> = data::download::CHECKSUMS.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        sums,
        [
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310"
        ]
    );
}

#[test]
fn offline_without_data_lists_the_three_ways_to_get_it() {
    let dir = tmpdir("offline");
    let places = [dir.join("nowhere"), dir.join("also-nowhere")];
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    let err = data::find_in(
        None,
        None,
        &places,
        "http://127.0.0.1:9/",
        &dir.join("download"),
        true,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::NotFound { .. }), "{msg}");
    for needle in [
        "--data",
        "FMNIST_DATA",
        "apt-get install dataset-fashion-mnist",
        "downloaded into",
        "nowhere",
        "127.0.0.1:9",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in: {msg}");
    }
    // The download left nothing half-written behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("download"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A directory found in a standard place is used without downloading.
    let good = dir.join("good");
    std::fs::create_dir_all(&good).unwrap();
    write_dataset(&good, 3, 2);
    assert_eq!(
        data::find_in(
            None,
            None,
            &[places[0].clone(), good.clone()],
            "http://127.0.0.1:9/",
            &dir,
            true
        )
        .unwrap(),
        good
    );
}

#[test]
fn a_data_flag_that_is_no_folder_says_what_it_is() {
    let dir = tmpdir("not-a-folder");
    let file = dir.join("file.txt");
    std::fs::write(&file, b"x").unwrap();
    for (path, says) in [
        (dir.join("missing"), "does not exist"),
        (file, "is a file, not a folder"),
    ] {
        let err =
            data::find_in(Some(&path), None, &[], "http://127.0.0.1:9/", &dir, true).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(says) && msg.contains("--data"), "{msg}");
    }
}

#[test]
fn an_empty_split_is_a_data_error_from_the_cli() {
    // A valid IDX file with a count of 0 in either split: exit 4 (data) naming the file,
    // for train and for eval, rather than an internal kernel message.
    let binary = env!("CARGO_BIN_EXE_wgpu-fmnist");
    for (name, train, test, file) in [
        ("empty-train", 0, 5, "train-images-idx3-ubyte.gz"),
        ("empty-test", 20, 0, "t10k-images-idx3-ubyte"),
    ] {
        let dir = tmpdir(name);
        write_dataset(&dir, train, test);
        let out = dir.join("runs");
        let train_run = std::process::Command::new(binary)
            .args(["train", "--model", "mlp", "--val", "0", "--data"])
            .arg(&dir)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&train_run.stderr);
        assert_eq!(train_run.status.code(), Some(4), "{stderr}");
        assert!(
            stderr.contains(file) && stderr.contains("holds no images"),
            "{stderr}"
        );
        assert!(!out.exists(), "a failed start leaves no run folder");
        if test == 0 {
            // A missing checkpoint is named once, its OS error printed once.
            let ckpt = dir.join("model.safetensors");
            let missing = std::process::Command::new(binary)
                .args(["eval", "--data"])
                .arg(&dir)
                .arg("--checkpoint")
                .arg(&ckpt)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&missing.stderr);
            assert_eq!(missing.status.code(), Some(6), "{stderr}");
            assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
            let spec = wgpu_fmnist::model::resolve("mlp").unwrap().0;
            let model = wgpu_fmnist::checkpoint::Checkpoint {
                params: spec.init_params(1),
                spec,
                meta: Default::default(),
                optim: None,
            };
            wgpu_fmnist::checkpoint::save(&ckpt, &model).unwrap();
            let eval = std::process::Command::new(binary)
                .args(["eval", "--data"])
                .arg(&dir)
                .arg("--checkpoint")
                .arg(&ckpt)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&eval.stderr);
            assert_eq!(eval.status.code(), Some(4), "{stderr}");
            assert!(stderr.contains("holds no images"), "{stderr}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
