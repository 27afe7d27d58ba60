//! Kernel choice measured on the adapter instead of guessed.
//!
//! Where a shape has more than one applicable variant (`kernels::select`), the first use of
//! that shape on an adapter times each of them (a warm-up call, then a few calls) on scratch
//! buffers of the shape and keeps the fastest. Choices are kept per adapter, driver and
//! kernel source in `kernel-choices.json` in the user's cache directory
//! (`$WGPU_FMNIST_CACHE_DIR`, else `$XDG_CACHE_HOME/wgpu-fmnist`, else
//! `~/.cache/wgpu-fmnist`; `%LOCALAPPDATA%\wgpu-fmnist` on Windows), so later runs start at
//! once and choose alike. A file that cannot be read or parsed is ignored and rewritten; a
//! stored choice that no longer applies is measured again. A shape's key carries a digest of
//! its family's shaders (`matmul*.wgsl`, `conv2d*.wgsl`): a changed family is measured
//! again and the others keep their choices. The file keeps the choices of the last
//! `KEEP_VERSIONS` versions of each family's shaders that wrote to it, so two builds in use on
//! one machine do not erase each other's choices, and it does not grow with every version;
//! its name carries its format, so a program that writes another format keeps its own file.
//!
//! `select`'s thresholds stay the fallback order: without a tuner (the library's default;
//! the CLI turns it on unless `WGPU_FMNIST_TUNE=0`), where timing fails, and under
//! `--variant`, which wins wherever it applies.

use super::select::Variant;
use crate::gpu::{Dispatch, Gpu, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Rounds of timing after the warm-up: each round times every candidate once, in turn, and a
/// candidate's time is its fastest round. Interleaving the candidates means a moment of load
/// on the machine slows one round of all of them, not every call of one; with two calls of
/// each candidate back to back, a busy moment once made a 2.3x slower variant win
/// (`matmul_nt4` for mlp's first layer, 4.4 ms per step instead of 1.9).
const ROUNDS: usize = 3;
/// A candidate more than this many times slower than the fastest on the probe is not timed
/// at full size.
const PROBE_MARGIN: f64 = 4.0;

/// The size a candidate is built at: the shape itself, or a small probe of it (a few
/// images of a convolution, a few rows of a product) that shows the hopeless candidates
/// before they cost seconds a call: on lavapipe vgg's generic and tiled convolutions take
/// 3-8 s a call where the subgroup one takes 0.2 s, and timing them at full size made the
/// first vgg run spend ~100 s of its 150 s of tuning in their warm-ups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Full,
    Probe,
}

/// The cache file's format; a file of another format is ignored and rewritten.
/// (1: one digest of every shader in the adapter key; 2: a digest per family in each shape
/// key; 3: and the order in which each family's versions were last written, in a file of its
/// own: a format-2 program dropped every other version's entries on each write.)
const FORMAT: u64 = 3;
/// Versions of a family's shaders whose choices the file keeps (per adapter): the one that
/// writes, and the ones that wrote last before it.
const KEEP_VERSIONS: usize = 3;

pub struct Tuner {
    /// Adapter and driver: choices made under another key do not apply.
    adapter_key: String,
    /// None: choices live only as long as the process.
    path: Option<PathBuf>,
    choices: Mutex<BTreeMap<String, Variant>>,
    /// Shapes measured by this process (reported by the CLI).
    measured: Mutex<usize>,
    /// Told once, before this process measures its first shape (the CLI prints it: a first
    /// run of a large model can spend a minute measuring on lavapipe).
    notice: Option<Notice>,
    /// False: never time anything; the fallback (`select`'s fixed order) wherever nothing is
    /// pinned or stored (`WGPU_FMNIST_TUNE=0`).
    measure: bool,
    /// Choices that win over everything else where they apply: a resumed run's recorded
    /// ones, so that it continues with the kernels (and summation orders) it started with.
    pinned: Mutex<BTreeMap<String, Variant>>,
    /// Every choice this process made, for the run folder (`used`).
    used: Mutex<BTreeMap<String, Variant>>,
    /// Pinned shapes whose variant does not apply here (another adapter): what changed.
    unpinned: Mutex<Vec<String>>,
}

/// Where the tuner's one line goes.
type Notice = Box<dyn Fn(&str) + Send + Sync>;

