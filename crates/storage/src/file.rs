//! The few file operations the store needs, behind a trait so that tests can swap in a layer that
//! loses unsynced writes and tears the last one (`fault.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

/// One data directory. Names are plain file names inside it.
pub(crate) trait Directory: Send {
    /// Names of the files in the directory (not sorted).
    fn list(&self) -> io::Result<Vec<String>>;
    /// A whole file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Creates a new file for appending; fails if it exists. Its name is durable only after
    /// [`Directory::sync`].
    fn create(&self, name: &str) -> io::Result<Box<dyn AppendFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, name: &str) -> io::Result<Box<dyn AppendFile>>;
    /// Atomically renames `from` to `to`, replacing `to`. Durable only after [`Directory::sync`].
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file. Durable only after [`Directory::sync`].
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals durable (fsync of the directory).
    fn sync(&self) -> io::Result<()>;
    /// A name for errors: the file's full path.
    fn describe(&self, name: &str) -> String;
}

/// A file written only at its end.
pub(crate) trait AppendFile: Send {
    /// Appends all of `bytes`.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the data and the length durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `length` bytes; later appends go after it.
    fn truncate(&mut self, length: u64) -> io::Result<()>;
}

/// The real file system.
pub(crate) struct OsDirectory {
    path: PathBuf,
}

impl OsDirectory {
    /// Uses `path`, creating it (and its parents) if needed.
    pub(crate) fn open(path: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&path)?;
        Ok(OsDirectory { path })
    }
}

impl Directory for OsDirectory {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            // A name that is not UTF-8 cannot be one of ours; it is left alone.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path.join(name))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn AppendFile>> {
        let file = OpenOptions::new().write(true).create_new(true).open(self.path.join(name))?;
        Ok(Box::new(OsFile { file }))
    }

    fn open_append(&self, name: &str) -> io::Result<Box<dyn AppendFile>> {
        let file = OpenOptions::new().append(true).open(self.path.join(name))?;
        Ok(Box::new(OsFile { file }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path.join(from), self.path.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path.join(name))
    }

    fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }

    fn describe(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }
}

struct OsFile {
    file: File,
}

impl AppendFile for OsFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, length: u64) -> io::Result<()> {
        // Files opened by `create` are not in append mode: move to the new end explicitly.
        self.file.set_len(length)?;
        io::Seek::seek(&mut self.file, io::SeekFrom::Start(length))?;
        Ok(())
    }
}
