//! The few file operations the store needs, behind a trait so that tests can swap in a layer that
//! loses unsynced writes and tears the last one (`fault.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// One data directory. Names are plain file names inside it.
pub(crate) trait Directory: Send {
    /// Names of the files in the directory (not sorted).
    fn list(&self) -> io::Result<Vec<String>>;
    /// A whole file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Creates a new, empty file for writing; fails if it exists. Its name is durable only after
    /// [`Directory::sync`].
    fn create(&self, name: &str) -> io::Result<Box<dyn WritableFile>>;
    /// Opens an existing file for writing.
    fn open_write(&self, name: &str) -> io::Result<Box<dyn WritableFile>>;
    /// Atomically renames `from` to `to`, replacing `to`. Durable only after [`Directory::sync`].
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file. Durable only after [`Directory::sync`].
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals durable (fsync of the directory).
    fn sync(&self) -> io::Result<()>;
    /// A name for errors: the file's full path.
    fn describe(&self, name: &str) -> String;
}

/// A file written at chosen offsets (the log writes into space it preallocated with zeros).
pub(crate) trait WritableFile: Send {
    /// Writes all of `bytes` at `offset`, extending the file if needed.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Makes the data and the length durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts (or extends with zeros) the file to `length` bytes.
    fn set_length(&mut self, length: u64) -> io::Result<()>;
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

    fn create(&self, name: &str) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new().write(true).create_new(true).open(self.path.join(name))?;
        Ok(Box::new(OsFile { file }))
    }

    fn open_write(&self, name: &str) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new().write(true).open(self.path.join(name))?;
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

impl WritableFile for OsFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_length(&mut self, length: u64) -> io::Result<()> {
        self.file.set_len(length)
    }
}
