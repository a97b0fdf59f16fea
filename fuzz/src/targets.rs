//! The fuzz targets: the node's code that reads peer bytes, with the properties it must keep.
//! A target panics when a property fails; the engine catches and saves the input. Each run
//! returns a behaviour signature (which branch, which error) that stands in for coverage.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Cursor;
use std::time::Duration;

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntax;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN};
use dicom_ul::pdu::{PDataValueType, Pdu, PDU_HEADER_SIZE};
use vcnode::ingest::scan::{self, Limits, ScanError};
use vcnode_scp::command::{self, Command, CommandError};
use vcnode_scp::pdu::{limit_for, read_bounded, PduError};
use vcnode_scp::reassembly::{Event, Reassembly, ReassemblyError, MAX_COMMAND_BYTES};

use crate::mutate::Layout;
use crate::seeds;

pub const NAMES: &[&str] = &["command", "pdata", "scan"];

/// The node's shipped sequence depth limit (conf/vcnode.toml); pixel and inflate limits are
/// small so that accepted inputs decode quickly.
pub const LIMITS: Limits = Limits {
    max_sequence_depth: 16,
    max_pixel_bytes: 1 << 20,
    max_inflated_bytes: 1 << 20,
};
/// The P-DATA-TF limit the SCP offers (a typical negotiated maximum PDU length).
const MAX_PDU: u32 = 16 * 1024;
/// The data set limit for reassembly: small, so that the fuzzer reaches it.
const MAX_DATA_SET: u64 = 64 * 1024;

pub trait Target {
    fn name(&self) -> &'static str;
    fn seeds(&self) -> Vec<Vec<u8>>;
    fn layout(&self, input: &[u8]) -> Layout;
    /// The largest input worth trying (the node's own cap, or enough to hit it).
    fn max_len(&self) -> usize;
    /// Runs one input; panics when a property fails.
    fn run(&mut self, input: &[u8]) -> u64;
    /// Oddities of the last run that are not failures but worth a look (e.g. a data set that
    /// ingest accepts and the pipeline cannot read), by kind.
    fn take_note(&mut self) -> Option<String> {
        None
    }
    /// How far runs got, for the report.
    fn stats(&self) -> String {
        String::new()
    }
}

pub fn make(name: &str) -> Option<Box<dyn Target>> {
    match name {
        "command" => Some(Box::new(CommandTarget)),
        "pdata" => Some(Box::new(PDataTarget::new())),
        "scan" => Some(Box::new(ScanTarget::default())),
        "canary-panic" => Some(Box::new(Canary("panic"))),
        "canary-overflow" => Some(Box::new(Canary("overflow"))),
        _ => None,
    }
}

fn signature(parts: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// The start of an error message without its numbers (offsets, lengths, tags), as a coverage
/// proxy: fine enough to tell errors apart, coarse enough that the corpus does not churn.
fn shape(message: impl std::fmt::Display) -> String {
    message
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphabetic() || *c == ' ')
        .take(40)
        .collect()
}

/// Whether `bytes` is a flat list of group 0000 elements with defined lengths (an
/// independent restatement of what Command::parse must enforce).
fn is_flat_command_set(bytes: &[u8]) -> bool {
    let mut pos = 0usize;
    while pos < bytes.len() {
        let Some(header) = bytes.get(pos..pos + 8) else {
            return false;
        };
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if header[0] != 0 || header[1] != 0 || len == u32::MAX {
            return false;
        }
        pos += 8 + len as usize;
    }
    pos == bytes.len()
}

/// `Command::parse` over a command set: no panic, and nothing but a flat group 0000 list
/// reaches dicom-object. An accepted command's values, echoed in a response, still encode.
pub struct CommandTarget;

