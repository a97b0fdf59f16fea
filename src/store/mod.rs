//! Durable instance files under `data_dir`.
//!
//! Layout: `instances/<Study UID>/<Series UID>/<SOP Instance UID>.dcm`, every component a
//! validated UID. A file is written to `tmp/`, fsynced, renamed into place, and its directory
//! fsynced; every directory created on the way (a new study, a new series) is fsynced into its
//! parent too. A crash leaves either the whole file or none (and a stray temp file of the
//! node's own naming, swept at start-up). Everything is created owner-only (0700/0600): it is
//! patient data.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dicom_object::FileMetaTable;

pub const INSTANCES_DIR: &str = "instances";
/// Temporary files: the store's `<uuid>.part` and the SCP's spooled data sets.
const TMP_DIR: &str = "tmp";
const PART_SUFFIX: &str = "part";

/// The node's Implementation Class UID (2.25 + a UUIDv5 of "vcnode"), written in file meta.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.130890670624383776139979181715606844580";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("VCNODE_", env!("CARGO_PKG_VERSION"));

/// File meta information for an object the node writes itself (derived instances, phantom and
/// fixture files): Explicit VR Little Endian, vcnode's implementation UID and version.
pub fn explicit_le_meta(
    sop_class: &str,
    sop_instance: &str,
) -> Result<FileMetaTable, dicom_object::meta::Error> {
    dicom_object::meta::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(vcnode_scp::EXPLICIT_VR_LE)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0:?} is not a valid UID; refusing to use it in a path")]
    BadUid(String),
    #[error("could not write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("could not encode the file meta information: {0}")]
    Meta(#[from] dicom_object::meta::Error),
}

impl StoreError {
    /// True when the failure is a full disk (or quota), which maps to "out of resources".
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, StoreError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT))
    }
}

/// The instance files of one node.
#[derive(Debug, Clone)]
pub struct InstanceStore {
    root: PathBuf,
}

