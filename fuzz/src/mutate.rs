//! Structure-aware mutation. Without coverage instrumentation (stable Rust), random bytes
//! rarely get past the first length check, so mutations aim at what the parsers decide on:
//! element and PDU boundaries, length fields, sequence and item headers, and nesting.

use rand::rngs::StdRng;
use rand::Rng;

/// How the bytes of an input are laid out, for finding its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A data set (or command set) in Implicit VR Little Endian, starting at `skip`.
    Implicit { skip: usize },
    /// A data set in Explicit VR Little Endian, starting at `skip`.
    Explicit { skip: usize },
    /// A stream of PDUs (PS3.8 9.3), P-DATA-TF items walked into.
    Pdus,
    /// Opaque bytes (a deflate stream).
    Opaque,
}

/// A length field: where, how wide, and its byte order.
#[derive(Debug, Clone, Copy)]
pub struct LengthField {
    pub at: usize,
    pub width: usize,
    pub big_endian: bool,
}

/// The boundaries (element, item or PDU starts) and length fields found in an input.
#[derive(Debug, Default)]
pub struct Fields {
    pub boundaries: Vec<usize>,
    pub lengths: Vec<LengthField>,
}

/// VRs with a 4-byte length in Explicit VR (PS3.5 7.1.2).
const LONG_VRS: &[&[u8; 2]] = &[
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];

/// Walks element headers linearly, entering every sequence and item (a token walk, not a
/// parse: values are skipped by their length, undefined lengths are stepped into).
fn walk_dataset(bytes: &[u8], skip: usize, explicit: bool, out: &mut Fields) {
    let mut pos = skip;
    while pos + 8 <= bytes.len() && out.boundaries.len() < 4096 {
        out.boundaries.push(pos);
        let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        let le32 = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        if group == 0xFFFE {
            // Item, item delimiter, sequence delimiter: always tag + 4-byte length.
            out.lengths.push(LengthField {
                at: pos + 4,
                width: 4,
                big_endian: false,
            });
            pos += 8;
            continue;
        }
        let (len_at, width, header) = if explicit {
            let vr = [bytes[pos + 4], bytes[pos + 5]];
            if LONG_VRS.iter().any(|v| **v == vr) {
                (pos + 8, 4, 12)
            } else {
                (pos + 6, 2, 8)
            }
        } else {
            (pos + 4, 4, 8)
        };
        if len_at + width > bytes.len() {
            break;
        }
        out.lengths.push(LengthField {
            at: len_at,
            width,
            big_endian: false,
        });
        let len = if width == 4 {
            le32(len_at)
        } else {
            u16::from_le_bytes([bytes[len_at], bytes[len_at + 1]]) as u32
        };
        let is_sq = explicit && &bytes[pos + 4..pos + 6] == b"SQ";
        pos += header;
        if len != u32::MAX && !is_sq {
            pos = pos.saturating_add(len as usize);
        }
    }
}

/// Walks PDU headers, and the PDV items of P-DATA-TF PDUs.
fn walk_pdus(bytes: &[u8], out: &mut Fields) {
    let mut pos = 0;
    while pos + 6 <= bytes.len() && out.boundaries.len() < 4096 {
        out.boundaries.push(pos);
        out.lengths.push(LengthField {
            at: pos + 2,
            width: 4,
            big_endian: true,
        });
        let len =
            u32::from_be_bytes([bytes[pos + 2], bytes[pos + 3], bytes[pos + 4], bytes[pos + 5]]) as usize;
        let end = (pos + 6).saturating_add(len).min(bytes.len());
        if bytes[pos] == 0x04 {
            let mut item = pos + 6;
            while item + 6 <= end {
                out.boundaries.push(item);
                out.lengths.push(LengthField {
                    at: item,
                    width: 4,
                    big_endian: true,
                });
                let ilen =
                    u32::from_be_bytes([bytes[item], bytes[item + 1], bytes[item + 2], bytes[item + 3]])
                        as usize;
                item = (item + 4).saturating_add(ilen);
            }
        }
        pos = end;
    }
}

