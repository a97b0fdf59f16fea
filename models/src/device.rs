//! Torch device selection.
//!
//! vcnode links the CPU libtorch only (see the README). CUDA support comes from loading
//! `libtorch_cuda.so` at run time, before the first torch call; its static initializers
//! register the CUDA backend with libtorch, after which `tch::Cuda` sees the GPUs. It is looked
//! for, in order, in: the `VCNODE_TORCH_LIB` environment variable and then `[inference]
//! torch_lib` (a CUDA torch 2.11 `torch/lib` folder, e.g. an existing PyTorch install's), the
//! PyTorch that `scripts/setup.sh` installs on a machine with an NVIDIA driver
//! (`~/.cache/vcnode/pytorch-2.11.0`, see scripts/fetch-pytorch.sh), and last the dynamic
//! loader's search path (LD_LIBRARY_PATH). A `torch/lib` found by path brings its CUDA libraries
//! along: the wheel's RPATH names them relative to itself (`$ORIGIN/../../nvidia/...`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

/// The libtorch version this binary was built against (tch 0.24 pins torch 2.11).
pub const LIBTORCH_VERSION: &str = env!("VCNODE_LIBTORCH_VERSION");

/// The `[inference] device` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// CUDA when usable, else CPU (and say so).
    Auto,
    Cpu,
    /// A CUDA device by index (`cuda` means `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceRequest {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" => Ok(DeviceRequest::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceRequest::Cuda)
                .ok_or_else(|| DeviceError::Invalid(other.to_string())),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cpu => f.write_str("cpu"),
            DeviceRequest::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("invalid device {0:?}: expected auto, cpu, cuda or cuda:N")]
    Invalid(String),
    #[error("device {requested} requested, but CUDA is not usable: {reason}")]
    CudaUnavailable {
        requested: DeviceRequest,
        reason: String,
    },
    #[error("device cuda:{index} requested, but only {count} CUDA device(s) are visible")]
    NoSuchCudaDevice { index: usize, count: usize },
}

/// What `vcnode doctor` prints, and what inference will use.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    pub libtorch_version: &'static str,
    pub requested: DeviceRequest,
    /// Where libtorch_cuda.so was loaded from, else why not.
    pub cuda_library: Result<PathBuf, String>,
    /// The CUDA runtime libtorch uses (e.g. 13000), when CUDA is loaded.
    pub cuda_runtime: Option<i64>,
    pub cuda_device_count: usize,
    pub cudnn: bool,
    /// The device inference would run on, or why the request cannot be met.
    pub resolved: Result<tch::Device, String>,
    /// A note for the log when `auto` fell back to CPU.
    pub fallback_note: Option<String>,
}

static CUDA_LIBRARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The environment variable naming a CUDA torch 2.11 `torch/lib` folder.
pub const TORCH_LIB_ENV: &str = "VCNODE_TORCH_LIB";
const CUDA_LIBRARY_NAME: &str = "libtorch_cuda.so";

/// The folders that may hold `libtorch_cuda.so`, in the order they are tried (see the module
/// documentation); the loader's own search path comes after them.
pub fn torch_lib_candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os(TORCH_LIB_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    dirs.extend(configured.map(Path::to_path_buf));
    // The venv of scripts/fetch-pytorch.sh: lib/python3.X/site-packages/torch/lib. Only with
    // an NVIDIA driver: on other machines that venv is the benchmark's CPU peer, and loading
    // its CUDA libraries would only slow the start.
    let driver = Path::new("/proc/driver/nvidia/version").exists() || Path::new("/dev/nvidiactl").exists();
    if let Some(home) = std::env::var_os("HOME").filter(|_| driver) {
        let lib = Path::new(&home).join(".cache/vcnode/pytorch-2.11.0/lib");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("site-packages/torch/lib"))
            .filter(|p| p.join(CUDA_LIBRARY_NAME).is_file())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    dirs
}

/// Loads libtorch_cuda.so once per process and keeps it loaded (its path, or "the loader's
/// search path"). Must run before the first torch call for CUDA to register.
fn load_cuda_library(configured: Option<&Path>) -> Result<PathBuf, String> {
    CUDA_LIBRARY
        .get_or_init(|| {
            let mut tried = Vec::new();
            let candidates = torch_lib_candidates(configured)
                .into_iter()
                .map(|d| d.join(CUDA_LIBRARY_NAME))
                .chain(std::iter::once(PathBuf::from(CUDA_LIBRARY_NAME)));
            for path in candidates {
                // SAFETY: loading libtorch_cuda runs its static initializers, which register the
                // CUDA backend with the already-linked libtorch of the same version; nothing else runs.
                match unsafe { libloading::Library::new(&path) } {
                    Ok(lib) => {
                        // Kept loaded for the life of the process: the backend it registered
                        // points into it.
                        std::mem::forget(lib);
                        return Ok(path);
                    }
                    Err(e) => tried.push(format!("{}: {e}", path.display())),
                }
            }
            Err(format!(
                "libtorch_cuda.so could not be loaded ({}); on a machine with an NVIDIA driver \
                 scripts/setup.sh installs it, or set {TORCH_LIB_ENV} (or [inference] torch_lib) to a \
                 CUDA torch 2.11 torch/lib folder",
                tried.join("; ")
            ))
        })
        .clone()
}

