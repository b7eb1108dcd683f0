//! The backend: the one place where sequin chooses one (by Cargo feature), and the
//! process-wide settings that go with it.

use burn::tensor::Device;

/// Keeps freed memory in the process instead of handing it back to the kernel.
///
/// A training step allocates and frees many large tensors; with glibc's defaults each of them
/// is a fresh `mmap`, and the kernel zeroes every page again (`clear_page_erms` was 14% of a
/// MiniLM step). Raising the mmap threshold and never trimming the heap (as
/// `MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` would) made training about 30% faster
/// here; the heap then grows to the step's peak once and stays there. With row shards
/// (`--shards`) tensors are allocated on every rayon thread, and glibc's per-thread arenas grow
/// and drop heaps of their own (page zeroing again, and more memory): one arena, as
/// `MALLOC_ARENA_MAX=1`, measured 5% faster and 13% smaller. Binaries call this first; it does
/// nothing off glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The one place where a backend is chosen (by Cargo feature).
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda(0)
    }
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    {
        Device::wgpu(Default::default())
    }
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        Device::flex()
    }
}

/// The backend this build runs on.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "wgpu") {
        "wgpu"
    } else if avx512() {
        "cpu (flex, AVX-512 gemm)"
    } else {
        "cpu (flex)"
    }
}

/// Row shards per batch when neither `--shards` nor a saved config says: 4 on the CPU (where
/// they keep both cores of a 2-core machine busy; 4 measured faster than 2), 1 on a GPU.
pub fn default_shards() -> usize {
    if cfg!(any(feature = "cuda", feature = "wgpu")) {
        1
    } else {
        4
    }
}

/// Whether this CPU has AVX-512F, which gemm (flex's matmul) then uses.
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
