//! Download of the canonical Fashion-MNIST files with MD5 verification. The canonical
//! mirror serves plain HTTP, so a small HTTP/1.1 client over `TcpStream` is all we need (no
//! TLS stack to compile). Files land as `NAME.part` and are renamed only once verified, so
//! an interrupted or corrupt download never looks like data.

use super::DataError;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// The mirror torchvision and the Fashion-MNIST README use.
pub const CANONICAL_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

/// (file, published MD5 of the .gz file)
pub const CHECKSUMS: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "25c81989df183df01b3e8a0aad5dffbe",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "bef4ecab320f06d8554ea6380940ec79",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ),
];

/// `$FMNIST_MIRROR` (an http:// base URL ending in '/') or the canonical mirror.
pub fn base_url() -> String {
    std::env::var("FMNIST_MIRROR").unwrap_or_else(|_| CANONICAL_URL.to_string())
}

/// Downloads the four files from `base` into `dir`, checking each against `CHECKSUMS`.
pub fn fetch_all(base: &str, dir: &Path, quiet: bool) -> Result<(), DataError> {
    fetch_all_with(base, dir, &CHECKSUMS, quiet)
}

/// As `fetch_all` with explicit checksums (tests serve their own files).
pub fn fetch_all_with(
    base: &str,
    dir: &Path,
    sums: &[(&str, &str)],
    quiet: bool,
) -> Result<(), DataError> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    for (name, md5) in sums {
        let dest = dir.join(name);
        if dest.is_file() && file_md5(&dest)? == *md5 {
            continue;
        }
        let url = format!(
            "{}{}",
            if base.ends_with('/') {
                base.to_string()
            } else {
                format!("{base}/")
            },
            name
        );
        let part = dir.join(format!("{name}.part"));
        let result = fetch(&url, &part, quiet).and_then(|()| {
            let got = file_md5(&part)?;
            if got != *md5 {
                return Err(DataError::Checksum {
                    path: dest.clone(),
                    expected: md5.to_string(),
                    got,
                });
            }
            std::fs::rename(&part, &dest).map_err(|e| DataError::io(&dest, e))
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        result?;
    }
    Ok(())
}

fn file_md5(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    Ok(format!("{:x}", md5::compute(bytes)))
}

fn err(url: &str, message: impl Into<String>) -> DataError {
    DataError::Download {
        url: url.to_string(),
        message: message.into(),
    }
}

/// GET `url` (http:// only, following up to 5 redirects) into `dest`.
pub fn fetch(url: &str, dest: &Path, quiet: bool) -> Result<(), DataError> {
    let mut url = url.to_string();
    for _ in 0..5 {
        match get(&url, dest, quiet)? {
            None => return Ok(()),
            Some(location) => url = location,
        }
    }
    Err(err(&url, "too many redirects"))
}

/// One request. Returns the redirect target, if any.
fn get(url: &str, dest: &Path, quiet: bool) -> Result<Option<String>, DataError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| err(url, "only http:// URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = hostport.split(':').next().unwrap_or(hostport);
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| err(url, format!("cannot resolve {hostport}: {e}")))?
        .next()
        .ok_or_else(|| err(url, format!("no address for {hostport}")))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(10))
        .map_err(|e| err(url, e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| err(url, e.to_string()))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wgpu-fmnist\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| err(url, e.to_string()))?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .map_err(|e| err(url, e.to_string()))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err(url, format!("malformed HTTP status line {status_line:?}")))?;
    let mut length: Option<u64> = None;
    let mut location = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| err(url, e.to_string()))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => length = v.parse().ok(),
                "location" => location = Some(v.to_string()),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
    }
    if (300..400).contains(&status) {
        return location
            .map(Some)
            .ok_or_else(|| err(url, format!("HTTP {status} without a Location")));
    }
    if status != 200 {
        return Err(err(url, format!("HTTP {status}")));
    }
    let bar = if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(length.unwrap_or(0))
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(
        dest.file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".part").to_string())
            .unwrap_or_default(),
    );
    if !quiet && bar.is_hidden() {
        crate::errln!("downloading {url}");
    }
    let mut body = Vec::new();
    if chunked {
        read_chunked(&mut reader, &mut body).map_err(|e| err(url, e.to_string()))?;
    } else {
        let mut buf = [0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).map_err(|e| err(url, e.to_string()))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
            bar.set_position(body.len() as u64);
        }
    }
    bar.finish_and_clear();
    if let Some(len) = length {
        if body.len() as u64 != len {
            return Err(err(
                url,
                format!("connection closed after {} of {len} bytes", body.len()),
            ));
        }
    }
    std::fs::write(dest, &body).map_err(|e| DataError::io(dest, e))?;
    Ok(None)
}

fn read_chunked(reader: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            return Ok(());
        }
        let start = out.len();
        out.resize(start + size, 0);
        reader.read_exact(&mut out[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}