impl Tuner {
    /// The tuner attached to `gpu` (`attach`), if any.
    pub fn of(gpu: &Gpu) -> Option<&Tuner> {
        gpu.kernel_choices.as_deref()?.downcast_ref()
    }

    pub fn of_mut(gpu: &mut Gpu) -> Option<&mut Tuner> {
        gpu.kernel_choices.as_deref_mut()?.downcast_mut()
    }

    /// Makes `gpu`'s kernel choices this tuner's.
    pub fn attach(self, gpu: &mut Gpu) {
        gpu.kernel_choices = Some(Box::new(self));
    }

    /// `gpu` choosing kernel variants by timing them on its adapter, with the choices kept
    /// in the file at `cache`.
    pub fn measuring(mut gpu: Gpu, cache: Option<PathBuf>) -> Gpu {
        Tuner::open(&gpu, cache).attach(&mut gpu);
        gpu
    }

    /// The tuner of `gpu`'s adapter with the choices stored at `path` (if any).
    pub fn open(gpu: &Gpu, path: Option<PathBuf>) -> Tuner {
        let adapter_key = adapter_key(&gpu.info);
        let choices = path
            .as_deref()
            .map(|p| read_choices(p, &adapter_key))
            .unwrap_or_default();
        Tuner {
            adapter_key,
            path,
            choices: Mutex::new(choices),
            measured: Mutex::new(0),
            notice: None,
            measure: true,
            pinned: Mutex::default(),
            used: Mutex::default(),
            unpinned: Mutex::default(),
        }
    }

    /// A tuner that measures nothing and stores nothing: `select`'s fixed order, with the
    /// choices still recorded and pinnable (the CLI's `WGPU_FMNIST_TUNE=0`).
    pub fn fixed(gpu: &Gpu) -> Tuner {
        Tuner {
            measure: false,
            ..Tuner::open(gpu, None)
        }
    }

    /// Whether this tuner times candidates (false: `fixed`).
    pub fn measures(&self) -> bool {
        self.measure
    }

    /// The adapter and driver the choices belong to.
    pub fn adapter_key(&self) -> &str {
        &self.adapter_key
    }

    /// Makes `choices` win wherever they apply (a resumed run's recorded choices).
    pub fn pin(&self, choices: BTreeMap<String, Variant>) {
        lock(&self.pinned).extend(choices);
    }

    /// Every choice made so far by this process, shape key -> variant.
    pub fn used(&self) -> BTreeMap<String, Variant> {
        lock(&self.used).clone()
    }

    /// Pinned shapes that had to be chosen anew because their variant does not apply on
    /// this adapter.
    pub fn unpinned(&self) -> Vec<String> {
        lock(&self.unpinned).clone()
    }

    /// The default cache file, if there is a place for it.
    pub fn default_path() -> Option<PathBuf> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let dir = var("WGPU_FMNIST_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("wgpu-fmnist")))
            .or_else(|| var("LOCALAPPDATA").map(|d| d.join("wgpu-fmnist")))
            .or_else(|| var("HOME").map(|d| d.join(".cache").join("wgpu-fmnist")))?;
        Some(dir.join(format!("kernel-choices-v{FORMAT}.json")))
    }