impl Target for CommandTarget {
    fn name(&self) -> &'static str {
        "command"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        seeds::command_sets()
    }
    fn layout(&self, _: &[u8]) -> Layout {
        Layout::Implicit { skip: 0 }
    }
    fn max_len(&self) -> usize {
        // Reassembly refuses command sets above MAX_COMMAND_BYTES before they are parsed.
        MAX_COMMAND_BYTES + 64
    }
    fn run(&mut self, input: &[u8]) -> u64 {
        match Command::parse(input) {
            Ok(cmd) => {
                assert!(
                    is_flat_command_set(input),
                    "Command::parse accepted a command set that is not flat"
                );
                // The SCP answers with the peer's SOP Class and Instance UIDs.
                let echoed = command::response(
                    cmd.field,
                    cmd.message_id,
                    cmd.affected_sop_class_uid.as_deref(),
                    cmd.affected_sop_instance_uid.as_deref(),
                    0xC000,
                    Some("fuzz"),
                );
                let back = echoed
                    .as_ref()
                    .ok()
                    .map(|b| Command::parse(b).map(|c| c.field).ok());
                if let Some(Some(field)) = back {
                    assert_eq!(field, cmd.field | 0x8000, "a response does not read back");
                }
                signature((
                    "ok",
                    cmd.field,
                    cmd.has_dataset,
                    cmd.status.is_some(),
                    cmd.affected_sop_class_uid.is_some(),
                    cmd.affected_sop_instance_uid.is_some(),
                    cmd.error_comment.is_some(),
                    back.map(|r| r.is_some()),
                ))
            }
            Err(CommandError::NotFlat(why)) => signature(("not flat", why)),
            Err(CommandError::Missing(what)) => signature(("missing", what)),
            Err(e) => signature(("error", shape(e))),
        }
    }
}

/// `read_bounded` over a byte stream, each P-DATA-TF's values through `Reassembly::push`,
/// until the stream ends or the SCP would abort. Properties: the read buffer never exceeds
/// the limit of the PDU read; reassembly emits whole commands within their cap, data chunks
/// equal to their fragments, a data set end whose total is the sum of its chunks and within
/// the limit, and errors only where the protocol is broken.
pub struct PDataTarget {
    rt: tokio::runtime::Runtime,
}

impl PDataTarget {
    pub fn new() -> Self {
        PDataTarget {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime"),
        }
    }
}

impl Default for PDataTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// What the reassembly is expected to hold, kept independently of it.
#[derive(Default)]
struct Expected {
    command: usize,
    data: Option<(u8, u64)>,
}

impl Target for PDataTarget {
    fn name(&self) -> &'static str {
        "pdata"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        seeds::pdu_streams()
    }
    fn layout(&self, _: &[u8]) -> Layout {
        Layout::Pdus
    }
    fn max_len(&self) -> usize {
        4 * MAX_DATA_SET as usize
    }
    fn run(&mut self, input: &[u8]) -> u64 {
        let mut reader = input;
        let mut buf = Vec::new();
        let mut reassembly = Reassembly::new(MAX_DATA_SET);
        let mut expected = Expected::default();
        let mut trace: Vec<String> = Vec::new();
        let limit = |kind: u8| limit_for(kind, MAX_PDU);
        for _ in 0..10_000 {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let before = reader.len();
            let read = self
                .rt
                .block_on(read_bounded(&mut reader, &mut buf, limit, deadline));
            let kind = input.get(input.len() - before).copied().unwrap_or(0);
            assert!(
                buf.len() <= PDU_HEADER_SIZE as usize + limit(kind) as usize,
                "read_bounded buffered {} bytes for a PDU of type {kind:#04x}",
                buf.len()
            );
            let values = match read {
                Ok(Pdu::PData { data }) => data,
                Ok(other) => {
                    trace.push(shape(other.short_description()));
                    continue;
                }
                Err(PduError::Closed) => {
                    trace.push("closed".into());
                    break;
                }
                Err(e) => {
                    trace.push(shape(e));
                    break;
                }
            };
            trace.push(format!("pdata {}", values.len().min(4)));
            for pdv in values {
                let (pc, is_last, len) = (pdv.presentation_context_id, pdv.is_last, pdv.data.len());
                let data_copy = (pdv.value_type == PDataValueType::Data).then(|| pdv.data.clone());
                let is_command = pdv.value_type == PDataValueType::Command;
                match reassembly.push(pdv) {
                    Ok(events) => {
                        check_events(&events, &mut expected, pc, is_command, is_last, len, data_copy);
                        trace.push(format!("{}{}{}", is_command as u8, is_last as u8, events.len()));
                    }
                    Err(e) => {
                        check_error(&e, &expected, pc, is_command, len);
                        trace.push(shape(&e));
                        // The SCP aborts the association on any reassembly error.
                        return trace_signature(trace);
                    }
                }
                assert_eq!(
                    reassembly.in_data_set(),
                    expected.data.is_some(),
                    "in_data_set disagrees with the fragments pushed"
                );
            }
        }
        trace_signature(trace)
    }
}

