//! Frames of an instance's pixel data (PS3.18 10.4.1.1.2 "Frames"): native bytes cut per frame,
//! or each frame's compressed bitstream from the encapsulated fragments; and the transcoding of
//! a whole instance into an uncompressed transfer syntax.

use std::path::Path;

use bytes::Bytes;
use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicom_pixeldata::{PixelDecoder, Transcode};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("cannot read the instance: {0}")]
    Read(Box<dicom_object::ReadError>),
    #[error("the instance has no pixel data")]
    NoPixelData,
    /// 1-based, as in the request.
    #[error("frame {0} does not exist")]
    NoFrame(u32),
    #[error("the pixel data is shorter than its frames")]
    Truncated,
    #[error("cannot decode the pixel data: {0}")]
    Decode(Box<dicom_pixeldata::Error>),
    #[error("unknown transfer syntax {0}")]
    UnknownSyntax(String),
    #[error("cannot transcode: {0}")]
    Transcode(Box<dicom_pixeldata::TranscodeError>),
    #[error("cannot write the instance: {0}")]
    Write(Box<dicom_object::WriteError>),
}

// The dicom-rs errors are large; boxed, a Result stays small on the happy path.
macro_rules! boxed_from {
    ($($source:ty => $variant:ident),* $(,)?) => {$(
        impl From<$source> for FrameError {
            fn from(e: $source) -> Self {
                FrameError::$variant(Box::new(e))
            }
        }
    )*};
}
boxed_from! {
    dicom_object::ReadError => Read,
    dicom_pixeldata::Error => Decode,
    dicom_pixeldata::TranscodeError => Transcode,
    dicom_object::WriteError => Write,
}

fn int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.element(tag).ok().and_then(|e| e.to_int::<u32>().ok())
}

/// Number of Frames, 1 when absent.
pub fn number_of_frames(obj: &InMemDicomObject) -> u32 {
    int(obj, tags::NUMBER_OF_FRAMES).filter(|&n| n > 0).unwrap_or(1)
}

/// The bytes of one native frame: Rows × Columns × Samples × Bits Allocated.
fn native_frame_len(obj: &InMemDicomObject) -> usize {
    let rows = int(obj, tags::ROWS).unwrap_or(0) as usize;
    let cols = int(obj, tags::COLUMNS).unwrap_or(0) as usize;
    let samples = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as usize;
    let bits = int(obj, tags::BITS_ALLOCATED).unwrap_or(16) as usize;
    (rows * cols * samples * bits).div_ceil(8)
}

/// Whether `fragment` starts a compressed image: a JPEG SOI or a JPEG 2000 codestream / JP2
/// signature (how frames are told apart when several fragments and no offset table are stored).
fn starts_image(fragment: &[u8]) -> bool {
    fragment.starts_with(&[0xFF, 0xD8])
        || fragment.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
        || fragment.starts_with(&[0, 0, 0, 0x0C, b'j', b'P'])
}

/// The fragments of each frame (PS3.5 A.4): one frame takes them all; as many fragments as
/// frames is one each; else the Basic Offset Table; else where an image starts.
fn group_fragments<'a>(fragments: &'a [Vec<u8>], offsets: &[u32], frames: usize) -> Vec<Vec<&'a [u8]>> {
    if frames <= 1 {
        return vec![fragments.iter().map(Vec::as_slice).collect()];
    }
    if fragments.len() == frames {
        return fragments.iter().map(|f| vec![f.as_slice()]).collect();
    }
    let mut groups: Vec<Vec<&[u8]>> = Vec::new();
    if offsets.len() == frames {
        // Offsets count bytes from the first fragment's item tag: 8 bytes of item header each.
        let mut position = 0u64;
        let mut next = 0;
        for f in fragments {
            if next < offsets.len() && position >= offsets[next] as u64 {
                groups.push(Vec::new());
                next += 1;
            }
            if let Some(g) = groups.last_mut() {
                g.push(f.as_slice());
            }
            position += 8 + f.len() as u64;
        }
    } else {
        for f in fragments {
            if groups.is_empty() || starts_image(f) {
                groups.push(Vec::new());
            }
            groups.last_mut().expect("pushed above").push(f.as_slice());
        }
    }
    groups
}

/// Whether a transfer syntax encapsulates its pixel data.
pub fn is_encapsulated(ts: &str) -> bool {
    TransferSyntaxRegistry
        .get(ts)
        .map(|t| t.is_encapsulated_pixel_data())
        .unwrap_or(false)
}

