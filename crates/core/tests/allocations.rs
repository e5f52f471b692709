//! Allocations made by decoding: a log's replay at start decodes every entry, so each allocation
//! per entry counts. Its own test binary, since it installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use bytes::Bytes;
use concord_core::command::Command;
use concord_core::id::{ClientSession, LogIndex, NodeId, ProposalId, Term};
use concord_core::message::{Entry, EntryPayload, Proposal};

/// Counts the allocations of the current thread (tests run on several threads at once).
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_of<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let value = work();
    (value, ALLOCATIONS.with(Cell::get) - before)
}

#[test]
fn a_shared_proposal_decodes_in_one_allocation_more_than_the_proposal_alone() {
    let proposal = Proposal {
        id: ProposalId { origin: NodeId::new("n1"), sequence: 7 },
        session: Some(ClientSession::new(3, 7)),
        command: Command::Put { key: "player:1".into(), value: Bytes::from_static(b"score") },
    };
    let entry = Entry {
        index: LogIndex(5),
        term: Term(2),
        timestamp_ms: 1_700_000_000_000,
        payload: EntryPayload::Command(Arc::new(proposal.clone())),
    };
    let proposal_bytes = postcard::to_allocvec(&proposal).expect("encodes");
    let entry_bytes = postcard::to_allocvec(&entry).expect("encodes");
    // Once first, so that the node id is in this thread's cache of decoded ids for both counts.
    let _: Entry = postcard::from_bytes(&entry_bytes).expect("decodes");

    let (decoded_proposal, alone) =
        allocations_of(|| postcard::from_bytes::<Proposal>(&proposal_bytes).expect("decodes"));
    let (decoded_entry, shared) =
        allocations_of(|| postcard::from_bytes::<Entry>(&entry_bytes).expect("decodes"));

    assert_eq!(decoded_proposal, proposal);
    assert_eq!(decoded_entry, entry);
    // Serde's own `Arc` decoding would make two: a box, then the shared copy of it.
    assert_eq!(shared, alone + 1, "the entry's proposal is decoded straight into its shared allocation");
}