/// What a stream did, as a set (the order of many PDUs would make every stream new).
fn trace_signature(mut trace: Vec<String>) -> u64 {
    trace.sort();
    trace.dedup();
    signature(trace)
}

fn check_events(
    events: &[Event],
    expected: &mut Expected,
    pc: u8,
    is_command: bool,
    is_last: bool,
    len: usize,
    data: Option<Vec<u8>>,
) {
    if is_command {
        assert!(
            expected.data.is_none(),
            "a command fragment accepted inside a data set"
        );
        expected.command += len;
        assert!(
            expected.command <= MAX_COMMAND_BYTES,
            "a command set above the cap accepted"
        );
        if is_last {
            match events {
                [Event::Command { pc_id, bytes }] => {
                    assert_eq!(*pc_id, pc);
                    assert_eq!(bytes.len(), expected.command, "a command lost or gained bytes");
                }
                other => panic!("the last command fragment gave {other:?}"),
            }
            expected.command = 0;
        } else {
            assert!(events.is_empty(), "a partial command produced events");
        }
        return;
    }
    if let Some((open, _)) = expected.data {
        assert_eq!(open, pc, "a fragment on another context accepted");
    }
    let total = expected.data.map_or(0, |(_, n)| n) + len as u64;
    assert!(total <= MAX_DATA_SET, "a data set above the limit accepted");
    match (events, is_last) {
        ([Event::DataChunk { pc_id, bytes }], false) => {
            assert_eq!(*pc_id, pc);
            assert_eq!(Some(bytes), data.as_ref(), "a chunk differs from its fragment");
            expected.data = Some((pc, total));
        }
        (
            [Event::DataChunk { pc_id, bytes }, Event::DataEnd {
                pc_id: end_pc,
                total: t,
            }],
            true,
        ) => {
            assert_eq!((*pc_id, *end_pc), (pc, pc));
            assert_eq!(Some(bytes), data.as_ref(), "a chunk differs from its fragment");
            assert_eq!(*t, total, "the data set end's total is not the sum of its chunks");
            expected.data = None;
        }
        (other, _) => panic!("a data fragment (last: {is_last}) gave {other:?}"),
    }
}

fn check_error(e: &ReassemblyError, expected: &Expected, pc: u8, is_command: bool, len: usize) {
    let justified = match e {
        ReassemblyError::CommandTooLarge => is_command && expected.command + len > MAX_COMMAND_BYTES,
        ReassemblyError::CommandDuringDataSet => is_command && expected.data.is_some(),
        ReassemblyError::ContextChanged { expected: open, got } => {
            !is_command && *got == pc && expected.data.is_some_and(|(o, _)| o == *open && o != pc)
        }
        ReassemblyError::DataSetTooLarge { .. } => {
            !is_command && expected.data.map_or(0, |(_, n)| n) + len as u64 > MAX_DATA_SET
        }
    };
    assert!(justified, "reassembly refused a valid fragment: {e}");
}

/// Raw-deflate `body` (PS3.5 A.5), at most `limit` bytes; None when it is not deflate or longer.
fn inflate(body: &[u8], limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(body)
        .take(limit + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 <= limit).then_some(out)
}

/// The ingest checks over a data set: the first input byte picks Implicit VR LE, Explicit VR
/// LE or deflated Explicit VR LE (walked by `scan_deflated` as it inflates, then inflated here for
/// the dicom-object check). A data set the scan
/// accepts is then read by dicom-object, as the pipeline reads the stored file (on the
/// fuzzer's small stack: the depth limit must keep that recursion shallow), and decoded when
/// it would pass ingest's Image Pixel checks.
#[derive(Default)]
pub struct ScanTarget {
    note: Option<String>,
    /// Runs that the scan accepted, that dicom-object then read, and whose pixels decoded.
    accepted: u64,
    read: u64,
    decoded: u64,
}

