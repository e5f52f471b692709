//! Append + sync throughput of `FileStorage` at batch sizes 1, 10, 100 and 1000 (100-byte
//! entries, one `persist` = one fdatasync per batch), beside the raw fdatasync rate of the same
//! disk measured in the same run and redb (one durable transaction per batch) as a baseline.
//! Before the benchmarks it writes a log of `CONCORD_STORAGE_BENCH_REOPEN_ENTRIES` entries
//! (default 1,000,000) and prints how long open and recover take, then prints an interleaved
//! comparison of the three (see [`paired_comparison`]).
//!
//! `cargo bench -p concord-storage --bench storage -- --quick` takes well under a minute.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_core::prelude::*;
use concord_storage::{FileStorage, FileStorageOptions};
use criterion::{BenchmarkId, Criterion, Throughput};

const BATCH_SIZES: [u64; 4] = [1, 10, 100, 1000];
/// Bytes of each entry's command.
const ENTRY_BYTES: usize = 100;

fn scratch_directory(label: &str) -> PathBuf {
    // Under the target directory, so on the disk being measured (not a tmpfs).
    let path =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("storage-bench-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    path
}

fn entry(index: u64) -> Entry {
    Entry {
        index: LogIndex(index),
        term: Term(1),
        timestamp_ms: index,
        payload: EntryPayload::Command(std::sync::Arc::new(Proposal {
            id: ProposalId { origin: NodeId::new("bench"), sequence: index },
            session: None,
            command: Command::Custom(Bytes::from(vec![(index % 256) as u8; ENTRY_BYTES])),
        })),
    }
}

fn batch(first: u64, size: u64) -> Persist {
    Persist { entries: (first..first + size).map(entry).collect(), ..Persist::default() }
}

fn append_sync(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("append_sync");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for size in BATCH_SIZES {
        group.throughput(Throughput::Elements(size));
        group.bench_function(BenchmarkId::new("concord_storage", size), |bencher| {
            bencher.iter_custom(|iterations| {
                // A fresh store per sample keeps the disk use to one sample's worth.
                let directory = scratch_directory("append");
                let mut storage = FileStorage::open(&directory, FileStorageOptions::default()).unwrap();
                let persists: Vec<Persist> = (0..iterations).map(|i| batch(i * size + 1, size)).collect();
                let began = Instant::now();
                for persist in &persists {
                    storage.persist(persist).unwrap();
                }
                let elapsed = began.elapsed();
                drop(storage);
                let _ = std::fs::remove_dir_all(&directory);
                elapsed
            });
        });
        group.bench_function(BenchmarkId::new("redb", size), |bencher| {
            const LOG: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("log");
            bencher.iter_custom(|iterations| {
                let directory = scratch_directory("redb");
                let database = redb::Database::create(directory.join("log.redb")).unwrap();
                let encoded: Vec<Vec<(u64, Vec<u8>)>> = (0..iterations)
                    .map(|i| {
                        batch(i * size + 1, size)
                            .entries
                            .iter()
                            .map(|entry| (entry.index.0, postcard::to_allocvec(entry).unwrap()))
                            .collect()
                    })
                    .collect();
                let began = Instant::now();
                for entries in &encoded {
                    let transaction = database.begin_write().unwrap();
                    {
                        let mut table = transaction.open_table(LOG).unwrap();
                        for (index, bytes) in entries {
                            table.insert(index, bytes.as_slice()).unwrap();
                        }
                    }
                    transaction.commit().unwrap();
                }
                let elapsed = began.elapsed();
                drop(database);
                let _ = std::fs::remove_dir_all(&directory);
                elapsed
            });
        });
    }
    group.finish();

    let mut group = criterion.benchmark_group("raw");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    group.bench_function("write_100_bytes_and_fdatasync", |bencher| {
        let directory = scratch_directory("raw");
        let mut file: File =
            OpenOptions::new().create(true).append(true).open(directory.join("raw")).unwrap();
        let record = [7u8; ENTRY_BYTES];
        bencher.iter(|| {
            file.write_all(&record).unwrap();
            file.sync_data().unwrap();
        });
        drop(file);
        let _ = std::fs::remove_dir_all(&directory);
    });
    group.finish();
}

/// Writes a large log, then measures reopening it: `open` (scan and verify every record, build the
/// index) and `recover` (read and decode every entry).
fn reopen_measurement() {
    let entries: u64 = std::env::var("CONCORD_STORAGE_BENCH_REOPEN_ENTRIES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000_000);
    if entries == 0 {
        return;
    }
    let directory = scratch_directory("reopen");
    let began = Instant::now();
    let mut storage = FileStorage::open(&directory, FileStorageOptions::default()).unwrap();
    let mut next = 1;
    while next <= entries {
        let size = 1000.min(entries - next + 1);
        storage.persist(&batch(next, size)).unwrap();
        next += size;
    }
    let write_time = began.elapsed();
    let segments = storage.segment_count();
    drop(storage);
    let bytes: u64 =
        std::fs::read_dir(&directory).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();

    let began = Instant::now();
    let mut storage = FileStorage::open(&directory, FileStorageOptions::default()).unwrap();
    let open_time = began.elapsed();
    let began = Instant::now();
    let recovered = storage.recover().unwrap();
    let recover_time = began.elapsed();
    assert_eq!(recovered.entries.len() as u64, entries);
    println!(
        "reopen: {entries} entries ({:.0} MiB, {segments} segments) written in {write_time:.2?}; \
         open {open_time:.2?}, recover {recover_time:.2?}",
        bytes as f64 / (1 << 20) as f64
    );
    drop(storage);
    let _ = std::fs::remove_dir_all(&directory);
}

/// The shared disk's fsync latency swings by 10× within a minute when other work runs, so
/// criterion's one-after-the-other groups can compare a quiet period with a busy one. This
/// interleaves the three contenders in short slices, round after round, and prints the median
/// rate of each: a comparison within the same time window.
fn paired_comparison() {
    const LOG: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("log");
    let rounds: usize = std::env::var("CONCORD_STORAGE_BENCH_PAIRED_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(7);
    if rounds == 0 {
        return;
    }
    const SYNCS_PER_SLICE: u64 = 20;
    let directory = scratch_directory("paired");
    let mut raw = OpenOptions::new().create(true).append(true).open(directory.join("raw")).unwrap();
    for size in BATCH_SIZES {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut fsyncs = Vec::new();
        for round in 0..rounds {
            let store_directory = directory.join(format!("ours-{size}-{round}"));
            let mut storage = FileStorage::open(&store_directory, FileStorageOptions::default()).unwrap();
            let persists: Vec<Persist> = (0..SYNCS_PER_SLICE).map(|i| batch(i * size + 1, size)).collect();
            let began = Instant::now();
            for persist in &persists {
                storage.persist(persist).unwrap();
            }
            ours.push((SYNCS_PER_SLICE * size) as f64 / began.elapsed().as_secs_f64());
            drop(storage);
            let _ = std::fs::remove_dir_all(&store_directory);

            let database_path = directory.join(format!("redb-{size}-{round}"));
            let database = redb::Database::create(&database_path).unwrap();
            let encoded: Vec<Vec<(u64, Vec<u8>)>> = persists
                .iter()
                .map(|persist| {
                    persist
                        .entries
                        .iter()
                        .map(|entry| (entry.index.0, postcard::to_allocvec(entry).unwrap()))
                        .collect()
                })
                .collect();
            let began = Instant::now();
            for entries in &encoded {
                let transaction = database.begin_write().unwrap();
                {
                    let mut table = transaction.open_table(LOG).unwrap();
                    for (index, bytes) in entries {
                        table.insert(index, bytes.as_slice()).unwrap();
                    }
                }
                transaction.commit().unwrap();
            }
            theirs.push((SYNCS_PER_SLICE * size) as f64 / began.elapsed().as_secs_f64());
            drop(database);
            let _ = std::fs::remove_file(&database_path);

            let began = Instant::now();
            for _ in 0..SYNCS_PER_SLICE {
                raw.write_all(&[7u8; ENTRY_BYTES]).unwrap();
                raw.sync_data().unwrap();
            }
            fsyncs.push(SYNCS_PER_SLICE as f64 / began.elapsed().as_secs_f64());
        }
        let median = |rates: &mut Vec<f64>| {
            rates.sort_by(f64::total_cmp);
            rates[rates.len() / 2]
        };
        println!(
            "paired, batch {size:>4}: concord-storage {:>9.0} entries/s, redb {:>9.0} entries/s, \
             raw fdatasync {:>6.0}/s (medians of {rounds} interleaved rounds)",
            median(&mut ours),
            median(&mut theirs),
            median(&mut fsyncs)
        );
    }
    drop(raw);
    let _ = std::fs::remove_dir_all(&directory);
}

fn main() {
    // `cargo test --benches` runs this in test mode: keep that quick.
    if !std::env::args().any(|argument| argument == "--test") {
        reopen_measurement();
        paired_comparison();
    }
    let mut criterion = Criterion::default().configure_from_args();
    append_sync(&mut criterion);
    criterion.final_summary();
}
