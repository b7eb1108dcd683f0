//! Atomic writes: every file and folder sequin writes appears whole under its final name, or
//! not at all. This crate is the only place that creates temp files (a test greps the tree).
//!
//! A write goes to a hidden temp name in the same folder (`.{name}.{random}.tmp`), is synced,
//! and is renamed over the final name. A killed process leaves only temp names behind, which
//! [`remove_leftovers`] deletes and no reader ever takes for a result.
//!
//! - [`write`]: a whole file from bytes;
//! - [`AtomicFile`]: a file written as a stream (or by a library that wants a path), then
//!   [`AtomicFile::commit`]ted;
//! - [`AtomicDir`]: a folder filled, then committed in one rename (replacing an older one);
//! - [`Output`]: a command's output path, which may also be `-` (stdout), a FIFO, a device or a
//!   link, none of which is ever replaced by a file.
//!
//! Files are created with mode `0666` less the umask (`0644` usually), as `std::fs::write`
//! would, never `0600`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::{Builder, NamedTempFile, TempDir};

/// Whether a file name is one of this crate's temp names (a leftover of a killed write).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The hidden temp-name prefix of a path: `.{name}.`.
fn prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    format!(".{name}.")
}

/// A temp name's builder: `.{name}.{random}.tmp`, mode 0666 less the umask.
fn builder(prefix: &str) -> Builder<'_, 'static> {
    let mut b = Builder::new();
    b.prefix(prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b
}

/// A new temp file beside `path`.
fn temp_file(path: &Path) -> io::Result<NamedTempFile> {
    builder(&prefix(path)).tempfile_in(parent(path))
}

/// A new temp folder beside `path`.
fn temp_dir(path: &Path) -> io::Result<TempDir> {
    let p = prefix(path);
    let mut b = builder(&p);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o777));
    }
    b.tempdir_in(parent(path))
}

/// Syncs a folder's entries (a rename into it) to disk; best effort.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

/// A file being written under a temp name; [`commit`](Self::commit) gives it its final name.
/// Dropped uncommitted, it is removed.
pub struct AtomicFile {
    tmp: NamedTempFile,
    path: PathBuf,
}