impl Target for ScanTarget {
    fn name(&self) -> &'static str {
        "scan"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        seeds::datasets()
    }
    fn layout(&self, input: &[u8]) -> Layout {
        match input.first().map(|m| m % 3) {
            Some(seeds::MODE_IMPLICIT) => Layout::Implicit { skip: 1 },
            Some(seeds::MODE_EXPLICIT) => Layout::Explicit { skip: 1 },
            _ => Layout::Opaque,
        }
    }
    fn max_len(&self) -> usize {
        1 << 20
    }
    fn run(&mut self, input: &[u8]) -> u64 {
        let Some((&mode, body)) = input.split_first() else {
            return 0;
        };
        let mode = mode % 3;
        let inflated;
        let (bytes, ts) = match mode {
            seeds::MODE_IMPLICIT => (body, IMPLICIT_VR_LITTLE_ENDIAN.erased()),
            seeds::MODE_EXPLICIT => (body, EXPLICIT_VR_LITTLE_ENDIAN.erased()),
            _ => {
                match scan::scan_deflated(body, &LIMITS) {
                    Ok(_) => {}
                    Err(ScanError::InflatesTooFar(_)) => return signature(("deflated", "too far")),
                    Err(e) => return signature(("deflated", shape(e))),
                }
                // Accepted. The walk ends where the parser ends the data set, so bytes after it
                // (a corrupt tail, more than the limit) may stop a whole inflate here; what the
                // walk accepted is then checked as dicom-object would not see it either.
                let Some(out) = inflate(body, LIMITS.max_inflated_bytes) else {
                    return signature(("deflated", "accepted, tail not inflatable"));
                };
                inflated = out;
                (&inflated[..], EXPLICIT_VR_LITTLE_ENDIAN.erased())
            }
        };
        let scanned = scan::scan(Cursor::new(bytes), bytes.len() as u64, &ts, &LIMITS);
        match scanned {
            Ok(s) => {
                let found = [
                    s.sop_class_uid.is_some(),
                    s.sop_instance_uid.is_some(),
                    s.study_uid.is_some(),
                    s.rows.is_some(),
                    s.columns.is_some(),
                    s.bits_allocated.is_some(),
                    s.number_of_frames.is_some(),
                    s.image_type.is_some(),
                ];
                let (after, note) = after_acceptance(bytes, &ts, &s);
                self.note = note;
                self.accepted += 1;
                self.read += u64::from(!after.contains("read false") && !after.starts_with("ingest accepts"));
                self.decoded += u64::from(after.starts_with("decoded"));
                signature((
                    mode,
                    "accepted",
                    found,
                    s.pixel_data_len.map(|p| p.is_some()),
                    after,
                ))
            }
            Err(e) => signature((mode, shape(e))),
        }
    }
    fn take_note(&mut self) -> Option<String> {
        self.note.take()
    }
    fn stats(&self) -> String {
        format!(
            "scan accepted {}, dicom-object read {}, pixels decoded {}",
            self.accepted, self.read, self.decoded
        )
    }
}

