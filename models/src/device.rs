//! Torch device selection.
//!
//! vcnode links the CPU libtorch only (see DESIGN.md). CUDA support comes from loading
//! `libtorch_cuda.so` at run time, before the first torch call, from the dynamic loader's
//! search path (LD_LIBRARY_PATH pointing at a CUDA torch 2.11 `torch/lib`). Its static
//! initializers register the CUDA backend with libtorch, after which `tch::Cuda` sees the GPUs.

use std::fmt;
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
    /// `Ok(())` when libtorch_cuda.so was loaded, else why not.
    pub cuda_library: Result<(), String>,
    pub cuda_device_count: usize,
    pub cudnn: bool,
    /// The device inference would run on, or why the request cannot be met.
    pub resolved: Result<tch::Device, String>,
    /// A note for the log when `auto` fell back to CPU.
    pub fallback_note: Option<String>,
}

static CUDA_LIBRARY: OnceLock<Result<libloading::Library, String>> = OnceLock::new();

/// Loads libtorch_cuda.so once per process and keeps it loaded. Must run before the first
/// torch call for CUDA to register.
fn load_cuda_library() -> Result<(), String> {
    CUDA_LIBRARY
        // SAFETY: loading libtorch_cuda runs its static initializers, which register the CUDA
        // backend with the already-linked libtorch of the same version; nothing else runs.
        .get_or_init(|| unsafe { libloading::Library::new("libtorch_cuda.so") }.map_err(|e| e.to_string()))
        .as_ref()
        .map(|_| ())
        .map_err(|e| {
            format!("libtorch_cuda.so could not be loaded ({e}); put a CUDA torch 2.11 torch/lib on LD_LIBRARY_PATH")
        })
}

/// Resolves a device request: loads CUDA when the request may use it, counts devices, and
/// decides. Never panics; a request that cannot be met is an `Err` in `resolved`.
pub fn inspect(requested: DeviceRequest) -> DeviceReport {
    let cuda_library = match requested {
        DeviceRequest::Cpu => Err("not loaded: device = \"cpu\"".to_string()),
        _ => load_cuda_library(),
    };
    let cuda_device_count = if cuda_library.is_ok() {
        tch::Cuda::device_count() as usize
    } else {
        0
    };
    let cudnn = cuda_device_count > 0 && tch::Cuda::cudnn_is_available();
    let why_not = || match &cuda_library {
        Err(e) => e.clone(),
        Ok(()) => "libtorch_cuda.so loaded, but no CUDA device is visible".to_string(),
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
        cuda_library,
        cuda_device_count,
        cudnn,
        resolved,
        fallback_note,
    }
}

/// Resolves a request to a device, or the error that should stop start-up.
pub fn resolve(requested: DeviceRequest) -> Result<tch::Device, DeviceError> {
    let report = inspect(requested);
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
        let report = inspect(DeviceRequest::Cpu);
        assert_eq!(report.resolved, Ok(tch::Device::Cpu));
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).to_device(tch::Device::Cpu);
        assert_eq!(f64::try_from(t.sum(tch::Kind::Float)).unwrap(), 6.0);
    }

    #[test]
    fn auto_falls_back_to_cpu_with_a_reason_when_no_gpu() {
        let report = inspect(DeviceRequest::Auto);
        if report.cuda_device_count == 0 {
            assert_eq!(report.resolved, Ok(tch::Device::Cpu));
            assert!(report.fallback_note.is_some());
            // And an explicit CUDA request is an error, not a silent CPU run.
            assert!(resolve(DeviceRequest::Cuda(0)).is_err());
        }
    }
}