pub fn fields(bytes: &[u8], layout: Layout) -> Fields {
    let mut out = Fields::default();
    match layout {
        Layout::Implicit { skip } => walk_dataset(bytes, skip, false, &mut out),
        Layout::Explicit { skip } => walk_dataset(bytes, skip, true, &mut out),
        Layout::Pdus => walk_pdus(bytes, &mut out),
        Layout::Opaque => {}
    }
    out
}

const INTERESTING_U32: &[u32] = &[
    0,
    1,
    2,
    4,
    6,
    7,
    8,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x3FF,
    0x400,
    0x3FFA,
    0x4000,
    0x7FFF,
    0x8000,
    0xFFFE,
    0xFFFF,
    0x1_0000,
    0x10_0000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFF0,
    0xFFFF_FFFE,
    0xFFFF_FFFF,
];
const INTERESTING_U8: &[u8] = &[0, 1, 0x02, 0x03, 0x04, 0x7F, 0x80, 0xFE, 0xFF];

/// DICOM tokens that change nesting: item, item delimiter, sequence delimiter.
const ITEM: [u8; 8] = [0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF];
const ITEM_DELIM: [u8; 8] = [0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0];
const SEQ_DELIM: [u8; 8] = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
/// Content Sequence (0040,A730), undefined length, in both encodings.
const SQ_IMPLICIT: [u8; 8] = [0x40, 0x00, 0x30, 0xA7, 0xFF, 0xFF, 0xFF, 0xFF];
const SQ_EXPLICIT: [u8; 12] = [0x40, 0x00, 0x30, 0xA7, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
/// Tags the checks look at, to graft onto other headers.
const TAGS: &[[u8; 4]] = &[
    [0x08, 0x00, 0x16, 0x00], // SOP Class UID
    [0x08, 0x00, 0x18, 0x00], // SOP Instance UID
    [0x28, 0x00, 0x10, 0x00], // Rows
    [0x28, 0x00, 0x11, 0x00], // Columns
    [0x28, 0x00, 0x00, 0x01], // Bits Allocated
    [0x28, 0x00, 0x08, 0x00], // Number of Frames
    [0xE0, 0x7F, 0x10, 0x00], // Pixel Data
    [0x02, 0x00, 0x10, 0x00], // Transfer Syntax UID (a meta element in a data set)
    [0x00, 0x00, 0x00, 0x01], // Command Field
    [0x00, 0x00, 0x00, 0x08], // Command Data Set Type
    [0x00, 0x00, 0x00, 0x00], // Command Group Length
    [0xFE, 0xFF, 0x00, 0xE0], // Item
    [0x40, 0x00, 0x30, 0xA7], // Content Sequence
];

/// Values that make number parsing, geometry and string handling work.
const VALUES: &[&[u8]] = &[
    b"",
    b"0 ",
    b"1 ",
    b"-1",
    b"65535 ",
    b"4294967296",
    b"99999999999999999999",
    b"1e308 ",
    b"NaN ",
    b"\\\\",
    b"1.2.840.10008.1.2.1.99\0",
    b"MONOCHROME1 ",
    b"RGB ",
    b"PALETTE COLOR ",
    b"YBR_FULL",
];

fn read_int(input: &[u8], field: LengthField) -> u32 {
    let b = &input[field.at..field.at + field.width];
    match (field.width, field.big_endian) {
        (4, true) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        (4, false) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        (_, true) => u16::from_be_bytes([b[0], b[1]]) as u32,
        (_, false) => u16::from_le_bytes([b[0], b[1]]) as u32,
    }
}

/// Mutates inputs for one target; `max_len` caps their size.
pub struct Mutator {
    pub rng: StdRng,
    pub max_len: usize,
}

impl Mutator {
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.rng.gen_range(0..from.len())]
    }

    fn offset(&mut self, len: usize) -> usize {
        if len == 0 {
            0
        } else {
            self.rng.gen_range(0..len)
        }
    }

    /// A boundary when the layout has any (most of the time), else any offset.
    fn place(&mut self, input: &[u8], f: &Fields) -> usize {
        if !f.boundaries.is_empty() && self.rng.gen_bool(0.85) {
            self.pick(&f.boundaries).min(input.len())
        } else {
            self.offset(input.len() + 1)
        }
    }

    fn write_int(input: &mut [u8], at: usize, width: usize, big_endian: bool, v: u32) {
        let bytes = if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        let src = if big_endian {
            &bytes[4 - width..]
        } else {
            &bytes[..width]
        };
        if at + width <= input.len() {
            input[at..at + width].copy_from_slice(src);
        }
    }

    /// Applies one to four stacked mutations; `other` is another corpus entry for splicing.
    pub fn mutate(&mut self, input: &mut Vec<u8>, layout: Layout, other: &[u8]) {
        let rounds = self.rng.gen_range(1..=4);
        for _ in 0..rounds {
            let f = fields(input, layout);
            self.once(input, layout, &f, other);
            if input.len() > self.max_len {
                input.truncate(self.max_len);
            }
        }
    }

    fn once(&mut self, input: &mut Vec<u8>, layout: Layout, f: &Fields, other: &[u8]) {
        let dicom = matches!(layout, Layout::Implicit { .. } | Layout::Explicit { .. });
        match self.rng.gen_range(0..16) {
            // Bit flip.
            0 if !input.is_empty() => {
                let at = self.offset(input.len());
                input[at] ^= 1 << self.rng.gen_range(0..8);
            }
            // A byte set to an interesting value, or nudged.
            1 if !input.is_empty() => {
                let at = self.offset(input.len());
                input[at] = if self.rng.gen_bool(0.5) {
                    self.pick(INTERESTING_U8)
                } else {
                    input[at].wrapping_add(self.rng.gen_range(1..=8)).wrapping_sub(4)
                };
            }
            // A 2- or 4-byte integer anywhere set to an interesting value.
            2 if input.len() >= 4 => {
                let width = if self.rng.gen_bool(0.5) { 2 } else { 4 };
                let at = self.offset(input.len() - width + 1);
                let v = self.pick(INTERESTING_U32);
                let be = self.rng.gen_bool(0.3);
                Self::write_int(input, at, width, be, v);
            }
            // A length field rewritten: interesting, off by a little, or the bytes left.
            3 | 4 if !f.lengths.is_empty() => {
                let field = self.pick(&f.lengths);
                let rest = input.len().saturating_sub(field.at + field.width) as u32;
                let old = read_int(input, field);
                let v = match self.rng.gen_range(0..4) {
                    0 => self.pick(INTERESTING_U32),
                    1 => old.wrapping_add(self.rng.gen_range(1..=16)),
                    2 => old.wrapping_sub(self.rng.gen_range(1..=16)),
                    _ => rest,
                };
                Self::write_int(input, field.at, field.width, field.big_endian, v);
            }
            // A nesting token inserted at a boundary.
            5 | 6 if dicom => {
                let at = self.place(input, f);
                let token: &[u8] = match self.rng.gen_range(0..5) {
                    0 => &ITEM,
                    1 => &ITEM_DELIM,
                    2 => &SEQ_DELIM,
                    _ if matches!(layout, Layout::Explicit { .. }) => &SQ_EXPLICIT,
                    _ => &SQ_IMPLICIT,
                };
                input.splice(at..at, token.iter().copied());
            }
            // Nested sequences: a few (within the depth limit) or thousands, closed or not.
            7 if dicom => {
                let at = self.place(input, f);
                let depth = match self.rng.gen_range(0..4) {
                    0 => self.rng.gen_range(100..5_000),
                    _ => self.rng.gen_range(1..24),
                };
                let sq: &[u8] = if matches!(layout, Layout::Explicit { .. }) {
                    &SQ_EXPLICIT
                } else {
                    &SQ_IMPLICIT
                };
                let mut bomb = Vec::with_capacity(depth * (sq.len() + 24));
                for _ in 0..depth {
                    bomb.extend_from_slice(sq);
                    bomb.extend_from_slice(&ITEM);
                }
                if self.rng.gen_bool(0.5) {
                    for _ in 0..depth {
                        bomb.extend_from_slice(&ITEM_DELIM);
                        bomb.extend_from_slice(&SEQ_DELIM);
                    }
                }
                input.splice(at..at, bomb);
            }
            // A known tag grafted onto an element header.
            8 if dicom && !f.boundaries.is_empty() => {
                let at = self.pick(&f.boundaries);
                let tag = self.pick(TAGS);
                if at + 4 <= input.len() {
                    input[at..at + 4].copy_from_slice(&tag);
                }
            }
            // Delete a chunk: one element/PDU (boundary to boundary) or a random range.
            9 if !input.is_empty() => {
                let (a, b) = self.range(input, f);
                input.drain(a..b);
            }
            // Duplicate a chunk somewhere (an element or PDU copied to another boundary).
            10 if !input.is_empty() => {
                let (a, b) = self.range(input, f);
                let chunk = input[a..b].to_vec();
                let at = self.place(input, f);
                input.splice(at..at, chunk);
            }
            // Insert random bytes.
            11 => {
                let at = self.offset(input.len() + 1);
                let n = self.rng.gen_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.gen()).collect();
                input.splice(at..at, bytes);
            }
            // Splice: our head, another input's tail.
            12 if !other.is_empty() => {
                let at = self.place(input, f);
                let from = self.offset(other.len());
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            // Truncate.
            13 if !input.is_empty() => {
                let at = self.place(input, f);
                input.truncate(at.max(1).min(input.len()));
            }
            // A short value replaced by an extreme one (numbers as text or binary, empty,
            // backslashes), its length field rewritten to match.
            14 | 15 if !f.lengths.is_empty() => {
                let field = self.pick(&f.lengths);
                let start = field.at + field.width;
                let old = read_int(input, field);
                let end = start.saturating_add(old as usize);
                if old > 64 || end > input.len() {
                    return;
                }
                let value: Vec<u8> = match self.rng.gen_range(0..3) {
                    0 => self.pick(VALUES).to_vec(),
                    1 => self.pick(INTERESTING_U32).to_le_bytes()[..2].to_vec(),
                    _ => self.pick(INTERESTING_U32).to_le_bytes().to_vec(),
                };
                let new_len = value.len() as u32;
                input.splice(start..end, value);
                Self::write_int(input, field.at, field.width, field.big_endian, new_len);
            }
            // The chosen mutation does not apply: flip a bit if anything is there.
            _ => {
                if !input.is_empty() {
                    let at = self.offset(input.len());
                    input[at] ^= 1 << self.rng.gen_range(0..8);
                } else {
                    input.push(self.rng.gen());
                }
            }
        }
    }

    /// A range to delete or copy: from one boundary to a later one, or random.
    fn range(&mut self, input: &[u8], f: &Fields) -> (usize, usize) {
        if f.boundaries.len() >= 2 && self.rng.gen_bool(0.7) {
            let i = self.rng.gen_range(0..f.boundaries.len() - 1);
            let j = self.rng.gen_range(i + 1..=(i + 3).min(f.boundaries.len() - 1));
            let (a, b) = (f.boundaries[i].min(input.len()), f.boundaries[j].min(input.len()));
            if a < b {
                return (a, b);
            }
        }
        let a = self.offset(input.len());
        let b = (a + self.rng.gen_range(1..=64)).min(input.len());
        (a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_finds_explicit_headers_and_pdv_lengths() {
        // (0008,0016) UI len 2 "1\0", then (0040,A730) SQ undefined, an item, a delimiter.
        let mut ds = vec![0x08, 0x00, 0x16, 0x00, b'U', b'I', 2, 0, b'1', 0];
        ds.extend_from_slice(&SQ_EXPLICIT);
        ds.extend_from_slice(&ITEM);
        ds.extend_from_slice(&ITEM_DELIM);
        let f = fields(&ds, Layout::Explicit { skip: 0 });
        assert_eq!(f.boundaries, vec![0, 10, 22, 30]);
        assert_eq!(f.lengths[0].at, 6);
        assert_eq!(f.lengths[1].at, 18);
        // A P-DATA-TF of one PDV holding 2 bytes.
        let pdu = [4, 0, 0, 0, 0, 8, 0, 0, 0, 4, 1, 3, 0xAA, 0xBB];
        let f = fields(&pdu, Layout::Pdus);
        assert_eq!(f.boundaries, vec![0, 6]);
        assert!(f.lengths.iter().all(|l| l.big_endian));
    }
}