    /// Calls `tell` with a line saying what is happening before the first measurement.
    pub fn set_notice(&mut self, tell: impl Fn(&str) + Send + Sync + 'static) {
        self.notice = Some(Box::new(tell));
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Shapes this process has timed.
    pub fn measured(&self) -> usize {
        *lock(&self.measured)
    }

    /// The stored choice for `key`, if it is still one of `candidates`.
    pub fn stored(&self, key: &str, candidates: &[Variant]) -> Option<Variant> {
        lock(&self.choices)
            .get(key)
            .copied()
            .filter(|v| candidates.contains(v))
    }

    /// The fastest of `candidates` for the shape `key`: stored, or timed now with
    /// `build(variant, size)` (the shape's dispatches on scratch buffers, or a probe's) and
    /// stored. `fallback` where there is nothing to choose or no candidate could be timed.
    pub fn choose(
        &self,
        gpu: &Gpu,
        key: String,
        candidates: &[Variant],
        fallback: Variant,
        build: impl Fn(Variant, Size) -> Result<Vec<Dispatch>>,
    ) -> Variant {
        if candidates.len() < 2 {
            return fallback;
        }
        let choice = self.choose_unrecorded(gpu, &key, candidates, fallback, build);
        lock(&self.used).insert(key, choice);
        choice
    }

    fn choose_unrecorded(
        &self,
        gpu: &Gpu,
        key: &str,
        candidates: &[Variant],
        fallback: Variant,
        build: impl Fn(Variant, Size) -> Result<Vec<Dispatch>>,
    ) -> Variant {
        let key = key.to_string();
        if let Some(&v) = lock(&self.pinned).get(&key) {
            if candidates.contains(&v) {
                return v;
            }
            lock(&self.unpinned).push(key.clone());
        }
        if let Some(v) = self.stored(&key, candidates) {
            return v;
        }
        if !self.measure {
            return fallback;
        }
        if *lock(&self.measured) == 0 {
            if let Some(tell) = &self.notice {
                tell(&format!(
                    "measuring the fastest kernels for these shapes on this adapter (once: the \
                     choices are kept in {})",
                    self.path
                        .as_deref()
                        .map_or("memory".into(), |p| p.display().to_string())
                ));
            }
        }
        // The fallback first: a slow candidate is cut short against it.
        let mut order = vec![fallback];
        order.extend(candidates.iter().copied().filter(|&v| v != fallback));
        // The probe drops the candidates far behind the fastest (one that cannot be probed
        // stays in).
        let probed: Vec<(Variant, f64)> = order
            .iter()
            .filter_map(|&v| probe(gpu, &build, v).map(|t| (v, t)))
            .collect();
        let fastest = probed.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        order.retain(|v| {
            probed
                .iter()
                .find(|p| p.0 == *v)
                .is_none_or(|p| p.1 <= PROBE_MARGIN * fastest)
        });
        let build = |v| build(v, Size::Full);
        let mut timed: Vec<(Variant, Vec<Dispatch>, f64)> = Vec::new();
        for v in order {
            let limit = timed.iter().map(|t| t.2).fold(f64::INFINITY, f64::min);
            if let Some((dispatches, warm)) = warm_up(gpu, &build, v, limit) {
                timed.push((v, dispatches, warm));
            }
        }
        for _ in 0..ROUNDS {
            for (_, dispatches, best) in timed.iter_mut() {
                let refs: Vec<&Dispatch> = dispatches.iter().collect();
                if let Ok((times, _)) = crate::gpu::timing::time_each(gpu, &refs, 1) {
                    *best = best.min(times.iter().sum());
                }
            }
        }
        let best = timed
            .iter()
            .min_by(|a, b| a.2.total_cmp(&b.2))
            .map(|t| (t.2, t.0));
        let Some((_, choice)) = best else {
            return fallback;
        };
        lock(&self.choices).insert(key.clone(), choice);
        *lock(&self.measured) += 1;
        self.save(&key, choice);
        choice
    }

    /// Adds one choice to the file, merged with what other processes stored meanwhile (a
    /// choice already there is kept: every run after the first chooses alike).
    fn save(&self, key: &str, choice: Variant) {
        let Some(path) = &self.path else { return };
        let mut file = read_file(path);
        // This family's version moves to the end of the adapter's list; a family keeps its
        // last KEEP_VERSIONS versions, and only their entries are kept.
        let recent = file.recent.entry(self.adapter_key.clone()).or_default();
        if let Some(version) = version_of(key) {
            recent.retain(|v| *v != version);
            recent.push(version);
        }
        let mut kept: Vec<String> = Vec::new();
        for v in recent.iter().rev() {
            let family = v.split(' ').next().unwrap_or_default();
            let newer = kept.iter().filter(|k| k.split(' ').next() == Some(family));
            if newer.count() < KEEP_VERSIONS {
                kept.push(v.clone());
            }
        }
        recent.retain(|v| kept.contains(v));
        let entry = file.adapters.entry(self.adapter_key.clone()).or_default();
        entry.retain(|k, _| version_of(k).is_some_and(|v| kept.contains(&v)));
        entry.entry(key.to_string()).or_insert(choice);
        // The cache is an optimisation: a read-only or full disk costs the next run a
        // re-measurement, never this one its result.
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(text) = serde_json::to_string_pretty(&file) {
            let _ = crate::fsutil::write_atomic(path, text.as_bytes());
        }
    }
}

/// A run's kernel choices (`kernel-choices.json` in its folder): the adapter they were made
/// on and every shape's variant, so that `train --resume` continues with the same kernels,
/// on another machine or with another cache too, wherever they apply.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RunChoices {
    pub adapter: String,
    pub choices: BTreeMap<String, Variant>,
}

