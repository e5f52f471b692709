//! An in-memory file layer for tests that loses power.
//!
//! It keeps, for each file, what is durable (synced) and the writes since; for the directory,
//! the durable names and the creations, renames and removals since its last sync. A crash image
//! keeps what was synced, a random prefix of the later writes with the last one kept torn at a
//! random byte (the rest of it missing or zero-filled, as when the length reached the disk but the
//! data did not), and a random prefix of the directory changes. A fault can also be armed to make
//! the n-th mutating operation fail, with a simulated crash or ENOSPC.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;

use crate::file::{Directory, WritableFile};

/// What an armed fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The process dies: this and every later operation fails.
    Crash,
    /// The disk is full: this and every later operation fails with ENOSPC.
    NoSpace,
}

enum FileOperation {
    Write { offset: u64, bytes: Vec<u8> },
    SetLength(u64),
}

#[derive(Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<FileOperation>,
}

enum DirectoryOperation {
    Link { name: String, inode: usize },
    Rename { from: String, to: String },
    Remove { name: String },
}

#[derive(Default)]
struct Disk {
    inodes: Vec<Inode>,
    names: BTreeMap<String, usize>,
    durable_names: BTreeMap<String, usize>,
    pending: Vec<DirectoryOperation>,
    operations: u64,
    file_syncs: u64,
    directory_syncs: u64,
    reads: u64,
    fault_at: Option<(u64, Fault)>,
    failed_with: Option<Fault>,
}

impl Disk {
    /// Counts a mutating operation and fails it if a fault is due (or has happened).
    fn tick(&mut self) -> io::Result<()> {
        if let Some(fault) = self.failed_with {
            return Err(fault_error(fault));
        }
        self.operations += 1;
        match self.fault_at {
            Some((at, fault)) if at == self.operations => {
                self.failed_with = Some(fault);
                Err(fault_error(fault))
            }
            _ => Ok(()),
        }
    }
}

fn fault_error(fault: Fault) -> io::Error {
    match fault {
        Fault::Crash => io::Error::other("simulated crash"),
        Fault::NoSpace => io::Error::from_raw_os_error(28),
    }
}

/// A disk shared by the directories and files opened on it.
#[derive(Clone, Default)]
pub(crate) struct FaultDisk(Arc<Mutex<Disk>>);

impl FaultDisk {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // A panic while holding the lock already failed the test.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A directory handle for [`crate::FileStorage`].
    pub(crate) fn directory(&self) -> Box<dyn Directory> {
        Box::new(FaultDirectory { disk: self.clone() })
    }

    /// Makes the `after`-th mutating operation from now fail with `fault`.
    pub(crate) fn arm(&self, after: u64, fault: Fault) {
        let mut disk = self.lock();
        disk.fault_at = Some((disk.operations + after, fault));
    }

    /// Mutating operations so far.
    pub(crate) fn operations(&self) -> u64 {
        self.lock().operations
    }

    /// Whole-file reads so far.
    pub(crate) fn reads(&self) -> u64 {
        self.lock().reads
    }

    /// `(file syncs, directory syncs)` so far.
    pub(crate) fn syncs(&self) -> (u64, u64) {
        let disk = self.lock();
        (disk.file_syncs, disk.directory_syncs)
    }

    /// Whether an armed fault went off.
    pub(crate) fn failed(&self) -> bool {
        self.lock().failed_with.is_some()
    }

    /// The disk as a power loss now would leave it.
    pub(crate) fn crash(&self, rng: &mut impl Rng) -> FaultDisk {
        let disk = self.lock();
        let mut image = Disk::default();
        let kept_changes = rng.gen_range(0..=disk.pending.len());
        let mut names = disk.durable_names.clone();
        for change in &disk.pending[..kept_changes] {
            match change {
                DirectoryOperation::Link { name, inode } => {
                    names.insert(name.clone(), *inode);
                }
                DirectoryOperation::Rename { from, to } => {
                    if let Some(inode) = names.remove(from) {
                        names.insert(to.clone(), inode);
                    }
                }
                DirectoryOperation::Remove { name } => {
                    names.remove(name);
                }
            }
        }
        for (name, inode) in names {
            let source = &disk.inodes[inode];
            let mut content = source.durable.clone();
            let kept = rng.gen_range(0..=source.pending.len());
            for operation in &source.pending[..kept] {
                apply(&mut content, operation);
            }
            if let Some(FileOperation::Write { offset, bytes }) = source.pending.get(kept) {
                if rng.gen_bool(0.5) {
                    // The torn last write: a prefix landed; the rest is lost, or reads as zeros
                    // where the write had made the file longer.
                    let cut = rng.gen_range(0..=bytes.len());
                    write_at(&mut content, *offset, &bytes[..cut]);
                    let end = (*offset as usize) + bytes.len();
                    if rng.gen_bool(0.3) && content.len() < end {
                        content.resize(end, 0);
                    }
                }
            }
            image.names.insert(name.clone(), image.inodes.len());
            image.durable_names.insert(name, image.inodes.len());
            image.inodes.push(Inode { durable: content.clone(), current: content, pending: Vec::new() });
        }
        FaultDisk(Arc::new(Mutex::new(image)))
    }

