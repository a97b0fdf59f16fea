//! bf16 autocast for training on CUDA: inside an [`Bf16Autocast`] scope, CUDA operations that
//! autocast lists (convolutions, matrix products) run in bfloat16 while the weights, the
//! optimizer and the precision-sensitive operations (losses, norms, softmax) stay in f32, as
//! `torch.autocast("cuda", dtype=torch.bfloat16)` does in PyTorch. bf16 keeps f32's exponent
//! range, so no loss scaling is needed (unlike f16).
//!
//! tch exposes autocast only with its default CUDA dtype (f16), through libtorch calls that
//! are deprecated (and warn on every use); the current per-device calls of `at::autocast` are
//! not wrapped by torch-sys, so they are bound here by their symbols in libtorch_cpu (the same
//! libtorch 2.11 tch is pinned to). The enums they take are `int8_t` in C++.

use tch::Kind;

// c10::DeviceType::CUDA and the c10::ScalarType codes (c10/core/ScalarType.h).
const CUDA: i8 = 1;
const SCALAR_HALF: i8 = 5;
const SCALAR_FLOAT: i8 = 6;
const SCALAR_BFLOAT16: i8 = 15;

// None of these throws: they read and write thread-local state.
extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device: i8) -> i8;
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device: i8) -> bool;
    #[link_name = "_ZN2at8autocast17increment_nestingEv"]
    fn at_increment_nesting() -> i32;
    #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
    fn at_decrement_nesting() -> i32;
    #[link_name = "_ZN2at8autocast11clear_cacheEv"]
    fn at_clear_cache();
}

/// The dtype CUDA autocast casts to on this thread.
pub fn cuda_autocast_kind() -> Option<Kind> {
    // SAFETY: reads a thread-local setting; no tensor is involved.
    match unsafe { at_get_autocast_dtype(CUDA) } {
        SCALAR_BFLOAT16 => Some(Kind::BFloat16),
        SCALAR_HALF => Some(Kind::Half),
        SCALAR_FLOAT => Some(Kind::Float),
        _ => None,
    }
}

/// Whether CUDA autocast is on for this thread.
pub fn cuda_autocast_enabled() -> bool {
    // SAFETY: reads a thread-local flag.
    unsafe { at_is_autocast_enabled(CUDA) }
}

/// A scope of bf16 CUDA autocast on this thread; dropping it restores what was there before.
/// Keep backward passes and optimizer steps outside it, as PyTorch recommends.
pub struct Bf16Autocast {
    was_enabled: bool,
    was_dtype: i8,
}

impl Bf16Autocast {
    pub fn enter() -> Bf16Autocast {
        // SAFETY: thread-local autocast state, restored in Drop; the nesting count lets
        // libtorch clear its cast cache when the outermost scope ends.
        unsafe {
            let was_dtype = at_get_autocast_dtype(CUDA);
            at_set_autocast_dtype(CUDA, SCALAR_BFLOAT16);
            let was_enabled = at_is_autocast_enabled(CUDA);
            at_set_autocast_enabled(CUDA, true);
            at_increment_nesting();
            Bf16Autocast {
                was_enabled,
                was_dtype,
            }
        }
    }
}

impl Drop for Bf16Autocast {
    fn drop(&mut self) {
        // SAFETY: undoes `enter` on the same thread.
        unsafe {
            if at_decrement_nesting() == 0 {
                at_clear_cache();
            }
            at_set_autocast_enabled(CUDA, self.was_enabled);
            at_set_autocast_dtype(CUDA, self.was_dtype);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binding reaches libtorch's own state (a wrong symbol would not link, a wrong ABI
    /// would read back something else), and the scope restores it.
    #[test]
    fn a_scope_switches_cuda_autocast_to_bf16_and_restores_it() {
        assert!(!cuda_autocast_enabled());
        assert_eq!(
            cuda_autocast_kind(),
            Some(Kind::Half),
            "libtorch's default CUDA autocast dtype"
        );
        {
            let _outer = Bf16Autocast::enter();
            assert!(cuda_autocast_enabled());
            assert_eq!(cuda_autocast_kind(), Some(Kind::BFloat16));
            {
                let _inner = Bf16Autocast::enter();
                assert!(cuda_autocast_enabled());
            }
            assert!(cuda_autocast_enabled(), "an inner scope leaves the outer one on");
        }
        assert!(!cuda_autocast_enabled());
        assert_eq!(cuda_autocast_kind(), Some(Kind::Half));
    }
}