/// What the machine says about its NVIDIA GPUs, without torch: the kernel driver's version,
/// the GPUs' names, and the CUDA version the driver supports (from libcuda).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuInfo {
    pub driver: Option<String>,
    pub gpus: Vec<String>,
    pub cuda_driver_api: Option<String>,
}

/// Reads [`GpuInfo`] from /proc/driver/nvidia and libcuda.so.1; empty on a machine without the
/// NVIDIA driver.
pub fn gpu_info() -> GpuInfo {
    let driver = std::fs::read_to_string("/proc/driver/nvidia/version")
        .ok()
        .and_then(|v| {
            // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 ..."
            let line = v.lines().next()?;
            let rest = line.split("Kernel Module").nth(1)?;
            rest.split_whitespace().next().map(str::to_string)
        });
    let mut gpus: Vec<String> = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("information")).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
        })
        .collect();
    gpus.sort();
    GpuInfo {
        driver,
        gpus,
        cuda_driver_api: cuda_driver_version(),
    }
}

/// cuDriverGetVersion from libcuda.so.1 (the driver's CUDA version, e.g. "13.0").
fn cuda_driver_version() -> Option<String> {
    // SAFETY: libcuda's initializers only set up the driver API; cuDriverGetVersion writes one
    // int and needs no cuInit.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").ok()?;
        let get: libloading::Symbol<unsafe extern "C" fn(*mut i32) -> i32> =
            lib.get(b"cuDriverGetVersion\0").ok()?;
        let mut v = 0i32;
        (get(&mut v) == 0).then(|| format!("{}.{}", v / 1000, (v % 1000) / 10))
    }
}

/// Resolves a device request: loads CUDA when the request may use it, counts devices, and
/// decides. Never panics; a request that cannot be met is an `Err` in `resolved`.
pub fn inspect(requested: DeviceRequest, torch_lib: Option<&Path>) -> DeviceReport {
    let cuda_library = match requested {
        DeviceRequest::Cpu => Err("not loaded: device = \"cpu\"".to_string()),
        _ => load_cuda_library(torch_lib),
    };
    let cuda_device_count = if cuda_library.is_ok() {
        tch::Cuda::device_count() as usize
    } else {
        0
    };
    let cudnn = cuda_device_count > 0 && tch::Cuda::cudnn_is_available();
    let why_not = || match &cuda_library {
        Err(e) => e.clone(),
        Ok(_) => "libtorch_cuda.so loaded, but no CUDA device is visible".to_string(),
    };
    let mut fallback_note = None;
    let resolved = match requested {
        DeviceRequest::Cpu => Ok(tch::Device::Cpu),
        DeviceRequest::Auto if cuda_device_count > 0 => Ok(tch::Device::Cuda(0)),
        DeviceRequest::Auto => {
            fallback_note = Some(format!("device = \"auto\": using CPU ({})", why_not()));
            Ok(tch::Device::Cpu)
        }
        DeviceRequest::Cuda(_) if cuda_device_count == 0 => Err(DeviceError::CudaUnavailable {
            requested,
            reason: why_not(),
        }
        .to_string()),
        DeviceRequest::Cuda(index) if index >= cuda_device_count => Err(DeviceError::NoSuchCudaDevice {
            index,
            count: cuda_device_count,
        }
        .to_string()),
        DeviceRequest::Cuda(index) => Ok(tch::Device::Cuda(index)),
    };
    DeviceReport {
        libtorch_version: LIBTORCH_VERSION,
        requested,
        cuda_runtime: (cuda_device_count > 0).then(tch::utils::version_cudart),
        cuda_library,
        cuda_device_count,
        cudnn,
        resolved,
        fallback_note,
    }
}

/// Resolves a request to a device, or the error that should stop start-up.
pub fn resolve(requested: DeviceRequest, torch_lib: Option<&Path>) -> Result<tch::Device, DeviceError> {
    let report = inspect(requested, torch_lib);
    if let Some(note) = &report.fallback_note {
        tracing::info!("{note}");
    }
    report
        .resolved
        .map_err(|reason| DeviceError::CudaUnavailable { requested, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_settings() {
        assert_eq!("auto".parse::<DeviceRequest>().unwrap(), DeviceRequest::Auto);
        assert_eq!("cpu".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
        assert_eq!("cuda".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cuda(3));
        assert!("gpu".parse::<DeviceRequest>().is_err());
        assert!("cuda:x".parse::<DeviceRequest>().is_err());
    }

    #[test]
    fn cpu_always_resolves_and_tensors_work_there() {
        let report = inspect(DeviceRequest::Cpu, None);
        assert_eq!(report.resolved, Ok(tch::Device::Cpu));
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).to_device(tch::Device::Cpu);
        assert_eq!(f64::try_from(t.sum(tch::Kind::Float)).unwrap(), 6.0);
    }

    #[test]
    fn auto_falls_back_to_cpu_with_a_reason_when_no_gpu() {
        let report = inspect(DeviceRequest::Auto, None);
        if report.cuda_device_count == 0 {
            assert_eq!(report.resolved, Ok(tch::Device::Cpu));
            assert!(report.fallback_note.is_some());
            // And an explicit CUDA request is an error, not a silent CPU run.
            assert!(resolve(DeviceRequest::Cuda(0), None).is_err());
        }
    }
}
