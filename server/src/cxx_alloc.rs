//! C++'s global `operator new` and `operator delete`, replaced in the `synod` binary (this file
//! belongs to `main.rs`, not to the library) so that RocksDB allocates from synod's own jemalloc
//! rather than the C library's `malloc`.
//!
//! Why: RocksDB's memtables grow in blocks of 512 KiB (the audit trail) and 1 MiB (the log),
//! freed whole at each flush. With the C library's `malloc`, blocks that large got pages of
//! their own, unmapped on `free` (releases up to 0.5.3 held its mmap threshold at 128 KiB so
//! that they always did: otherwise its heap kept every freed memtable), so under write load each
//! new block was faulted in again page by page: 3.4% of a 3-node cluster's CPU samples under set at 256 in
//! flight, 0.1% with this file (docs/operations.md, "What a node's memory holds"). jemalloc keeps
//! a freed block for reuse and gives it back to the OS gradually over `dirty_decay_ms` (3 s,
//! `main.rs`), from its background thread.
//!
//! Why not jemalloc as the process's `malloc` (its unprefixed build): jemalloc's initialisation
//! reads the clock, and under libfaketime (the clock tests, or an operator testing certificate
//! expiry) libfaketime's own initialisation then calls `malloc` — the same jemalloc, still
//! initialising — and the process hangs before `main` (libfaketime issue #130). Here `malloc`
//! stays the C library's; only C++'s allocation operators go to jemalloc, which synod's Rust
//! heap already uses under its `_rjem_` prefix.
//!
//! The contract this keeps: every block one of these operators returns is freed by one of
//! them, since C++ frees with `delete` what it allocated with `new`. Across shared libraries
//! that holds only if `libstdc++`'s own calls (made inside `libstdc++.so`, for a `std::string`
//! say) bind to these definitions too, so the executable must export them; the linker does so
//! by itself for a symbol that a shared library it links also defines, and `tests/ops.rs` asks
//! the dynamic linker where it bound them. Every variant that C++17 lets a program replace is
//! replaced here: replacing only some could pair one allocator's `new` with the other's
//! `delete`.

use std::alloc::Layout;
use std::ffi::c_void;

use tikv_jemalloc_sys as jemalloc;

/// C++ would throw `std::bad_alloc`; synod's Rust heap aborts when it runs out, and so does
/// RocksDB's, with the size it asked for on stderr.
fn out_of_memory(size: usize, align: usize) -> ! {
    match Layout::from_size_align(size.max(1), align.max(1)) {
        Ok(layout) => std::alloc::handle_alloc_error(layout),
        Err(_) => {
            eprintln!("synod: out of memory: C++ asked for {size} bytes aligned to {align}");
            std::process::abort()
        }
    }
}

/// `size` bytes aligned for any type that fits in them (as `malloc` aligns), or null.
fn allocate(size: usize) -> *mut c_void {
    // SAFETY: jemalloc's malloc accepts any size; zero gives a unique, freeable block.
    unsafe { jemalloc::malloc(size) }
}

/// `size` bytes aligned to `align` (a power of two: C++'s `std::align_val_t` guarantees it), or
/// null.
fn allocate_aligned(size: usize, align: usize) -> *mut c_void {
    debug_assert!(align.is_power_of_two(), "C++ alignments are powers of two");
    // SAFETY: jemalloc's aligned_alloc accepts any power-of-two alignment and any size.
    unsafe { jemalloc::aligned_alloc(align, size.max(1)) }
}

/// Frees a block that one of this file's operators returned (null is allowed, as for
/// `delete`).
fn release(p: *mut c_void) {
    // SAFETY: C++ deletes only what its `new` returned, and every `new` of this process is one
    // of this file's (the module documentation says why), so `p` is jemalloc's or null.
    unsafe { jemalloc::free(p) }
}

/// Defines the replaceable operators, each under its Itanium C++ ABI name (x86-64 and aarch64
/// Linux: `size_t` is `unsigned long`, `m`). `new` aborts when memory runs out; its `nothrow`
/// forms return null; every `delete` frees, whatever size or alignment it is told.
macro_rules! operators {
    (new: $($new:literal),*; new_nothrow: $($new_nt:literal),*;
     new_aligned: $($new_al:literal),*; new_aligned_nothrow: $($new_al_nt:literal),*;
     delete: $($del:literal),*; delete_sized: $($del_sz:literal),*;
     delete_aligned: $($del_al:literal),*; delete_sized_aligned: $($del_sz_al:literal),*) => {
        $(const _: () = {
            #[export_name = $new]
            extern "C" fn new(size: usize) -> *mut c_void {
                let p = allocate(size);
                if p.is_null() {
                    out_of_memory(size, 16);
                }
                p
            }
        };)*
        $(const _: () = {
            #[export_name = $new_nt]
            extern "C" fn new_nothrow(size: usize, _nothrow: *const c_void) -> *mut c_void {
                allocate(size)
            }
        };)*
        $(const _: () = {
            #[export_name = $new_al]
            extern "C" fn new_aligned(size: usize, align: usize) -> *mut c_void {
                let p = allocate_aligned(size, align);
                if p.is_null() {
                    out_of_memory(size, align);
                }
                p
            }
        };)*
        $(const _: () = {
            #[export_name = $new_al_nt]
            extern "C" fn new_aligned_nothrow(
                size: usize,
                align: usize,
                _nothrow: *const c_void,
            ) -> *mut c_void {
                allocate_aligned(size, align)
            }
        };)*
        $(const _: () = {
            #[export_name = $del]
            extern "C" fn delete(p: *mut c_void) {
                release(p)
            }
        };)*
        $(const _: () = {
            #[export_name = $del_sz]
            extern "C" fn delete_sized(p: *mut c_void, _size_or_nothrow: usize) {
                release(p)
            }
        };)*
        $(const _: () = {
            #[export_name = $del_al]
            extern "C" fn delete_aligned(p: *mut c_void, _align: usize) {
                release(p)
            }
        };)*
        $(const _: () = {
            #[export_name = $del_sz_al]
            extern "C" fn delete_sized_aligned(p: *mut c_void, _size_or_align: usize, _align_or_nothrow: usize) {
                release(p)
            }
        };)*
    };
}

operators! {
    // operator new(size_t), operator new[](size_t)
    new: "_Znwm", "_Znam";
    // ... (size_t, const std::nothrow_t&)
    new_nothrow: "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t";
    // ... (size_t, std::align_val_t)
    new_aligned: "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t";
    // ... (size_t, std::align_val_t, const std::nothrow_t&)
    new_aligned_nothrow: "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t";
    // operator delete(void*), operator delete[](void*)
    delete: "_ZdlPv", "_ZdaPv";
    // ... (void*, size_t) and (void*, const std::nothrow_t&): a second word, ignored
    delete_sized: "_ZdlPvm", "_ZdaPvm", "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t";
    // ... (void*, std::align_val_t)
    delete_aligned: "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t";
    // ... (void*, size_t, std::align_val_t) and (void*, std::align_val_t, const std::nothrow_t&)
    delete_sized_aligned: "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
        "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t"
}
