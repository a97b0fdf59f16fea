//! Fuzzing of vcnode's peer-facing parsers on stable Rust (cargo-fuzz needs nightly).
//!
//! Inputs start from valid encodings built with the node's own writers ([`seeds`]) and are
//! mutated with knowledge of DICOM and PDU structure ([`mutate`]). Without coverage
//! instrumentation, a run's behaviour signature (which branch, which error) decides what is
//! kept in the corpus ([`engine`]). Each [`targets`] entry states the properties it checks.
//! Inputs that crashed are kept under `fuzz/regressions/<target>/` and replayed by the tests.

pub mod engine;
pub mod mutate;
pub mod seeds;
pub mod targets;

/// The fuzzer's allocator: refuses any single allocation above [`MAX_ALLOCATION`], so that a
/// parser allocating by a declared length (up to 4 GiB from a length field) aborts the worker
/// at once ("memory allocation of N bytes failed") instead of swapping the machine; the
/// supervisor then keeps the input like any crash.
pub struct BoundedAlloc;

/// Far above what any target needs for its inputs (they are at most 1 MiB).
pub const MAX_ALLOCATION: usize = 256 << 20;

unsafe impl std::alloc::GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        std::alloc::System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        std::alloc::System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        std::alloc::System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: BoundedAlloc = BoundedAlloc;