impl RunChoices {
    pub const FILE: &'static str = "kernel-choices.json";

    /// The record in a run folder; None if there is none or it cannot be read (a run from
    /// before the record existed, or a damaged file: then the choices are made anew).
    pub fn read(run_dir: &Path) -> Option<RunChoices> {
        let text = std::fs::read_to_string(run_dir.join(Self::FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Adds the choices `tuner` made to the folder's record (those of earlier sessions of
    /// the run stay) and writes it atomically.
    pub fn update(run_dir: &Path, tuner: &Tuner) -> std::io::Result<()> {
        let mut record = Self::read(run_dir).unwrap_or_default();
        record.adapter = tuner.adapter_key.clone();
        record.choices.extend(tuner.used());
        let text = serde_json::to_string_pretty(&record).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&run_dir.join(Self::FILE), text.as_bytes())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seconds of one call of `v` at probe size, after a call that compiles and warms it.
fn probe(
    gpu: &Gpu,
    build: &impl Fn(Variant, Size) -> Result<Vec<Dispatch>>,
    v: Variant,
) -> Option<f64> {
    let dispatches = build(v, Size::Probe).ok()?;
    let refs: Vec<&Dispatch> = dispatches.iter().collect();
    gpu.run(&refs).ok()?;
    let (times, _) = crate::gpu::timing::time_each(gpu, &refs, 1).ok()?;
    Some(times.iter().sum())
}

/// `v`'s dispatches after one call (compilation, first touches), with that call's seconds;
/// None if they cannot be built or run, or if that call alone took over 4x `limit`.
fn warm_up(
    gpu: &Gpu,
    build: &impl Fn(Variant) -> Result<Vec<Dispatch>>,
    v: Variant,
    limit: f64,
) -> Option<(Vec<Dispatch>, f64)> {
    let dispatches = build(v).ok()?;
    let refs: Vec<&Dispatch> = dispatches.iter().collect();
    let start = web_time::Instant::now();
    gpu.run(&refs).ok()?;
    let seconds = start.elapsed().as_secs_f64();
    if seconds > 4.0 * limit {
        return None;
    }
    Some((dispatches, seconds))
}

/// Adapter, backend and driver.
fn adapter_key(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} ({:?}, {:?}) driver {} {}",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    )
}

/// A digest of the sources of kernel family `family`'s shaders (those whose name starts
/// with it: `conv2d` covers conv2d, conv2d_subgroup, conv2d_tiled, ...).
fn family_digest(family: &str) -> String {
    let mut sources = md5::Context::new();
    for s in crate::gpu::SHADERS {
        if s.name.starts_with(family) {
            sources.consume(s.source.as_bytes());
        }
    }
    format!("{:x}", sources.finalize())
}

/// The version of its family's shaders a shape key was made under: "family digest".
fn version_of(key: &str) -> Option<String> {
    let mut words = key.split(' ');
    match (words.next(), words.next()) {
        (Some(family), Some(digest)) if digest.len() == 32 => Some(format!("{family} {digest}")),
        _ => None,
    }
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    format: u64,
    /// Adapter key -> shape key -> variant.
    adapters: BTreeMap<String, BTreeMap<String, Variant>>,
    /// Adapter key -> the shader versions ("family digest") that wrote, most recent last.
    #[serde(default)]
    recent: BTreeMap<String, Vec<String>>,
}

/// The file's contents, or an empty cache if it is missing, unreadable, of another format
/// or damaged (it is then rewritten whole by the next save).
fn read_file(path: &Path) -> CacheFile {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<CacheFile>(&text).ok())
        .filter(|f| f.format == FORMAT)
        .unwrap_or(CacheFile {
            format: FORMAT,
            ..CacheFile::default()
        })
}

fn read_choices(path: &Path, adapter_key: &str) -> BTreeMap<String, Variant> {
    read_file(path)
        .adapters
        .remove(adapter_key)
        .unwrap_or_default()
}

/// The key of a shape: the kernel family, the digest of its shaders, the pass and every
/// dimension.
pub fn shape_key(family: &str, shape: &impl std::fmt::Debug) -> String {
    format!("{family} {} {shape:?}", family_digest(family))
}