    /// The files as the running process sees them.
    pub(crate) fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let disk = self.lock();
        disk.names.iter().map(|(name, inode)| (name.clone(), disk.inodes[*inode].current.clone())).collect()
    }

    /// Replaces a file's content, durably (to damage files on purpose).
    pub(crate) fn overwrite(&self, name: &str, content: Vec<u8>) {
        let mut disk = self.lock();
        let inode = disk.names[name];
        disk.inodes[inode] = Inode { durable: content.clone(), current: content, pending: Vec::new() };
    }
}

fn apply(content: &mut Vec<u8>, operation: &FileOperation) {
    match operation {
        FileOperation::Write { offset, bytes } => write_at(content, *offset, bytes),
        FileOperation::SetLength(length) => content.resize(*length as usize, 0),
    }
}

fn write_at(content: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let offset = offset as usize;
    if content.len() < offset + bytes.len() {
        content.resize(offset + bytes.len(), 0);
    }
    content[offset..offset + bytes.len()].copy_from_slice(bytes);
}

struct FaultDirectory {
    disk: FaultDisk,
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

impl Directory for FaultDirectory {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.disk.lock().names.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut disk = self.disk.lock();
        disk.reads += 1;
        let inode = *disk.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(disk.inodes[inode].current.clone())
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn WritableFile>> {
        let mut disk = self.disk.lock();
        disk.tick()?;
        if disk.names.contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{name} exists")));
        }
        let inode = disk.inodes.len();
        disk.inodes.push(Inode::default());
        disk.names.insert(name.to_owned(), inode);
        disk.pending.push(DirectoryOperation::Link { name: name.to_owned(), inode });
        Ok(Box::new(FaultFile { disk: self.disk.clone(), inode }))
    }

    fn open_write(&self, name: &str) -> io::Result<Box<dyn WritableFile>> {
        let disk = self.disk.lock();
        let inode = *disk.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(Box::new(FaultFile { disk: self.disk.clone(), inode }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.disk.lock();
        disk.tick()?;
        let inode = disk.names.remove(from).ok_or_else(|| not_found(from))?;
        disk.names.insert(to.to_owned(), inode);
        disk.pending.push(DirectoryOperation::Rename { from: from.to_owned(), to: to.to_owned() });
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.disk.lock();
        disk.tick()?;
        disk.names.remove(name).ok_or_else(|| not_found(name))?;
        disk.pending.push(DirectoryOperation::Remove { name: name.to_owned() });
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut disk = self.disk.lock();
        disk.tick()?;
        disk.directory_syncs += 1;
        disk.durable_names = disk.names.clone();
        disk.pending.clear();
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("fault-disk/{name}")
    }
}

struct FaultFile {
    disk: FaultDisk,
    inode: usize,
}

impl WritableFile for FaultFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.disk.lock();
        let failed_before = disk.failed_with.is_some();
        if let Err(error) = disk.tick() {
            if failed_before {
                return Err(error);
            }
            // The write that fails may still have written part of its bytes.
            let partial = bytes[..bytes.len() / 2].to_vec();
            let inode = &mut disk.inodes[self.inode];
            write_at(&mut inode.current, offset, &partial);
            inode.pending.push(FileOperation::Write { offset, bytes: partial });
            return Err(error);
        }
        let inode = &mut disk.inodes[self.inode];
        write_at(&mut inode.current, offset, bytes);
        inode.pending.push(FileOperation::Write { offset, bytes: bytes.to_vec() });
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut disk = self.disk.lock();
        disk.tick()?;
        disk.file_syncs += 1;
        let inode = &mut disk.inodes[self.inode];
        inode.durable.clone_from(&inode.current);
        inode.pending.clear();
        Ok(())
    }

    fn set_length(&mut self, length: u64) -> io::Result<()> {
        let mut disk = self.disk.lock();
        disk.tick()?;
        let inode = &mut disk.inodes[self.inode];
        inode.current.resize(length as usize, 0);
        inode.pending.push(FileOperation::SetLength(length));
        Ok(())
    }
}
