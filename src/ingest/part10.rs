//! DICOM Part 10 files arriving over HTTP, one per part of a `multipart/related` body: a
//! STOW-RS request (src/web/stow.rs) or a WADO-RS answer to a pull (src/pull). One spooler for
//! both: the part streams into a spool file in the store's spool folder (never whole in
//! memory), its file meta group is read off the front for the SOP Class, SOP Instance and
//! Transfer Syntax, and the data set after it is what the spool file holds, as the SCP hands
//! a C-STORE's data set to ingest.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use dicom_object::meta::FileMetaTable;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tracing::debug;
use vcnode_scp::SpooledDataSet;

/// Preamble (128 bytes) and "DICM".
const PREAMBLE_AND_MAGIC: usize = 132;

/// Up to and including the File Meta Information Group Length element (0002,0000) UL 4.
const META_GROUP_LENGTH_END: usize = PREAMBLE_AND_MAGIC + 12;

/// The largest file meta group read: a few hundred bytes in practice; a larger one is not a
/// file meta group.
const MAX_META_BYTES: u32 = 64 << 10;

/// What a Part 10 file's meta group says (values trimmed of their padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
}

/// A part spooled: its file meta and its data set.
#[derive(Debug)]
pub struct Part10 {
    pub meta: FileMeta,
    pub dataset: SpooledDataSet,
}

/// Why a part was not spooled. All but [`SpoolError::Read`] concern the part alone: the
/// stream is left where the spooler stopped, and a caller that goes on to the next part reads
/// the rest of this one first.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError<E> {
    /// Not a DICOM Part 10 file; the reason in words.
    #[error("{0}")]
    NotPart10(&'static str),
    /// The data set is over the byte limit (`storage.max_instance_mb`).
    #[error("instance larger than this node accepts (storage.max_instance_mb)")]
    TooLarge(FileMeta),
    /// The spool file could not be created or written (the cause is for the log only: it
    /// names a node path).
    #[error("vcnode could not spool the instance")]
    Spool(FileMeta, #[source] std::io::Error),
    /// Reading the body failed (the caller's own error: malformed, timed out, too slow).
    #[error(transparent)]
    Read(E),
}

/// Spools one part, given as its chunks: the preamble and file meta group into memory
/// (bounded), the data set into a spool file in `spool_dir`, at most `max_dataset` bytes of
/// it. The spool file is removed on any error (or when the future is dropped).
pub async fn spool<S, E>(chunks: S, spool_dir: &Path, max_dataset: u64) -> Result<Part10, SpoolError<E>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let mut chunks = std::pin::pin!(chunks);
    let mut head: Vec<u8> = Vec::new();
    while head.len() < META_GROUP_LENGTH_END {
        match next(&mut chunks).await? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => break,
        }
    }
    let meta_end = meta_group_end(&head)?;
    while head.len() < meta_end {
        match next(&mut chunks).await? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => return Err(SpoolError::NotPart10("file meta information truncated")),
        }
    }
    let meta = file_meta(&head[..meta_end])?;

    let path = spool_dir.join(format!(
        "{}.{}",
        uuid::Uuid::new_v4().simple(),
        vcnode_scp::SPOOL_SUFFIX
    ));
    let guard = RemoveOnDrop(Some(path.clone()));
    let file = match tokio::fs::File::create(&path).await {
        Ok(f) => f,
        Err(e) => return Err(SpoolError::Spool(meta, e)),
    };
    let mut file = tokio::io::BufWriter::with_capacity(256 << 10, file);
    let mut written = 0u64;
    let mut pending = Some(Bytes::from(head).slice(meta_end..));
    loop {
        let chunk = match pending.take() {
            Some(c) => c,
            None => match next(&mut chunks).await? {
                Some(c) => c,
                None => break,
            },
        };
        written += chunk.len() as u64;
        if written > max_dataset {
            return Err(SpoolError::TooLarge(meta));
        }
        if let Err(e) = file.write_all(&chunk).await {
            return Err(SpoolError::Spool(meta, e));
        }
    }
    if let Err(e) = file.flush().await {
        return Err(SpoolError::Spool(meta, e));
    }
    drop(file);
    let dataset = match SpooledDataSet::adopt(path) {
        Ok(d) => d,
        Err(e) => return Err(SpoolError::Spool(meta, e)),
    };
    guard.disarm();
    Ok(Part10 { meta, dataset })
}

/// The next chunk of the part, None at its end.
async fn next<S, E>(chunks: &mut std::pin::Pin<&mut S>) -> Result<Option<Bytes>, SpoolError<E>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    chunks.next().await.transpose().map_err(SpoolError::Read)
}

/// Where the file meta group of `head` (at least [`META_GROUP_LENGTH_END`] bytes unless the
/// part ended) ends: its group length (0002,0000) UL 4 leads it, in Explicit VR Little Endian
/// (PS3.10 7.1).
fn meta_group_end<E>(head: &[u8]) -> Result<usize, SpoolError<E>> {
    if head.len() < META_GROUP_LENGTH_END || &head[128..PREAMBLE_AND_MAGIC] != b"DICM" {
        return Err(SpoolError::NotPart10(
            "not a DICOM Part 10 file (no preamble and DICM prefix)",
        ));
    }
    let group = &head[PREAMBLE_AND_MAGIC..META_GROUP_LENGTH_END];
    let group_length = u32::from_le_bytes([group[8], group[9], group[10], group[11]]);
    if group[..8] != [0x02, 0x00, 0x00, 0x00, b'U', b'L', 0x04, 0x00] || group_length > MAX_META_BYTES {
        return Err(SpoolError::NotPart10(
            "file meta information malformed (group length)",
        ));
    }
    Ok(META_GROUP_LENGTH_END + group_length as usize)
}

