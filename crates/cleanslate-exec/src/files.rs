//! The folders a run sees: a fresh, empty /tmp for every run and an
//! optional /output whose files are handed back and removed after each run.
//!
//! The core library preopens host folders only (it has no in-memory
//! filesystem), so both are private scratch folders on the host, made by
//! this sandbox (mode 0700, under the system temp folder), emptied after
//! every run and removed when the sandbox is dropped. No other host folder
//! is writable by the guest.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::ExecError;

/// A file a run left in /output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputFile {
    /// The path under /output, with `/` between folders (e.g. `plots/a.png`).
    pub name: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

/// What collecting /output found.
pub(crate) enum Collected {
    Files(Vec<OutputFile>),
    /// The files together exceed the limit: none are returned.
    TooLarge(u64),
}

pub(crate) struct Scratch {
    root: PathBuf,
    pub(crate) tmp: PathBuf,
    pub(crate) output: Option<PathBuf>,
    /// What the setup left in /tmp: every run starts with a copy of it.
    template: PathBuf,
    template_empty: bool,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Scratch {
    pub(crate) fn new(with_output: bool) -> Result<Scratch, ExecError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let root = std::env::temp_dir().join(format!(
            "cleanslate-exec-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        create_private(&root)?;
        let scratch = Scratch {
            tmp: root.join("tmp"),
            output: with_output.then(|| root.join("output")),
            template: root.join("tmp-template"),
            template_empty: true,
            root,
        };
        create_private(&scratch.tmp)?;
        create_private(&scratch.template)?;
        if let Some(output) = &scratch.output {
            create_private(output)?;
        }
        Ok(scratch)
    }

    /// After the setup: keep what it left in /tmp as every run's start.
    pub(crate) fn keep_setup_tmp(&mut self) -> Result<(), ExecError> {
        empty(&self.template)?;
        copy_tree(&self.tmp, &self.template)?;
        self.template_empty = is_empty(&self.template)?;
        Ok(())
    }

    /// Whether the setup left /tmp empty.
    pub(crate) fn setup_tmp_is_empty(&self) -> bool {
        self.template_empty
    }

    /// Copy another sandbox's setup /tmp (a pool's members share one setup).
    pub(crate) fn adopt_template(&mut self, from: &Scratch) -> Result<(), ExecError> {
        empty(&self.template)?;
        copy_tree(&from.template, &self.template)?;
        self.template_empty = from.template_empty;
        self.reset_tmp()
    }

    /// Put /tmp back to what the setup left (usually: empty).
    pub(crate) fn reset_tmp(&self) -> Result<(), ExecError> {
        empty(&self.tmp)?;
        if !self.template_empty {
            copy_tree(&self.template, &self.tmp)?;
        }
        Ok(())
    }

    /// Take the regular files out of /output (names and bytes, at most
    /// `limit` bytes together) and leave it empty. Links and other special
    /// files are removed, never followed.
    pub(crate) fn take_output(&self, limit: u64) -> Result<Collected, ExecError> {
        let Some(output) = &self.output else {
            return Ok(Collected::Files(Vec::new()));
        };
        let mut files = Vec::new();
        let mut total = 0u64;
        let mut too_large = false;
        collect(output, "", limit, &mut total, &mut too_large, &mut files)?;
        empty(output)?;
        Ok(if too_large {
            Collected::TooLarge(total)
        } else {
            files.sort_by(|a, b| a.name.cmp(&b.name));
            Collected::Files(files)
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn create_private(dir: &Path) -> Result<(), ExecError> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| ExecError::io(format!("cannot create {}", dir.display()), e))
}

fn io(what: &str, path: &Path, e: std::io::Error) -> ExecError {
    ExecError::io(format!("cannot {what} {}", path.display()), e)
}

fn is_empty(dir: &Path) -> Result<bool, ExecError> {
    Ok(std::fs::read_dir(dir)
        .map_err(|e| io("read", dir, e))?
        .next()
        .is_none())
}

/// Remove everything inside `dir`, never following links.
fn empty(dir: &Path) -> Result<(), ExecError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io("read", dir, e))? {
        let path = entry.map_err(|e| io("read", dir, e))?.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io("inspect", &path, e))?;
        let removed = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| io("remove", &path, e))?;
    }
    Ok(())
}

/// Copy the regular files and folders of `from` into `to` (links skipped).
fn copy_tree(from: &Path, to: &Path) -> Result<(), ExecError> {
    for entry in std::fs::read_dir(from).map_err(|e| io("read", from, e))? {
        let entry = entry.map_err(|e| io("read", from, e))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&source).map_err(|e| io("inspect", &source, e))?;
        if meta.is_dir() {
            std::fs::create_dir(&target).map_err(|e| io("create", &target, e))?;
            copy_tree(&source, &target)?;
        } else if meta.is_file() {
            std::fs::copy(&source, &target).map_err(|e| io("copy", &source, e))?;
        }
    }
    Ok(())
}

fn collect(
    dir: &Path,
    prefix: &str,
    limit: u64,
    total: &mut u64,
    too_large: &mut bool,
    files: &mut Vec<OutputFile>,
) -> Result<(), ExecError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io("read", dir, e))? {
        let entry = entry.map_err(|e| io("read", dir, e))?;
        let path = entry.path();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io("inspect", &path, e))?;
        if meta.is_dir() {
            collect(&path, &format!("{name}/"), limit, total, too_large, files)?;
        } else if meta.is_file() {
            *total = total.saturating_add(meta.len());
            if *total > limit {
                // Keep counting for the message, but read nothing more.
                *too_large = true;
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| io("read", &path, e))?;
            files.push(OutputFile { name, bytes });
        }
    }
    Ok(())
}
