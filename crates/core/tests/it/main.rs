//! Integration tests of concord-core: one binary, one module per area.

mod codec;
mod config;
mod id;
mod state_machine;
mod storage;
mod strategies;
mod typed;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, recording the largest single allocation made on each thread, so that a
/// test can show that a decoder refused a frame *before* allocating for it.
struct LargestAllocationTracker;

thread_local! {
    // `const` initialization and a `Cell<usize>` (no destructor): reading it never allocates, so it
    // is safe to touch from inside the allocator.
    static LARGEST_ALLOCATION: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    let _ = LARGEST_ALLOCATION.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to `System`; the tracking only reads sizes.
unsafe impl GlobalAlloc for LargestAllocationTracker {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        System.realloc(pointer, layout, new_size)
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        System.dealloc(pointer, layout)
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocationTracker = LargestAllocationTracker;

/// Runs `work` and returns its result with the largest single allocation it made on this thread.
pub fn largest_allocation_during<T>(work: impl FnOnce() -> T) -> (T, usize) {
    LARGEST_ALLOCATION.with(|largest| largest.set(0));
    let result = work();
    (result, LARGEST_ALLOCATION.with(Cell::get))
}