/// The file meta of `head`, preamble to the end of the group exactly.
fn file_meta<E>(head: &[u8]) -> Result<FileMeta, SpoolError<E>> {
    let mut cursor = Cursor::new(&head[128..]);
    match FileMetaTable::from_reader(&mut cursor) {
        Ok(table) if cursor.position() as usize == head.len() - 128 => Ok(FileMeta {
            sop_class_uid: vcnode_scp::trim_value(table.media_storage_sop_class_uid()).to_string(),
            sop_instance_uid: vcnode_scp::trim_value(table.media_storage_sop_instance_uid()).to_string(),
            transfer_syntax: vcnode_scp::trim_value(table.transfer_syntax()).to_string(),
        }),
        other => {
            if let Err(e) = other {
                debug!(error = %e, "file meta information refused");
            }
            Err(SpoolError::NotPart10("file meta information malformed"))
        }
    }
}

/// A spool file removed on drop unless handed to a [`SpooledDataSet`].
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A `multipart/related` Content-Type: the media type of its parts (`type`, essence in lower
/// case) and its boundary, either absent when not given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartRelated {
    pub part_type: Option<String>,
    pub boundary: Option<String>,
}

/// Reads a `multipart/related` Content-Type; Err with the essence found (lower case) for any
/// other media type. Parameters may be quoted or not: several servers send an unquoted
/// `type=application/dicom`, which the `mime` crate refuses.
pub fn multipart_related(content_type: &str) -> Result<MultipartRelated, String> {
    let (essence, params) = parse_media_type(content_type);
    if essence != "multipart/related" {
        return Err(essence);
    }
    Ok(MultipartRelated {
        part_type: param(&params, "type").map(|t| parse_media_type(t).0),
        boundary: param(&params, "boundary")
            .filter(|b| !b.is_empty())
            .map(str::to_string),
    })
}

/// A media type's essence (lower case) and its parameters (names in lower case, values
/// unquoted), per RFC 9110 8.3.1.
pub fn parse_media_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut pieces = Vec::new();
    let (mut current, mut quoted, mut escaped) = (String::new(), false, false);
    for c in value.chars() {
        match c {
            _ if escaped => {
                current.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => pieces.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    pieces.push(current);
    let mut pieces = pieces.into_iter();
    let essence = pieces.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = pieces
        .filter_map(|p| {
            let (name, value) = p.split_once('=')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect();
    (essence, params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boundary_comes_from_a_multipart_related_content_type_only() {
        let b = |ct: &str| multipart_related(ct).map(|m| m.boundary);
        assert_eq!(
            b("multipart/related; type=\"application/dicom\"; boundary=abc-123"),
            Ok(Some("abc-123".into()))
        );
        assert_eq!(
            b("Multipart/Related; BOUNDARY=\"q u\"; type=application/dicom"),
            Ok(Some("q u".into()))
        );
        assert_eq!(
            b("multipart/related; type=\"application/dicom\"; boundary=\"a;b c\""),
            Ok(Some("a;b c".into()))
        );
        assert_eq!(b("application/dicom"), Err("application/dicom".into()));
        assert_eq!(b("multipart/related; type=application/dicom"), Ok(None));
        assert_eq!(
            multipart_related("multipart/related; type=\"Application/DICOM+xml\"; boundary=x")
                .unwrap()
                .part_type
                .as_deref(),
            Some("application/dicom+xml")
        );
    }

    fn chunks(bytes: &[u8], size: usize) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
        let pieces: Vec<_> = bytes
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(pieces)
    }

    #[tokio::test]
    async fn a_part_10_file_is_split_into_its_meta_and_its_data_set_as_it_arrives() {
        let spool_dir = tempfile::tempdir().unwrap();
        let obj = crate::fixture::mammogram(&crate::fixture::MammogramSpec::low_energy(3));
        let mut file = Vec::new();
        obj.write_all(&mut file).unwrap();
        let mut data_set = Vec::new();
        obj.write_dataset_with_ts(
            &mut data_set,
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        for size in [1, 100, 150, file.len()] {
            let part = spool(chunks(&file, size), spool_dir.path(), u64::MAX)
                .await
                .unwrap();
            assert_eq!(
                std::fs::read(part.dataset.path()).unwrap(),
                data_set,
                "the data set follows the meta"
            );
            assert_eq!(
                part.meta.sop_instance_uid,
                vcnode_scp::trim_value(obj.meta().media_storage_sop_instance_uid())
            );
        }
        let too_large = spool(chunks(&file, 4096), spool_dir.path(), 1000).await;
        assert!(matches!(too_large, Err(SpoolError::TooLarge(_))), "{too_large:?}");
        let mut not_dicom = file.clone();
        not_dicom[128..132].copy_from_slice(b"DICX");
        let refused = spool(chunks(&not_dicom, 4096), spool_dir.path(), u64::MAX).await;
        assert!(matches!(refused, Err(SpoolError::NotPart10(_))), "{refused:?}");
        let truncated = spool(chunks(&file[..200], 4096), spool_dir.path(), u64::MAX).await;
        assert!(
            matches!(truncated, Err(SpoolError::NotPart10(_))),
            "{truncated:?}"
        );
        let left: Vec<_> = std::fs::read_dir(spool_dir.path()).unwrap().collect();
        assert!(left.is_empty(), "refusals leave no spool file: {left:?}");
    }
}