impl InstanceStore {
    /// Opens the store under `data_dir`, creating its folders and sweeping temp files left by
    /// a crash (their C-STORE was never acknowledged).
    pub fn open(data_dir: &Path) -> io::Result<InstanceStore> {
        DirBuilder::new().recursive(true).mode(0o700).create(data_dir)?;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))?;
        let store = InstanceStore {
            root: data_dir.to_path_buf(),
        };
        store.create_dirs_durably(&data_dir.join(INSTANCES_DIR))?;
        let tmp = data_dir.join(TMP_DIR);
        store.create_dirs_durably(&tmp)?;
        for entry in fs::read_dir(&tmp)? {
            let path = entry?.path();
            if is_own_temp_file(&path) {
                let _ = fs::remove_file(path);
            }
        }
        Ok(store)
    }

    /// Where the SCP spools data sets as they arrive: on the store's file system, so that the
    /// copy into place stays local.
    pub fn spool_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    /// Creates `dir` (under the root) and its missing parents, owner-only, fsyncing each new
    /// directory's parent so the new entry survives a power cut.
    fn create_dirs_durably(&self, dir: &Path) -> io::Result<()> {
        let relative = dir.strip_prefix(&self.root).unwrap_or(dir);
        let mut current = self.root.clone();
        for part in relative.components() {
            let next = current.join(part);
            match DirBuilder::new().mode(0o700).create(&next) {
                Ok(()) => File::open(&current)?.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            current = next;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of an instance relative to data_dir, from validated UIDs.
    pub fn relative_path(study: &str, series: &str, sop_instance: &str) -> Result<PathBuf, StoreError> {
        Self::path_in(INSTANCES_DIR, study, series, sop_instance)
    }

    /// `<folder>/<study>/<series>/<sop>.dcm`, from validated UIDs (received instances live in
    /// `instances/`, derived ones in `derived/`).
    pub fn path_in(
        folder: &str,
        study: &str,
        series: &str,
        sop_instance: &str,
    ) -> Result<PathBuf, StoreError> {
        for uid in [study, series, sop_instance] {
            if !vcnode_scp::is_valid_uid(uid) {
                return Err(StoreError::BadUid(uid.to_string()));
            }
        }
        Ok(Path::new(folder)
            .join(study)
            .join(series)
            .join(format!("{sop_instance}.dcm")))
    }

    /// Writes a DICOM Part 10 file (preamble, meta, then the data set bytes exactly as received)
    /// durably at `relative`. Returns the file size. Blocking: call off the async runtime.
    pub fn write_part10(
        &self,
        relative: &Path,
        meta: &FileMetaTable,
        dataset: &[u8],
    ) -> Result<u64, StoreError> {
        self.write_part10_from(relative, meta, &mut &dataset[..])
    }

    /// As [`InstanceStore::write_part10`], with the data set read from `dataset` (a spooled
    /// file: copied by the kernel, never held in memory).
    /// (Generic, not `dyn`, so that a `File` source gets std's `copy_file_range` path.)
    pub fn write_part10_from<R: Read>(
        &self,
        relative: &Path,
        meta: &FileMetaTable,
        dataset: &mut R,
    ) -> Result<u64, StoreError> {
        let dest = self.root.join(relative);
        let dir = dest.parent().expect("instance paths have a parent");
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        self.create_dirs_durably(dir).map_err(io_err(dir))?;
        let tmp = self
            .root
            .join(TMP_DIR)
            .join(format!("{}.{PART_SUFFIX}", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            w.write_all(&[0u8; 128]).map_err(io_err(&tmp))?;
            w.write_all(b"DICM").map_err(io_err(&tmp))?;
            meta.write(&mut w)?;
            w.flush().map_err(io_err(&tmp))?;
            let mut file = w.into_inner().map_err(|e| e.into_error()).map_err(io_err(&tmp))?;
            io::copy(dataset, &mut file).map_err(io_err(&tmp))?;
            file.sync_all().map_err(io_err(&tmp))?;
            let size = file.metadata().map_err(io_err(&tmp))?.len();
            fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
            // Make the rename itself durable.
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
            Ok(size)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Bytes an unprivileged writer may still use on the file system holding data_dir.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let st = nix::sys::statvfs::statvfs(&self.root).map_err(io::Error::from)?;
        Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
    }
}

/// `<32 hex digits>.part` (the store's) or `.rx` (the SCP's spool): the node's own temporary
/// files, the only ones a start-up sweep may remove.
fn is_own_temp_file(path: &Path) -> bool {
    let (Some(stem), Some(ext)) = (path.file_stem().and_then(|s| s.to_str()), path.extension()) else {
        return false;
    };
    (ext == PART_SUFFIX || ext == vcnode_scp::SPOOL_SUFFIX)
        && stem.len() == 32
        && stem.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_object::meta::FileMetaTableBuilder;

    #[test]
    fn paths_are_built_from_valid_uids_only() {
        let p = InstanceStore::relative_path("1.2", "1.2.3", "1.2.3.4").unwrap();
        assert_eq!(p, Path::new("instances/1.2/1.2.3/1.2.3.4.dcm"));
        assert!(InstanceStore::relative_path("1.2", "..", "1.2.3").is_err());
        assert!(InstanceStore::relative_path("1.2", "1.2", "1/2").is_err());
    }

    #[test]
    fn writes_a_readable_part10_file_and_sweeps_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(TMP_DIR)).unwrap();
        let stale = format!("{}.part", uuid::Uuid::new_v4().simple());
        fs::write(dir.path().join(TMP_DIR).join(&stale), b"half").unwrap();
        let spool = format!("{}.rx", uuid::Uuid::new_v4().simple());
        fs::write(dir.path().join(TMP_DIR).join(&spool), b"half").unwrap();
        // Someone else's file in tmp/ is not the node's to delete.
        fs::write(dir.path().join(TMP_DIR).join("notes.part"), b"keep").unwrap();
        let store = InstanceStore::open(dir.path()).unwrap();
        let left: Vec<_> = fs::read_dir(dir.path().join(TMP_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec!["notes.part".to_string()]);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);

        let mut obj = dicom_object::InMemDicomObject::new_empty();
        obj.put_str(
            dicom_dictionary_std::tags::SOP_INSTANCE_UID,
            dicom_core::VR::UI,
            "1.2.3.4",
        );
        let ts = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
        let mut bytes = Vec::new();
        obj.write_dataset_with_ts(&mut bytes, &ts).unwrap();
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.1.2")
            .media_storage_sop_instance_uid("1.2.3.4")
            .transfer_syntax(vcnode_scp::EXPLICIT_VR_LE)
            .build()
            .unwrap();
        let rel = InstanceStore::relative_path("1.2", "1.2.3", "1.2.3.4").unwrap();
        store.write_part10(&rel, &meta, &bytes).unwrap();
        assert_eq!(mode(&dir.path().join(&rel)), 0o600);
        assert_eq!(mode(dir.path().join(&rel).parent().unwrap()), 0o700);
        let back = dicom_object::open_file(dir.path().join(&rel)).unwrap();
        assert_eq!(
            back.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap(),
            "1.2.3.4"
        );
        assert!(store.free_bytes().unwrap() > 0);
    }
}