impl AtomicFile {
    /// Starts a file that will become `path` (its folder must exist).
    pub fn create(path: &Path) -> io::Result<Self> {
        let tmp = temp_file(path)?;
        Ok(Self {
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// The temp file's path, for a library that writes a file by path (it may replace the
    /// file there).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs the data and renames the temp file over the final path.
    pub fn commit(self) -> io::Result<()> {
        // Reopened by path: a library may have replaced the file behind our handle.
        OpenOptions::new()
            .write(true)
            .open(self.tmp.path())?
            .sync_all()?;
        self.tmp.persist(&self.path).map_err(|e| e.error)?;
        sync_dir(parent(&self.path));
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// Where a command's output goes, chosen from its path: `-` is standard output; a FIFO, a
/// device (`/dev/null`) or another non-regular file is written in place, never replaced; a
/// symbolic link is followed and its target written atomically (the link survives); anything
/// else is an [`AtomicFile`].
pub enum Output {
    /// A regular file (new or replaced), written atomically.
    File(AtomicFile),
    /// A FIFO, a device or a socket, written as it is.
    InPlace(File),
    /// Standard output.
    Stdout(io::Stdout),
}

impl Output {
    /// Opens the output for `path` (see [`Output`]). Its folder must exist.
    pub fn create(path: &Path) -> io::Result<Self> {
        if path.as_os_str() == "-" {
            return Ok(Self::Stdout(io::stdout()));
        }
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() && !m.is_dir() => {
                Ok(Self::InPlace(OpenOptions::new().write(true).open(path)?))
            }
            // A link to a regular file: the target is replaced, the link kept.
            Ok(_) => Ok(Self::File(AtomicFile::create(&std::fs::canonicalize(
                path,
            )?)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::read_link(path) {
                // A dangling link: create its target.
                Ok(target) => Ok(Self::File(AtomicFile::create(&parent(path).join(target))?)),
                Err(_) => Ok(Self::File(AtomicFile::create(path)?)),
            },
            Err(e) => Err(e),
        }
    }

    /// Whether the output is standard output.
    pub fn is_stdout(&self) -> bool {
        matches!(self, Self::Stdout(_))
    }

    /// Finishes the output: commits a file, flushes a stream.
    pub fn commit(self) -> io::Result<()> {
        match self {
            Self::File(f) => f.commit(),
            Self::InPlace(mut f) => f.flush(),
            Self::Stdout(mut s) => s.flush(),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::File(f) => f.write(buf),
            Self::InPlace(f) => f.write(buf),
            Self::Stdout(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::File(f) => f.flush(),
            Self::InPlace(f) => f.flush(),
            Self::Stdout(s) => s.flush(),
        }
    }
}

/// Whether `output` names the same file as `input` (directly or through links): writing it
/// would destroy the data being read.
pub fn same_file(input: &Path, output: &Path) -> bool {
    if output.as_os_str() == "-" {
        return false;
    }
    match (std::fs::canonicalize(input), std::fs::canonicalize(output)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A folder being filled under a temp name; [`commit`](Self::commit) renames it to its final
/// name, replacing a folder already there. Dropped uncommitted, it is removed.
pub struct AtomicDir {
    tmp: Option<TempDir>,
    path: PathBuf,
}

impl AtomicDir {
    /// Starts a folder that will become `path` (its parent is created).
    pub fn create(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(parent(path))?;
        let tmp = temp_dir(path)?;
        Ok(Self {
            tmp: Some(tmp),
            path: path.to_path_buf(),
        })
    }

    /// The temp folder to fill.
    pub fn temp_path(&self) -> &Path {
        self.tmp.as_ref().expect("not committed").path()
    }

    /// Renames the folder into place. A folder already at the final path is first renamed
    /// to a temp name, then removed: at every moment one whole folder has the final name, or
    /// (between the two renames) a temp name holds it.
    pub fn commit(mut self) -> io::Result<()> {
        let tmp = self.tmp.take().expect("not committed").keep();
        let dir = parent(&self.path);
        if self.path.exists() {
            let old = temp_dir(&self.path)?.keep();
            std::fs::rename(&self.path, &old)?;
            std::fs::rename(&tmp, &self.path)?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, &self.path)?;
        }
        sync_dir(dir);
        Ok(())
    }
}

/// Removes a folder (or file) by renaming it to a temp name first, so that a kill midway
/// leaves a leftover, never a half-deleted result.
pub fn remove(path: &Path) -> io::Result<()> {
    let gone = temp_dir(path)?.keep();
    std::fs::remove_dir(&gone)?;
    std::fs::rename(path, &gone)?;
    if gone.is_dir() {
        std::fs::remove_dir_all(&gone)
    } else {
        std::fs::remove_file(&gone)
    }
}

/// Removes the temp files and folders that killed writes left in `dir`; returns how many.
pub fn remove_leftovers(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !is_temp_name(&e.file_name().to_string_lossy()) {
            continue;
        }
        let p = e.path();
        let gone = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        n += usize::from(gone.is_ok());
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_file_appears_whole_with_readable_permissions() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        let mut f = AtomicFile::create(&p).unwrap();
        f.write_all(b"{\"x\": 1}").unwrap();
        assert!(!p.exists(), "visible before commit");
        assert!(is_temp_name(&names(d.path())[0]));
        f.commit().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"x\": 1}");
        assert_eq!(names(d.path()), ["a.json"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o044, 0o044, "not readable by others: {mode:o}");
        }
        write(&p, b"2").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
    }

    #[test]
    fn an_uncommitted_write_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b.bin");
        std::fs::write(&p, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"new, half").unwrap();
        }
        let dir = AtomicDir::create(&d.path().join("c")).unwrap();
        std::fs::write(dir.temp_path().join("x"), b"1").unwrap();
        drop(dir);
        assert_eq!(names(d.path()), ["b.bin"]);
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
    }

    #[test]
    fn a_folder_replaces_an_older_one_and_leftovers_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("ckpt");
        for content in ["one", "two"] {
            let dir = AtomicDir::create(&c).unwrap();
            std::fs::write(dir.temp_path().join("state"), content).unwrap();
            dir.commit().unwrap();
        }
        assert_eq!(std::fs::read_to_string(c.join("state")).unwrap(), "two");
        // What a killed write leaves: a temp file and a temp folder.
        let f = AtomicFile::create(&d.path().join("x")).unwrap();
        let (_, left) = f.tmp.keep().unwrap();
        let mut y = AtomicDir::create(&d.path().join("y")).unwrap();
        let _ = y.tmp.take().unwrap().keep();
        assert!(left.exists());
        assert_eq!(remove_leftovers(d.path()), 2);
        assert_eq!(names(d.path()), ["ckpt"]);
        remove(&c).unwrap();
        assert!(names(d.path()).is_empty());
    }
}