/// The requested frames (1-based) in the stored encoding: native bytes, or the concatenated
/// fragments of each compressed frame.
pub fn stored_frames(
    obj: &FileDicomObject<InMemDicomObject>,
    wanted: &[u32],
) -> Result<Vec<Bytes>, FrameError> {
    let pixel = obj
        .element(tags::PIXEL_DATA)
        .map_err(|_| FrameError::NoPixelData)?;
    let frames = number_of_frames(obj);
    if let Some(&n) = wanted.iter().find(|&&n| n == 0 || n > frames) {
        return Err(FrameError::NoFrame(n));
    }
    match pixel.value() {
        Value::PixelSequence(seq) => {
            let groups = group_fragments(seq.fragments(), seq.offset_table(), frames as usize);
            wanted
                .iter()
                .map(|&n| {
                    let g = groups.get(n as usize - 1).ok_or(FrameError::NoFrame(n))?;
                    Ok(Bytes::from(g.concat()))
                })
                .collect()
        }
        Value::Primitive(p) => {
            let data = p.to_bytes();
            let len = native_frame_len(obj);
            wanted
                .iter()
                .map(|&n| {
                    let start = (n as usize - 1) * len;
                    data.get(start..start + len)
                        .map(Bytes::copy_from_slice)
                        .ok_or(FrameError::Truncated)
                })
                .collect()
        }
        Value::Sequence(_) => Err(FrameError::NoPixelData),
    }
}

/// The requested frames (1-based) as uncompressed native bytes (decoded if compressed).
pub fn uncompressed_frames(
    obj: &FileDicomObject<InMemDicomObject>,
    wanted: &[u32],
) -> Result<Vec<Bytes>, FrameError> {
    if !is_encapsulated(obj.meta().transfer_syntax()) {
        return stored_frames(obj, wanted);
    }
    if obj.element(tags::PIXEL_DATA).is_err() {
        return Err(FrameError::NoPixelData);
    }
    let frames = number_of_frames(obj);
    if let Some(&n) = wanted.iter().find(|&&n| n == 0 || n > frames) {
        return Err(FrameError::NoFrame(n));
    }
    wanted
        .iter()
        .map(|&n| {
            let decoded = obj.decode_pixel_data_frame(n - 1)?;
            Ok(Bytes::from(decoded.data().to_vec()))
        })
        .collect()
}

/// The instance at `path` as a Part 10 file in the uncompressed transfer syntax `ts`
/// (dicom-pixeldata's `Transcode`: compressed pixel data decoded). Blocking.
pub fn transcode_file(path: &Path, ts: &str) -> Result<Vec<u8>, FrameError> {
    let target = TransferSyntaxRegistry
        .get(ts)
        .ok_or_else(|| FrameError::UnknownSyntax(ts.to_string()))?;
    let mut obj = dicom_object::open_file(path)?;
    obj.transcode(target)?;
    let mut out = Vec::new();
    obj.write_all(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_are_grouped_into_frames() {
        let frags: Vec<Vec<u8>> = vec![vec![0xFF, 0xD8, 1], vec![2, 3], vec![0xFF, 0xD8, 4, 5], vec![6]];
        let one = group_fragments(&frags, &[], 1);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].concat(), vec![0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD8, 4, 5, 6]);
        // By the offset table: frame 2 starts at the third item (8+3 + 8+2 = 21 bytes in).
        let by_table = group_fragments(&frags, &[0, 21], 2);
        assert_eq!(by_table[1].concat(), vec![0xFF, 0xD8, 4, 5, 6]);
        // Without one: where an image starts.
        let by_marker = group_fragments(&frags, &[], 2);
        assert_eq!(by_marker[0].concat(), vec![0xFF, 0xD8, 1, 2, 3]);
        assert_eq!(by_marker[1].concat(), vec![0xFF, 0xD8, 4, 5, 6]);
        assert_eq!(group_fragments(&frags, &[], 4).len(), 4);
    }

    #[test]
    fn native_frames_are_cut_from_the_pixel_data() {
        use crate::fixture::{mammogram, pixels, MammogramSpec};
        let spec = MammogramSpec {
            rows: 8,
            columns: 6,
            ..MammogramSpec::low_energy(4)
        };
        let obj = mammogram(&spec);
        let frames = stored_frames(&obj, &[1]).unwrap();
        let expected: Vec<u8> = pixels(&spec).iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(frames[0].as_ref(), expected.as_slice());
        assert!(matches!(stored_frames(&obj, &[2]), Err(FrameError::NoFrame(2))));
        assert!(matches!(stored_frames(&obj, &[0]), Err(FrameError::NoFrame(0))));
    }
}