/// What the node does later with an accepted data set: dicom-object reads it whole, and the
/// pipeline decodes its pixels. Returns a signature of how far that got, and a note when
/// ingest would store the data set (and queue a job) but dicom-object cannot read it.
fn after_acceptance(bytes: &[u8], ts: &TransferSyntax, s: &scan::Scanned) -> (String, Option<String>) {
    let read = InMemDicomObject::read_dataset_with_ts(bytes, ts);
    // Ingest's Image Pixel checks (src/ingest/mod.rs `check`), which gate acceptance.
    let (Some(rows), Some(cols), Some(bits), Some(samples), Some(Some(pixel_len))) = (
        s.rows,
        s.columns,
        s.bits_allocated,
        s.samples_per_pixel,
        s.pixel_data_len,
    ) else {
        return (format!("not an image; read {}", read.is_ok()), None);
    };
    let frames = s.number_of_frames.unwrap_or(1);
    let needed = (rows as u64 * cols as u64 * samples as u64 * frames * bits as u64).div_ceil(8);
    if rows == 0 || cols == 0 || !matches!(bits, 1 | 8 | 16 | 32) || pixel_len < needed {
        return (format!("refused by ingest; read {}", read.is_ok()), None);
    }
    let obj = match read {
        Ok(obj) => obj,
        Err(e) => {
            let kind = format!("ingest accepts, dicom-object cannot read: {}", shape(&e));
            return (kind.clone(), Some(kind));
        }
    };
    // What ingest checked must be what the pipeline reads.
    let text = |tag| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|v| vcnode_scp::trim_value(&v).to_string())
    };
    let number = |tag| obj.element(tag).ok().and_then(|e| e.to_int::<u32>().ok());
    for (what, scanned, read) in [
        (
            "SOP Instance UID",
            s.sop_instance_uid.clone(),
            text(tags::SOP_INSTANCE_UID),
        ),
        (
            "Study Instance UID",
            s.study_uid.clone(),
            text(tags::STUDY_INSTANCE_UID),
        ),
        (
            "Series Instance UID",
            s.series_uid.clone(),
            text(tags::SERIES_INSTANCE_UID),
        ),
        (
            "Rows",
            s.rows.map(|v| v.to_string()),
            number(tags::ROWS).map(|v| v.to_string()),
        ),
        (
            "Columns",
            s.columns.map(|v| v.to_string()),
            number(tags::COLUMNS).map(|v| v.to_string()),
        ),
    ] {
        if scanned != read {
            let kind = format!("scan and dicom-object read different {what}");
            return (kind.clone(), Some(kind));
        }
    }
    let meta = match vcnode::store::explicit_le_meta(vcnode_scp::MG_FOR_PRESENTATION, "1.2.3") {
        Ok(meta) => meta,
        Err(e) => return (format!("meta: {}", shape(e)), None),
    };
    let file = obj.with_exact_meta(meta);
    match vcnode::pixels::decode(&file) {
        Ok(image) => (format!("decoded {}", image.monochrome1), None),
        Err(e) => (format!("decode: {}", shape(e)), None),
    }
}

/// Hidden targets that fail on their seed, for testing the harness itself: one panics, one
/// overflows its stack (which aborts the process).
pub struct Canary(&'static str);

fn recurse(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 64]);
    if frame[2] == u64::MAX {
        return 0;
    }
    recurse(frame[1] + 1) + frame[0]
}

impl Target for Canary {
    fn name(&self) -> &'static str {
        self.0
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![self.0.as_bytes().to_vec()]
    }
    fn layout(&self, _: &[u8]) -> Layout {
        Layout::Opaque
    }
    fn max_len(&self) -> usize {
        16
    }
    fn run(&mut self, input: &[u8]) -> u64 {
        match input {
            b"panic" => panic!("the canary panicked"),
            b"overflow" => recurse(0),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_are_valid_encodings() {
        for bytes in seeds::command_sets() {
            Command::parse(&bytes).unwrap();
        }
        for stream in seeds::pdu_streams() {
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let len = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize + 6;
                dicom_ul::pdu::read_pdu(&rest[..len], MAX_PDU, true)
                    .unwrap()
                    .unwrap();
                rest = &rest[len..];
            }
        }
        for input in seeds::datasets() {
            let mode = input[0];
            let inflated;
            let (body, ts) = match mode {
                seeds::MODE_IMPLICIT => (&input[1..], IMPLICIT_VR_LITTLE_ENDIAN.erased()),
                seeds::MODE_EXPLICIT => (&input[1..], EXPLICIT_VR_LITTLE_ENDIAN.erased()),
                _ => {
                    inflated = inflate(&input[1..], LIMITS.max_inflated_bytes).unwrap();
                    (&inflated[..], EXPLICIT_VR_LITTLE_ENDIAN.erased())
                }
            };
            let s = scan::scan(Cursor::new(body), body.len() as u64, &ts, &LIMITS).unwrap();
            assert!(s.sop_instance_uid.is_some() && s.pixel_data_len.is_some());
        }
    }

    #[test]
    fn flatness_restated() {
        let echo = command::c_echo_rq(1).unwrap();
        assert!(is_flat_command_set(&echo));
        assert!(!is_flat_command_set(&echo[..echo.len() - 1]));
        let mut foreign = echo.clone();
        foreign.extend_from_slice(&[0x08, 0, 0x18, 0, 0, 0, 0, 0]);
        assert!(!is_flat_command_set(&foreign));
    }
}
