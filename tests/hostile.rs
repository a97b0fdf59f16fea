//! Hostile peers (issue 13): raw PDUs over TCP against a real `vcnode serve`. After each case
//! the node must be alive, take a legitimate C-STORE from dcmtk's storescu, and still hold
//! every instance it acknowledged before.
//!
//! The raw client speaks just enough of PS3.8 to misbehave on purpose: it builds the
//! A-ASSOCIATE-RQ / A-ABORT PDUs with dicom-ul, but P-DATA-TF headers by hand, so it can
//! announce lengths it never sends and stream fragments that never end without holding them.
//! Each case prints one `hostile:` line (what the node answered, its memory before and after).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{
    AbortRQSource, AssociationRQ, PDataValueType, PresentationContextProposed,
    PresentationContextResultReason, UserVariableItem,
};
use dicom_ul::Pdu;
use vcnode::fixture::{mammogram, MammogramSpec};
use vcnode_scp::command::{self, Command};
use vcnode_scp::{MG_FOR_PRESENTATION, VERIFICATION};

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const DEFLATED_EXPLICIT_LE: &str = "1.2.840.10008.1.2.1.99";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
/// Presentation context ids the raw client proposes.
const PC_MG: u8 = 1;
const PC_ECHO: u8 = 3;
const MIB: u64 = 1 << 20;
/// The node's resident memory may grow this much during one case (the design keeps data sets
/// on disk, not in memory; this leaves room for allocator slack and a few PDU buffers).
const RSS_GROWTH_LIMIT: u64 = 100 * MIB;
/// Safety net for the shared test machine: a node above this is killed (and the case fails).
const RSS_KILL: u64 = 2048 * MIB;
/// How long a node may take to answer or drop a hostile connection. Every timer the node
/// has (ARTIM, idle) is set far above it, so only the check under test can explain an answer.
const PROMPT: Duration = Duration::from_secs(10);
/// How much a peer floods after a header announcing 4 GiB.
const FLOOD_LIMIT: u64 = 256 * MIB;
/// dcmtk timeouts for the legitimate peer (connect, ACSE, DIMSE): it must be served at once.
const DCMTK_PROMPT: &[&str] = &["-to", "5", "-ta", "5", "-td", "5"];

// ---------------------------------------------------------------------------------------------
// The node under attack, and the checks after each case.

/// A node with its own data_dir, one acknowledged instance before any hostile case, and the
/// list of everything it acknowledged since.
struct Target {
    dir: tempfile::TempDir,
    node: Node,
    acknowledged: Vec<String>,
    next_seed: u64,
    guard: MemoryGuard,
}

impl Target {
    /// `node` and `storage` are extra TOML lines for those sections.
    fn start(node: &str, storage: &str) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("vcnode.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[node]
bind = "127.0.0.1"
dimse_port = 0
http_port = 0
data_dir = "{data}"
{node}

[[peers]]
ae_title = "MODALITY"
host = "127.0.0.1"

[storage]
{storage}

[inference]
device = "cpu"
model = ""
"#,
                data = dir.path().join("var").display()
            ),
        )
        .unwrap();
        let node = Node::start_with(dir.path(), config);
        let guard = MemoryGuard::watch(node.pid());
        let mut t = Target {
            dir,
            node,
            acknowledged: Vec::new(),
            next_seed: 1,
            guard,
        };
        t.store_legitimately();
        t
    }

    /// A fresh low-energy mammogram (its own SOP Instance UID) written under the test dir.
    fn fixture(&mut self) -> (PathBuf, String) {
        let seed = self.next_seed;
        self.next_seed += 1;
        let path = write_fixtures(&self.dir.path().join("src"), &[MammogramSpec::low_energy(seed)])
            .pop()
            .unwrap();
        let uid = sop_instance_uid(&path);
        (path, uid)
    }

    /// dcmtk's storescu sends one image; it must be acknowledged with success at once.
    fn store_legitimately(&mut self) {
        let (path, uid) = self.fixture();
        let out = storescu(&self.node, "MODALITY", DCMTK_PROMPT, &[path]);
        assert!(
            out.status.success() && successes(&out) == 1,
            "a legitimate C-STORE failed: {}\nnode log tail:\n{}",
            text(&out),
            self.node.log_tail(30)
        );
        self.acknowledged.push(uid);
    }

    /// The checks after each case: alive, serves storescu, lost nothing it acknowledged.
    fn assert_healthy(&mut self, case: &str) {
        if let Some(status) = self.node.exited() {
            panic!(
                "{case}: the node died ({status}); log tail:\n{}",
                self.node.log_tail(30)
            );
        }
        self.store_legitimately();
        let stored = self.stored_paths();
        for uid in &self.acknowledged {
            let path = stored
                .iter()
                .find(|(u, _)| u == uid)
                .map(|(_, p)| self.node.data_dir.join(p))
                .unwrap_or_else(|| panic!("{case}: acknowledged instance {uid} has no row"));
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            assert!(
                len > 0,
                "{case}: acknowledged instance {uid} has no file at {}",
                path.display()
            );
        }
    }

    /// (SOP Instance UID, path relative to data_dir) of every instance row, read with the
    /// sqlite3 shell as an administrator would.
    fn stored_paths(&self) -> Vec<(String, String)> {
        let out = std::process::Command::new("sqlite3")
            .arg(self.node.data_dir.join("vcnode.sqlite"))
            .arg("SELECT sop_instance_uid || '|' || path FROM instances")
            .output()
            .expect("sqlite3 must be installed");
        assert!(out.status.success(), "sqlite3: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('|'))
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect()
    }

    /// Rows for `uid` in instances and jobs.
    fn rows_for(&self, uid: &str) -> (usize, usize) {
        let count = |table: &str, column: &str| {
            let out = std::process::Command::new("sqlite3")
                .arg(self.node.data_dir.join("vcnode.sqlite"))
                .arg(format!("SELECT count(*) FROM {table} WHERE {column} = '{uid}'"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<usize>()
                .unwrap()
        };
        (
            count("instances", "sop_instance_uid"),
            count("jobs", "source_uid"),
        )
    }

    /// Files left in data_dir/tmp, after waiting (bounded) for the node to remove them.
    fn temp_files_after_wait(&self) -> Vec<PathBuf> {
        let tmp = self.node.data_dir.join("tmp");
        let list = || -> Vec<PathBuf> {
            std::fs::read_dir(&tmp)
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        let started = Instant::now();
        loop {
            let left = list();
            if left.is_empty() || started.elapsed() > PROMPT {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// After a data set the node did not take: no temp file left (waiting, bounded, for the
    /// node to remove it) and no instance or job row for `uid`.
    fn assert_nothing_left(&self, case: &str, uid: &str) {
        let left = self.temp_files_after_wait();
        assert!(left.is_empty(), "{case}: temp files left: {left:?}");
        assert_eq!(self.rows_for(uid), (0, 0), "{case}: rows (instance, job)");
    }

    /// Bytes in data_dir/tmp now (how much the node spooled to disk).
    fn temp_bytes(&self) -> u64 {
        std::fs::read_dir(self.node.data_dir.join("tmp"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Waits (bounded) until the node's count of open descriptors stops changing: it has
    /// accepted (or dropped) the connections just opened.
    fn wait_accepts_settle(&self) {
        let fds = || {
            std::fs::read_dir(format!("/proc/{}/fd", self.node.pid()))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        let started = Instant::now();
        let (mut last, mut stable_since) = (fds(), Instant::now());
        while started.elapsed() < PROMPT && stable_since.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(20));
            let now = fds();
            if now != last {
                (last, stable_since) = (now, Instant::now());
            }
        }
    }

    /// Starts a memory measurement: resets the peak (VmHWM) and reads VmRSS.
    fn memory_before(&self) -> u64 {
        let pid = self.node.pid();
        // "5" resets the peak resident set size (Linux >= 4.0), so VmHWM is this case's peak.
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        memory(pid).map(|m| m.rss).unwrap_or(0)
    }

    /// Asserts the node's peak resident memory since `before` grew less than the limit.
    fn assert_memory_bounded(&self, case: &str, before: u64) -> Memory {
        assert!(
            !self.guard.killed(),
            "{case}: the node passed {} MiB resident and was killed",
            RSS_KILL / MIB
        );
        let after = memory(self.node.pid())
            .unwrap_or_else(|| panic!("{case}: the node is gone; log tail:\n{}", self.node.log_tail(30)));
        let growth = after.hwm.max(after.rss).saturating_sub(before);
        assert!(
            growth < RSS_GROWTH_LIMIT,
            "{case}: resident memory grew by {} MiB (VmRSS {} -> {} MiB, peak {} MiB)",
            growth / MIB,
            before / MIB,
            after.rss / MIB,
            after.hwm / MIB
        );
        after
    }

    /// One hostile case: `act` misbehaves and returns the node's answer with the numbers worth
    /// printing beside it. Around it: the node's memory measured (asserted bounded with
    /// [`MemoryCheck::Bounded`]), the `hostile:` line printed, and the node checked healthy.
    fn attack(
        &mut self,
        case: &str,
        check: MemoryCheck,
        act: impl FnOnce(&mut Target) -> (Answer, String),
    ) -> Answer {
        let before = self.memory_before();
        let (answer, note) = act(self);
        let after = match check {
            MemoryCheck::Bounded => Some(self.assert_memory_bounded(case, before)),
            MemoryCheck::Reported => memory(self.node.pid()),
        };
        report(case, &format!("{answer:?}"), before, after, &note);
        self.assert_healthy(case);
        answer
    }

    /// A C-STORE-RQ for `uid`, then `data` whole, on a new association in `ts`; the node's
    /// answer within `waits` PROMPTs (checking a large data set may take it a while).
    fn store_raw(&self, ts: &str, uid: &str, data: &[u8], waits: usize) -> (Assoc, Answer) {
        let mut assoc = self.associate("MODALITY", ts).expect("association");
        assoc.send_store_rq(uid);
        let write = assoc.send_message(PC_MG, false, data);
        let answer = assoc.answer_to(write, waits);
        (assoc, answer)
    }

    /// A C-STORE-RQ, then the endless data set of `spec` until `limit` bytes are sent or the
    /// node answers (Silent: it did not), then A-ABORT. Returns the answer, the bytes sent and
    /// what the node had spooled before the abort.
    fn store_endless(&self, spec: &MammogramSpec, limit: u64) -> (Answer, u64, u64) {
        let mut assoc = self.associate("MODALITY", EXPLICIT_LE).expect("association");
        assoc.send_store_rq(&fixture_uid(spec));
        let (sent, answer) = assoc.stream_fragments(false, &mut endless_dataset(spec), limit);
        let spooled = self.temp_bytes();
        assoc.abort();
        (answer.unwrap_or(Answer::Silent), sent, spooled)
    }

    /// A C-STORE of `data` (in `ts`) that the node must refuse, leaving no instance and no job.
    fn assert_store_refused(&mut self, case: &str, ts: &str, uid: &str, data: &[u8], note: String) {
        let answer = self.attack(case, MemoryCheck::Reported, |t| {
            (t.store_raw(ts, uid, data, 1).1, note)
        });
        assert!(answer.is_refusal(), "{case}: the node answered {answer:?}");
        assert_eq!(self.rows_for(uid), (0, 0), "{case}: rows (instance, job)");
    }

    /// A new connection whose first bytes are `header`, flooded as [`flood_then_answer`] does.
    fn flood_first_pdu(&self, header: &[u8]) -> (Answer, String) {
        flood_then_answer(&mut self.connect(), header, FLOOD_LIMIT)
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.node.addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// A-ASSOCIATE-RQ from `calling` proposing MG For Presentation in `ts` (and Verification).
    fn associate(&self, calling: &str, ts: &str) -> Result<Assoc, Answer> {
        let mut stream = self.connect();
        send_pdu(&mut stream, &association_rq(calling, ts)).map_err(closed)?;
        stream.set_read_timeout(Some(PROMPT)).unwrap();
        match read_pdu(&mut stream) {
            Ok(Pdu::AssociationAC(ac)) => {
                let accepted = ac.presentation_contexts.iter().any(|pc| {
                    pc.id == PC_MG
                        && pc.reason == PresentationContextResultReason::Acceptance
                        && pc.transfer_syntax == ts
                });
                assert!(
                    accepted,
                    "MG in {ts} not accepted: {:?}",
                    ac.presentation_contexts
                );
                let node_max = ac
                    .user_variables
                    .iter()
                    .find_map(|v| match v {
                        UserVariableItem::MaxLength(n) => Some(*n),
                        _ => None,
                    })
                    .unwrap_or(0);
                // 0 means "no limit" (PS3.8 D.1); stay within the node's default either way.
                let max_pdu = if node_max == 0 {
                    262_144
                } else {
                    node_max.min(262_144)
                };
                Ok(Assoc::new(stream, max_pdu))
            }
            Ok(other) => Err(Answer::of_pdu(other)),
            Err(e) => Err(closed(e)),
        }
    }

    /// The node's log lines that mention `needle`, without colour codes.
    fn log_lines_with(&self, needle: &str) -> String {
        self.node
            .plain_log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

/// Whether a case asserts that the node's memory stayed bounded, or only reports it.
#[derive(Clone, Copy)]
enum MemoryCheck {
    Bounded,
    Reported,
}

/// Resident memory of a process, from /proc/<pid>/status, in bytes.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    hwm: u64,
}

fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

/// Kills the node if it passes RSS_KILL, so a node that buffers without bound cannot take
/// the shared test machine down with it.
struct MemoryGuard {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    killed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl MemoryGuard {
    fn watch(pid: u32) -> MemoryGuard {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let killed = std::sync::Arc::new(AtomicBool::new(false));
        let (s, k) = (stop.clone(), killed.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match memory(pid) {
                    Some(m) if m.rss > RSS_KILL => {
                        k.store(true, Ordering::Relaxed);
                        let _ = std::process::Command::new("kill")
                            .args(["-9", &pid.to_string()])
                            .status();
                        return;
                    }
                    Some(_) => {}
                    None => return,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        MemoryGuard { stop, killed }
    }

    fn killed(&self) -> bool {
        self.killed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for MemoryGuard {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// The raw PDU client.

/// What the node did with a hostile request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// A DIMSE response: its status and error comment.
    Status(u16, String),
    Abort,
    Rejected,
    Accepted,
    /// The connection ended (EOF or reset) without a PDU.
    Closed(String),
    /// Nothing within the wait.
    Silent,
    Other(String),
}

impl Answer {
    fn of_pdu(pdu: Pdu) -> Answer {
        match pdu {
            Pdu::AbortRQ { .. } => Answer::Abort,
            Pdu::AssociationRJ(_) => Answer::Rejected,
            Pdu::AssociationAC(_) => Answer::Accepted,
            other => Answer::Other(other.short_description().to_string()),
        }
    }

    /// The node refused: a failure status (not success, not a warning), an abort or a close.
    fn is_refusal(&self) -> bool {
        match self {
            Answer::Status(s, _) => *s != 0 && !matches!(s >> 12, 0xB) && *s != 0x0107 && *s != 0x0116,
            Answer::Abort | Answer::Rejected | Answer::Closed(_) => true,
            _ => false,
        }
    }

    /// The connection is over: abort, reject or close.
    fn ends_connection(&self) -> bool {
        matches!(self, Answer::Abort | Answer::Rejected | Answer::Closed(_))
    }
}

fn closed(e: std::io::Error) -> Answer {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Answer::Silent,
        _ => Answer::Closed(e.to_string()),
    }
}

fn association_rq(calling: &str, ts: &str) -> Pdu {
    Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling.into(),
        called_ae_title: "VCNODE".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![
            PresentationContextProposed {
                id: PC_MG,
                abstract_syntax: MG_FOR_PRESENTATION.into(),
                transfer_syntaxes: vec![ts.into()],
            },
            PresentationContextProposed {
                id: PC_ECHO,
                abstract_syntax: VERIFICATION.into(),
                transfer_syntaxes: vec![IMPLICIT_LE.into()],
            },
        ],
        user_variables: vec![
            UserVariableItem::MaxLength(262_144),
            UserVariableItem::ImplementationClassUID("1.2.826.0.1.3680043.9.7433.1.13".into()),
            UserVariableItem::ImplementationVersionName("HOSTILE".into()),
        ],
    })
}

fn pdu_bytes(pdu: &Pdu) -> Vec<u8> {
    let mut out = Vec::new();
    dicom_ul::pdu::write_pdu(&mut out, pdu).unwrap();
    out
}

fn send_pdu(stream: &mut TcpStream, pdu: &Pdu) -> std::io::Result<()> {
    stream.write_all(&pdu_bytes(pdu))
}

/// Reads one whole PDU (the node's answers are small: refuse anything above 16 MiB).
fn read_pdu(stream: &mut TcpStream) -> std::io::Result<Pdu> {
    let mut header = [0u8; 6];
    stream.read_exact(&mut header)?;
    let len = u32::from_be_bytes(header[2..6].try_into().unwrap());
    if len > 16 << 20 {
        return Err(std::io::Error::other(format!("the node sent a {len}-byte PDU")));
    }
    let mut pdu = header.to_vec();
    pdu.resize(6 + len as usize, 0);
    stream.read_exact(&mut pdu[6..])?;
    dicom_ul::pdu::read_pdu(&pdu[..], 16 << 20, false)
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .ok_or_else(|| std::io::Error::other("incomplete PDU"))
}

/// A P-DATA-TF header for one PDV of `len` bytes: PDU type 04H, PDU length, item length,
/// presentation context, message control header (bit 0 command, bit 1 last fragment).
fn pdata_header(pc: u8, len: usize, command: bool, last: bool) -> [u8; 12] {
    let item = len as u32 + 2;
    let mut h = [0u8; 12];
    h[0] = 0x04;
    h[2..6].copy_from_slice(&(item + 4).to_be_bytes());
    h[6..10].copy_from_slice(&item.to_be_bytes());
    h[10] = pc;
    h[11] = command as u8 | ((last as u8) << 1);
    h
}

/// An established association. A reader thread reports every answer of the node as it comes,
/// so a sender streaming data notices a refusal while it is still writing.
struct Assoc {
    stream: TcpStream,
    max_pdu: u32,
    answers: mpsc::Receiver<Answer>,
}

impl Assoc {
    fn new(stream: TcpStream, max_pdu: u32) -> Assoc {
        let mut reader = stream.try_clone().unwrap();
        reader.set_read_timeout(None).unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            let mut command_set = Vec::new();
            loop {
                let answer = match read_pdu(&mut reader) {
                    Ok(Pdu::PData { data }) => {
                        let mut answer = None;
                        for pdv in data {
                            if pdv.value_type == PDataValueType::Command {
                                command_set.extend_from_slice(&pdv.data);
                                if pdv.is_last {
                                    let cmd = Command::parse(&command_set);
                                    command_set.clear();
                                    answer = Some(match cmd {
                                        Ok(Command {
                                            status: Some(s),
                                            error_comment,
                                            ..
                                        }) => Answer::Status(s, error_comment.unwrap_or_default()),
                                        other => Answer::Other(format!("{other:?}")),
                                    });
                                }
                            }
                        }
                        match answer {
                            Some(a) => a,
                            None => continue,
                        }
                    }
                    Ok(Pdu::ReleaseRP) => Answer::Other("A-RELEASE-RP".into()),
                    Ok(pdu) => Answer::of_pdu(pdu),
                    Err(e) => Answer::Closed(e.to_string()),
                };
                let end = answer.ends_connection();
                if tx.send(answer).is_err() || end {
                    return;
                }
            }
        });
        Assoc {
            stream,
            max_pdu,
            answers,
        }
    }

    /// The largest PDV value that fits one PDU the node accepts.
    fn max_fragment(&self) -> usize {
        self.max_pdu as usize - 6
    }

    /// Sends a whole message part (command or data set) in fragments within the PDU limit.
    fn send_message(&mut self, pc: u8, command: bool, bytes: &[u8]) -> std::io::Result<()> {
        let chunks: Vec<&[u8]> = bytes.chunks(self.max_fragment()).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            self.stream
                .write_all(&pdata_header(pc, chunk.len(), command, last))?;
            self.stream.write_all(chunk)?;
        }
        Ok(())
    }

    fn send_store_rq(&mut self, sop_instance_uid: &str) {
        let rq = command::c_store_rq(1, MG_FOR_PRESENTATION, sop_instance_uid).unwrap();
        self.send_message(PC_MG, true, &rq).unwrap();
    }

    /// Streams fragments from `source` (command fragments when `command`), none marked last,
    /// until `limit` bytes are sent, the node answers, or a write fails. Returns the bytes sent
    /// and the answer, if any.
    fn stream_fragments(
        &mut self,
        command: bool,
        source: &mut impl FnMut(&mut [u8]),
        limit: u64,
    ) -> (u64, Option<Answer>) {
        let mut pdu = vec![0u8; 12 + self.max_fragment()];
        let mut sent = 0u64;
        while sent < limit {
            if let Ok(a) = self.answers.try_recv() {
                return (sent, Some(a));
            }
            let n = self.max_fragment();
            pdu[..12].copy_from_slice(&pdata_header(PC_MG, n, command, false));
            source(&mut pdu[12..]);
            if let Err(e) = self.stream.write_all(&pdu) {
                return (sent, Some(self.answer_to(Err(e), 1)));
            }
            sent += n as u64;
        }
        (sent, None)
    }

    /// The node's next answer within PROMPT.
    fn wait_answer(&self) -> Option<Answer> {
        self.answers.recv_timeout(PROMPT).ok()
    }

    /// The node's answer to what was just written: its next answer within `waits` PROMPTs,
    /// else how the write failed, else Silent.
    fn answer_to(&self, write: std::io::Result<()>, waits: usize) -> Answer {
        (0..waits)
            .find_map(|_| self.wait_answer())
            .unwrap_or_else(|| write.err().map(closed).unwrap_or(Answer::Silent))
    }

    /// Sends `bytes` of a data set in fragments none of which is marked last.
    fn send_unfinished(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        for chunk in bytes.chunks(self.max_fragment()) {
            self.stream
                .write_all(&pdata_header(PC_MG, chunk.len(), false, false))?;
            self.stream.write_all(chunk)?;
        }
        Ok(())
    }

    fn abort(mut self) {
        let _ = send_pdu(
            &mut self.stream,
            &Pdu::AbortRQ {
                source: AbortRQSource::ServiceUser,
            },
        );
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn release(mut self) {
        let _ = send_pdu(&mut self.stream, &Pdu::ReleaseRQ);
        let _ = self.answers.recv_timeout(PROMPT);
    }
}

/// Writes `header` (which announces more than follows), then zeros up to `limit` bytes, 1 MiB
/// a write, until a write fails (the node closed) or stalls (the node stopped reading).
/// Returns the bytes written after the header.
fn flood(stream: &mut TcpStream, header: &[u8], limit: u64) -> u64 {
    stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let chunk = vec![0u8; MIB as usize];
    let mut sent = 0u64;
    if stream.write_all(header).is_ok() {
        while sent < limit && stream.write_all(&chunk).is_ok() {
            sent += MIB;
        }
    }
    sent
}

/// [`flood`], then the node's answer on the connection, and how much was flooded (for the
/// `hostile:` line).
fn flood_then_answer(stream: &mut TcpStream, header: &[u8], limit: u64) -> (Answer, String) {
    let sent = flood(stream, header, limit);
    stream.set_read_timeout(Some(PROMPT)).unwrap();
    let answer = read_pdu(stream).map(Answer::of_pdu).unwrap_or_else(closed);
    (answer, flooded(sent))
}

fn flooded(sent: u64) -> String {
    format!("flood_sent={}MiB", sent / MIB)
}

// ---------------------------------------------------------------------------------------------
// Data sets.

fn explicit_le(obj: &InMemDicomObject) -> Vec<u8> {
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    out
}

/// The fixture mammogram's elements with tags in `range`, encoded in Explicit VR LE.
fn fixture_part(spec: &MammogramSpec, keep: impl Fn(Tag) -> bool) -> Vec<u8> {
    let obj = mammogram(spec).into_inner();
    let part = InMemDicomObject::from_element_iter(obj.into_iter().filter(|e| keep(e.header().tag)));
    explicit_le(&part)
}

/// The fixture mammogram with `nested` in place of (0008,1115) Referenced Series Sequence.
fn fixture_with_nesting(spec: &MammogramSpec, nested: Vec<u8>) -> Vec<u8> {
    let split = Tag(0x0008, 0x1115);
    let mut data = fixture_part(spec, |t| t < split);
    data.extend(nested);
    data.extend(fixture_part(spec, |t| t > split));
    data
}

fn fixture_uid(spec: &MammogramSpec) -> String {
    mammogram(spec)
        .meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_string()
}

/// An endless data set: the fixture's attributes up to group 0028, then private OB elements
/// (0029,1000), (0029,1001), … of 64 KiB zeros each. Every byte is well-formed DICOM, so only
/// the missing last-fragment bit (and the sheer size) is wrong.
fn endless_dataset(spec: &MammogramSpec) -> impl FnMut(&mut [u8]) {
    let prefix = fixture_part(spec, |t| t.group() <= 0x0028);
    let mut pending: Vec<u8> = prefix;
    let mut at = 0usize;
    let mut element: u16 = 0x1000;
    let mut zeros_left: u64 = 0;
    move |buf: &mut [u8]| {
        let mut i = 0;
        while i < buf.len() {
            if at < pending.len() {
                let n = (pending.len() - at).min(buf.len() - i);
                buf[i..i + n].copy_from_slice(&pending[at..at + n]);
                at += n;
                i += n;
            } else if zeros_left > 0 {
                let n = (zeros_left as usize).min(buf.len() - i);
                buf[i..i + n].fill(0);
                zeros_left -= n as u64;
                i += n;
            } else {
                // Next private element header: tag, "OB", reserved, 32-bit length.
                let mut h = Vec::with_capacity(12);
                h.extend_from_slice(&0x0029u16.to_le_bytes());
                h.extend_from_slice(&element.to_le_bytes());
                h.extend_from_slice(b"OB\0\0");
                h.extend_from_slice(&65_536u32.to_le_bytes());
                pending = h;
                at = 0;
                element = element.checked_add(1).expect("3.75 GiB is enough for any case");
                zeros_left = 65_536;
            }
        }
    }
}

const SQ_TAG: [u8; 4] = [0x08, 0x00, 0x15, 0x11]; // (0008,1115) Referenced Series Sequence, LE
const ITEM: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];
const ITEM_END: [u8; 4] = [0xFE, 0xFF, 0x0D, 0xE0];
const SEQ_END: [u8; 4] = [0xFE, 0xFF, 0xDD, 0xE0];
const UNDEFINED: [u8; 4] = [0xFF; 4];

/// `depth` sequences (0008,1115) of undefined length, each in an item of the one above, with
/// their delimiters: well-formed, just deep. `explicit`: Explicit VR LE (else Implicit).
fn nested_sequences(depth: usize, explicit: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(depth * 36);
    for _ in 0..depth {
        out.extend_from_slice(&SQ_TAG);
        if explicit {
            out.extend_from_slice(b"SQ\0\0");
        }
        out.extend_from_slice(&UNDEFINED);
        out.extend_from_slice(&ITEM);
        out.extend_from_slice(&UNDEFINED);
    }
    for _ in 0..depth {
        out.extend_from_slice(&ITEM_END);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&SEQ_END);
        out.extend_from_slice(&[0; 4]);
    }
    out
}

/// Explicit VR LE element header with a 32-bit length (OB, OW, UN, SQ…).
fn long_header(group: u16, element: u16, vr: &[u8; 2], len: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(12);
    h.extend_from_slice(&group.to_le_bytes());
    h.extend_from_slice(&element.to_le_bytes());
    h.extend_from_slice(vr);
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&len.to_le_bytes());
    h
}

/// A Deflated Explicit VR LE data set (raw deflate, PS3.5 A.5): the fixture's attributes up to
/// group 0028, then `elements` private OB elements of 0xFFFFFFF0 zeros each (4 GiB apiece).
///
/// Built without compressing gigabytes: after a sync flush that follows at least 32 KiB of
/// zeros, the deflate window holds only zeros, so the compressed form of the next 1 MiB of
/// zeros decodes the same wherever it is repeated. `mib_chunks` limits the repetitions (for
/// the self-check); None fills each element.
fn deflate_bomb(spec: &MammogramSpec, elements: u16, mib_chunks: Option<u64>) -> (Vec<u8>, u64) {
    use flate2::write::DeflateEncoder;
    let value_len: u64 = mib_chunks.map_or(0xFFFF_FFF0, |n| 2 * 65_536 + n * MIB);
    let mut enc = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    let take = |enc: &mut DeflateEncoder<Vec<u8>>| {
        enc.flush().unwrap();
        std::mem::take(enc.get_mut())
    };
    let zeros = vec![0u8; MIB as usize];
    let mut out = Vec::new();
    let mut inflated = 0u64;
    let prefix = fixture_part(spec, |t| t.group() <= 0x0028);
    enc.write_all(&prefix).unwrap();
    inflated += prefix.len() as u64;
    for e in 0..elements {
        let header = long_header(0x0029, 0x1000 + e, b"OB", value_len as u32);
        enc.write_all(&header).unwrap();
        // 64 KiB of zeros first, so the window is all zeros before the repeated chunk.
        enc.write_all(&zeros[..65_536]).unwrap();
        out.extend(take(&mut enc));
        enc.write_all(&zeros).unwrap();
        let chunk = take(&mut enc);
        let repeats = (value_len - 2 * 65_536) / MIB;
        for _ in 0..repeats {
            out.extend_from_slice(&chunk);
        }
        // The encoder believes it wrote one chunk; the window is zeros either way.
        let rest = value_len - 65_536 - repeats * MIB;
        let mut left = rest;
        while left > 0 {
            let n = left.min(MIB) as usize;
            enc.write_all(&zeros[..n]).unwrap();
            left -= n as u64;
        }
        inflated += header.len() as u64 + value_len;
    }
    out.extend(enc.finish().unwrap());
    (out, inflated)
}

// ---------------------------------------------------------------------------------------------
// The cases.

fn report(case: &str, answer: &str, before: u64, after: Option<Memory>, extra: &str) {
    let (rss, hwm) = after.map_or((0, 0), |m| (m.rss / MIB, m.hwm / MIB));
    eprintln!(
        "hostile: {case}: answer={answer} rss_before={}MiB rss_after={rss}MiB peak={hwm}MiB {extra}",
        before / MIB
    );
}

/// Case 1: more silent TCP connections than max_associations, then more than
/// max_pending_associations; a legitimate C-ECHO is served at once each time (ARTIM is 60 s,
/// echoscu waits at most 5 s).
#[test]
fn silent_connections_do_not_lock_out_a_modality() {
    let mut t = Target::start(
        "max_associations = 4\nmax_pending_associations = 16\nartim_timeout_s = 60\nidle_timeout_s = 60",
        "",
    );
    let mut silent: Vec<TcpStream> = Vec::new();
    for (total, what) in [
        (12, "more than max_associations"),
        (40, "more than max_pending_associations"),
    ] {
        while silent.len() < total {
            silent.push(t.connect());
        }
        t.wait_accepts_settle();
        let out = std::process::Command::new(ECHOSCU)
            .args(["-v", "-aet", "MODALITY", "-aec", "VCNODE"])
            .args(DCMTK_PROMPT)
            .args(["127.0.0.1", &t.node.port()])
            .output()
            .unwrap();
        let dropped = silent.iter().filter(|s| is_closed_by_peer(s)).count();
        report(
            "silent-connections",
            if out.status.success() {
                "echo-served"
            } else {
                "echo-refused"
            },
            0,
            memory(t.node.pid()),
            &format!("silent={total} dropped_by_node={dropped} max_associations=4 max_pending=16"),
        );
        assert!(
            out.status.success(),
            "C-ECHO with {total} silent connections open ({what}): {}",
            text(&out)
        );
        // Also a C-STORE while they are still open.
        t.assert_healthy(&format!("{total} silent connections (open)"));
    }
    drop(silent);
    t.assert_healthy("silent connections (closed)");
}

/// True when the node has closed (or reset) a connection that never sent anything.
fn is_closed_by_peer(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let closed = match (&*s).read(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// Case 2: a PDU announcing 4 GiB, on an accepted association, as the first PDU, after a
/// rejection, and while every association slot is taken. Each is dropped promptly without
/// the node buffering what follows.
#[test]
fn four_gib_pdus_are_refused_promptly_on_every_path() {
    let mut t = Target::start(
        "max_associations = 3\nartim_timeout_s = 60\nidle_timeout_s = 60",
        "",
    );

    // a) After the A-ASSOCIATE-AC, a P-DATA-TF header claiming 4 GiB.
    let mut header = vec![0x04, 0x00];
    header.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
    header.extend_from_slice(&0xFFFF_FFECu32.to_be_bytes());
    header.extend_from_slice(&[PC_MG, 0x00]);
    let answer = t.attack("4 GiB P-DATA-TF", MemoryCheck::Bounded, |t| {
        let mut assoc = t.associate("MODALITY", EXPLICIT_LE).expect("association");
        let sent = flood(&mut assoc.stream, &header, FLOOD_LIMIT);
        (assoc.wait_answer().unwrap_or(Answer::Silent), flooded(sent))
    });
    assert!(
        answer.ends_connection(),
        "4 GiB P-DATA-TF: the node answered {answer:?}"
    );

    // b) As the very first PDU: an A-ASSOCIATE-RQ header claiming 4 GiB.
    let answer = t.attack("4 GiB A-ASSOCIATE-RQ", MemoryCheck::Bounded, |t| {
        t.flood_first_pdu(&[0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF])
    });
    assert!(
        answer.ends_connection(),
        "4 GiB A-ASSOCIATE-RQ: the node answered {answer:?}"
    );

    // c) An unknown calling AE title, rejected, then a 4 GiB PDU on the same connection.
    let answer = t.attack("4 GiB PDU after A-ASSOCIATE-RJ", MemoryCheck::Bounded, |t| {
        let mut s = t.connect();
        send_pdu(&mut s, &association_rq("STRANGER", EXPLICIT_LE)).unwrap();
        s.set_read_timeout(Some(PROMPT)).unwrap();
        let first = read_pdu(&mut s).map(Answer::of_pdu).unwrap_or_else(closed);
        assert_eq!(first, Answer::Rejected, "unknown calling AE title");
        flood_then_answer(&mut s, &[0x04, 0x00, 0xFF, 0xFF, 0xFF, 0xF0], FLOOD_LIMIT)
    });
    assert!(
        answer.ends_connection(),
        "4 GiB PDU after a rejection: the node answered {answer:?}"
    );

    // e) Other first PDUs: a 4 GiB P-DATA-TF, a 4 GiB PDU of an unknown type, an A-RELEASE-RQ.
    for (what, header) in [
        (
            "4 GiB P-DATA-TF as the first PDU",
            vec![0x04, 0x00, 0xFF, 0xFF, 0xFF, 0xF0],
        ),
        (
            "4 GiB unknown PDU type as the first PDU",
            vec![0x99, 0x00, 0xFF, 0xFF, 0xFF, 0xF0],
        ),
        ("A-RELEASE-RQ as the first PDU", pdu_bytes(&Pdu::ReleaseRQ)),
    ] {
        let answer = t.attack(what, MemoryCheck::Bounded, |t| t.flood_first_pdu(&header));
        assert!(answer.ends_connection(), "{what}: the node answered {answer:?}");
    }

    // d) Every association slot taken (max_associations = 3), then a 4 GiB A-ASSOCIATE-RQ.
    let case = "4 GiB A-ASSOCIATE-RQ at the association limit";
    let answer = t.attack(case, MemoryCheck::Bounded, |t| {
        let held: Vec<Assoc> = (0..3)
            .map(|_| t.associate("MODALITY", EXPLICIT_LE).expect("association"))
            .collect();
        let flooded = t.flood_first_pdu(&[0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xF0]);
        for a in held {
            a.release();
        }
        flooded
    });
    assert!(answer.ends_connection(), "{case}: the node answered {answer:?}");
}

/// Case 3: 512 MiB of data fragments that never end. The node spools them, its memory stays
/// flat, and the peer's A-ABORT removes the spool file.
#[test]
fn endless_data_fragments_keep_memory_bounded_and_leave_no_spool() {
    let mut t = Target::start("artim_timeout_s = 60\nidle_timeout_s = 60", "");
    let spec = MammogramSpec::low_energy(1000);
    let uid = fixture_uid(&spec);
    let mut sent = 0;
    let answer = t.attack("512 MiB of endless fragments", MemoryCheck::Bounded, |t| {
        let (answer, n, spooled) = t.store_endless(&spec, 512 * MIB);
        sent = n;
        (
            answer,
            format!("sent={}MiB spooled={}MiB", n / MIB, spooled / MIB),
        )
    });
    assert!(
        answer == Answer::Silent && sent >= 512 * MIB,
        "the node refused a data set below max_instance_mb after {} MiB: {answer:?}",
        sent / MIB
    );
    t.assert_nothing_left("A-ABORT after 512 MiB of endless fragments", &uid);
}

/// Case 4: 100,000 nested sequences, as a command set and as a C-STORE data set.
#[test]
fn deeply_nested_sequences_are_refused_without_a_crash() {
    let mut t = Target::start("artim_timeout_s = 60\nidle_timeout_s = 60", "");

    // The command set: a valid C-STORE-RQ with the nesting after its group 0000.
    let mut cmd = command::c_store_rq(1, MG_FOR_PRESENTATION, "2.25.4004").unwrap();
    cmd.extend(nested_sequences(100_000, false));
    let answer = t.attack(
        "100,000 nested sequences in a command set",
        MemoryCheck::Reported,
        |t| {
            let mut assoc = t.associate("MODALITY", EXPLICIT_LE).expect("association");
            let write = assoc.send_message(PC_MG, true, &cmd);
            (assoc.answer_to(write, 1), format!("bytes={}", cmd.len()))
        },
    );
    assert!(
        answer.is_refusal(),
        "a command set of 100,000 nested sequences: the node answered {answer:?}"
    );

    // The data set: the fixture with (0008,1115) nested 100,000 deep.
    let spec = MammogramSpec::low_energy(1001);
    let data = fixture_with_nesting(&spec, nested_sequences(100_000, true));
    t.assert_store_refused(
        "100,000 nested sequences in a data set",
        EXPLICIT_LE,
        &fixture_uid(&spec),
        &data,
        format!("bytes={}", data.len()),
    );
}

/// The bomb generator itself: a small bomb inflates to exactly what it claims, all zeros
/// after the prefix (else the case below would test nothing).
#[test]
fn deflate_bomb_generator_inflates_as_claimed() {
    let spec = MammogramSpec::low_energy(7);
    let (bomb, claimed) = deflate_bomb(&spec, 2, Some(3));
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(&bomb[..])
        .read_to_end(&mut inflated)
        .unwrap();
    assert_eq!(inflated.len() as u64, claimed);
    let prefix = fixture_part(&spec, |t| t.group() <= 0x0028);
    assert_eq!(&inflated[..prefix.len()], &prefix[..]);
    let value_len = 2 * 65_536 + 3 * MIB;
    let second = prefix.len() + 12 + value_len as usize;
    assert_eq!(
        &inflated[second..second + 12],
        &long_header(0x0029, 0x1001, b"OB", value_len as u32)[..]
    );
    assert!(inflated[prefix.len() + 12..second].iter().all(|&b| b == 0));
    assert!(inflated[second + 12..].iter().all(|&b| b == 0));
}

/// Case 5: a deflated data set that inflates to 8 GiB: refused, memory flat.
#[test]
fn deflate_bomb_is_refused_with_bounded_memory() {
    let mut t = Target::start("artim_timeout_s = 60\nidle_timeout_s = 60", "");
    let spec = MammogramSpec::low_energy(1002);
    let uid = fixture_uid(&spec);
    let (bomb, inflated) = deflate_bomb(&spec, 2, None);
    let answer = t.attack("deflate bomb", MemoryCheck::Bounded, |t| {
        let (written0, started) = (io_counter(t.node.pid(), "wchar"), Instant::now());
        // Inflating (and refusing) may take a while on a loaded machine: wait a few PROMPTs.
        let (_assoc, answer) = t.store_raw(DEFLATED_EXPLICIT_LE, &uid, &bomb, 6);
        let note = format!(
            "deflated={}KiB inflates_to={}MiB node_wrote={}MiB answered_after={:.1}s",
            bomb.len() / 1024,
            inflated / MIB,
            (io_counter(t.node.pid(), "wchar") - written0) / MIB,
            started.elapsed().as_secs_f32()
        );
        (answer, note)
    });
    assert!(
        answer.is_refusal(),
        "a deflate bomb: the node answered {answer:?}"
    );
    assert_eq!(t.rows_for(&uid), (0, 0), "rows for a deflate bomb");
}

/// An RLE Lossless fixture (PS3.5 G.3) with its declared geometry changed by `declare`, and one
/// tiny fragment: a header for 2 segments (16-bit samples) that each decode to one byte.
fn rle_image(spec: &MammogramSpec, declare: impl FnOnce(&mut InMemDicomObject)) -> Vec<u8> {
    let mut obj = mammogram(spec).into_inner();
    declare(&mut obj);
    let mut frame = vec![0u8; 64];
    frame[0..4].copy_from_slice(&2u32.to_le_bytes());
    frame[4..8].copy_from_slice(&64u32.to_le_bytes());
    frame[8..12].copy_from_slice(&66u32.to_le_bytes());
    frame.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new_fragments(vec![frame]),
    ));
    explicit_le(&obj)
}

fn put_us(obj: &mut InMemDicomObject, tag: Tag, v: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
}

/// Case 6: RLE Lossless images whose declared geometry is far beyond max_pixel_mb, each with a
/// tiny fragment: refused with a failure status before any decode, no instance, no job.
/// Besides 65535 x 65535: a frame count that overflows 64 bits with the rest, and a plausible
/// 4096 x 4096 with Number of Frames 100000 written with 1100 leading zeros (a valid IS value
/// to any integer parser, but longer than a checker might care to read).
#[test]
fn huge_declared_rle_image_is_refused_before_decode() {
    let mut t = Target::start("artim_timeout_s = 60\nidle_timeout_s = 60", "");
    type Declare = Box<dyn FnOnce(&mut InMemDicomObject)>;
    let variants: Vec<(&str, Declare)> = vec![
        (
            "65535x65535",
            Box::new(|o| {
                put_us(o, tags::ROWS, 65_535);
                put_us(o, tags::COLUMNS, 65_535);
            }),
        ),
        (
            "65535x65535x3 samples x 4294967295 frames",
            Box::new(|o| {
                put_us(o, tags::ROWS, 65_535);
                put_us(o, tags::COLUMNS, 65_535);
                put_us(o, tags::SAMPLES_PER_PIXEL, 3);
                o.put(DataElement::new(
                    tags::NUMBER_OF_FRAMES,
                    VR::IS,
                    PrimitiveValue::from("4294967295"),
                ));
            }),
        ),
        (
            "4096x4096 x 100000 frames (zero-padded)",
            Box::new(|o| {
                put_us(o, tags::ROWS, 4096);
                put_us(o, tags::COLUMNS, 4096);
                let frames = format!("{}100000", "0".repeat(1100));
                o.put(DataElement::new(
                    tags::NUMBER_OF_FRAMES,
                    VR::IS,
                    PrimitiveValue::from(frames),
                ));
            }),
        ),
        (
            "4096x4096 x 100000 frames (a second, empty value)",
            Box::new(|o| {
                put_us(o, tags::ROWS, 4096);
                put_us(o, tags::COLUMNS, 4096);
                o.put(DataElement::new(
                    tags::NUMBER_OF_FRAMES,
                    VR::IS,
                    PrimitiveValue::from("100000\\"),
                ));
            }),
        ),
    ];
    let mut accepted = Vec::new();
    for (i, (what, declare)) in variants.into_iter().enumerate() {
        let spec = MammogramSpec::low_energy(1003 + 100 * i as u64);
        let uid = fixture_uid(&spec);
        let data = rle_image(&spec, declare);
        let mut rows = (0, 0);
        let answer = t.attack(&format!("RLE image {what}"), MemoryCheck::Reported, |t| {
            let (assoc, answer) = t.store_raw(RLE_LOSSLESS, &uid, &data, 1);
            rows = t.rows_for(&uid);
            assoc.release();
            (answer, format!("rows(instance,job)={rows:?}"))
        });
        if !(matches!(answer, Answer::Status(..)) && answer.is_refusal()) || rows != (0, 0) {
            accepted.push(format!(
                "{what}: {answer:?}, rows (instance, job) {rows:?}; node.log:\n{}",
                t.log_lines_with(&uid)
            ));
        }
    }
    assert!(
        accepted.is_empty(),
        "RLE images beyond max_pixel_mb not refused:\n{}",
        accepted.join("\n")
    );
}

/// Case 7: A-ABORT in the middle of a data set: nothing stored, no temp file.
#[test]
fn abort_in_the_middle_of_a_data_set_leaves_nothing() {
    let mut t = Target::start("artim_timeout_s = 60\nidle_timeout_s = 60", "");
    let spec = MammogramSpec::low_energy(1004);
    let uid = fixture_uid(&spec);
    let data = explicit_le(&mammogram(&spec).into_inner());
    let mut assoc = t.associate("MODALITY", EXPLICIT_LE).expect("association");
    assoc.send_store_rq(&uid);
    // About 40 % of the data set, in fragments none of which is last.
    let part = &data[..data.len() * 2 / 5];
    assoc.send_unfinished(part).unwrap();
    assoc.abort();
    report(
        "abort-mid-data-set",
        "sent A-ABORT",
        0,
        memory(t.node.pid()),
        &format!("sent={}KiB of {}KiB", part.len() / 1024, data.len() / 1024),
    );
    t.assert_nothing_left("A-ABORT mid data set", &uid);
    let stored = t.stored_paths().iter().any(|(u, _)| *u == uid);
    assert!(!stored, "an aborted data set was stored");
    t.assert_healthy("A-ABORT mid data set");
}

/// Case 8: a peer that sends one byte at a time (association, C-ECHO, release) is served or
/// dropped by the per-PDU idle limit; meanwhile storescu is served at once.
#[test]
fn byte_at_a_time_peer_does_not_hold_up_others() {
    let mut t = Target::start("artim_timeout_s = 60\nidle_timeout_s = 60", "");
    let addr = t.node.addr;
    let slow = std::thread::spawn(move || -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(70))).unwrap();
        let echo_rq = command::c_echo_rq(1).unwrap();
        let mut echo = pdata_header(PC_ECHO, echo_rq.len(), true, true).to_vec();
        echo.extend_from_slice(&echo_rq);
        let steps: [(&str, Vec<u8>); 3] = [
            (
                "A-ASSOCIATE-RQ",
                pdu_bytes(&association_rq("MODALITY", EXPLICIT_LE)),
            ),
            ("C-ECHO-RQ", echo),
            ("A-RELEASE-RQ", pdu_bytes(&Pdu::ReleaseRQ)),
        ];
        for (what, bytes) in steps {
            for b in bytes {
                if s.write_all(&[b]).is_err() {
                    return format!("dropped while sending {what}");
                }
                std::thread::sleep(Duration::from_millis(3));
            }
            match read_pdu(&mut s) {
                Ok(Pdu::AssociationAC(_)) | Ok(Pdu::ReleaseRP) => {}
                Ok(Pdu::PData { data }) => {
                    let status = Command::parse(&data[0].data).ok().and_then(|c| c.status);
                    if status != Some(0) {
                        return format!("C-ECHO answered {status:?}");
                    }
                }
                Ok(other) => return format!("{} after {what}", other.short_description()),
                Err(e) => return format!("dropped after {what}: {e}"),
            }
        }
        "served".into()
    });
    // The legitimate store runs while the slow peer is still mid-PDU.
    std::thread::sleep(Duration::from_millis(100));
    t.assert_healthy("byte-at-a-time peer (running)");
    let slow_done_before_store = slow.is_finished();
    let outcome = slow.join().unwrap();
    report(
        "byte-at-a-time",
        &outcome,
        0,
        memory(t.node.pid()),
        &format!("slow_peer_finished_before_storescu={slow_done_before_store}"),
    );
    assert!(
        outcome == "served" || outcome.starts_with("dropped"),
        "byte-at-a-time peer: {outcome}"
    );
    t.assert_healthy("byte-at-a-time peer (done)");
}

/// Case 3, second part: with `[storage] max_instance_mb = 64`, a data set that grows past it
/// is refused (failure status or A-ABORT) long before 256 MiB, and nothing of it stays.
#[test]
fn data_set_beyond_max_instance_size_is_refused() {
    let mut t = Target::start(
        "artim_timeout_s = 60\nidle_timeout_s = 60",
        "max_instance_mb = 64",
    );
    let spec = MammogramSpec::low_energy(1005);
    let uid = fixture_uid(&spec);
    let mut sent = 0;
    let answer = t.attack("a data set beyond max_instance_mb", MemoryCheck::Bounded, |t| {
        let (answer, n, spooled) = t.store_endless(&spec, 256 * MIB);
        sent = n;
        let note = format!(
            "sent={}MiB spooled={}MiB max_instance_mb=64",
            n / MIB,
            spooled / MIB
        );
        (answer, note)
    });
    assert!(
        answer.is_refusal(),
        "{} MiB past max_instance_mb = 64: the node answered {answer:?}",
        sent / MIB
    );
    t.assert_nothing_left("a data set refused beyond max_instance_mb", &uid);
}

/// Explicit VR LE sequences (0008,1115) nested `depth` deep with defined lengths throughout
/// (no delimiters): the same depth, but a parser must track lengths instead of delimiters.
fn nested_sequences_defined(depth: usize) -> Vec<u8> {
    // Innermost first: an empty item in a sequence; each level wraps the previous one.
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let mut item = Vec::with_capacity(inner.len() + 20);
        item.extend_from_slice(&ITEM);
        item.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        item.extend_from_slice(&inner);
        let mut seq = Vec::with_capacity(item.len() + 12);
        seq.extend_from_slice(&SQ_TAG);
        seq.extend_from_slice(b"SQ\0\0");
        seq.extend_from_slice(&(item.len() as u32).to_le_bytes());
        seq.extend_from_slice(&item);
        inner = seq;
    }
    inner
}

/// Case 4, more shapes: 100,000 levels with defined lengths; 100,000 levels inside a deflated
/// data set (inflated before any check); command fragments that never end; data fragments
/// with no C-STORE-RQ before them. Each is refused or drained, memory flat, node alive.
#[test]
fn nesting_and_fragment_variants_are_refused_or_drained() {
    let mut t = Target::start("artim_timeout_s = 60\nidle_timeout_s = 60", "");

    // Defined lengths: 100,000 levels (each level's length field holds the rest).
    let spec = MammogramSpec::low_energy(2001);
    let data = fixture_with_nesting(&spec, nested_sequences_defined(100_000));
    t.assert_store_refused(
        "100,000 nested sequences of defined length",
        EXPLICIT_LE,
        &fixture_uid(&spec),
        &data,
        format!("bytes={}", data.len()),
    );

    // Deflated: the nesting only appears after inflating.
    let spec = MammogramSpec::low_energy(2002);
    let plain = fixture_with_nesting(&spec, nested_sequences(100_000, true));
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&plain).unwrap();
    let deflated = enc.finish().unwrap();
    t.assert_store_refused(
        "100,000 nested sequences, deflated",
        DEFLATED_EXPLICIT_LE,
        &fixture_uid(&spec),
        &deflated,
        format!("deflated={} inflated={}", deflated.len(), plain.len()),
    );

    // A stray item delimiter, then an item header, where no sequence is open (this made
    // dicom-parser's lazy reader panic; `make fuzz` found it in the scan).
    let spec = MammogramSpec::low_energy(2003);
    let mut stray = ITEM_END.to_vec();
    stray.extend_from_slice(&[0; 4]);
    stray.extend_from_slice(&ITEM);
    stray.extend_from_slice(&UNDEFINED);
    let data = fixture_with_nesting(&spec, stray);
    t.assert_store_refused(
        "a stray item delimiter",
        EXPLICIT_LE,
        &fixture_uid(&spec),
        &data,
        String::new(),
    );

    // Command fragments that never end (a command set is a few hundred bytes).
    let mut sent = 0;
    let answer = t.attack("endless command fragments", MemoryCheck::Bounded, |t| {
        let mut assoc = t.associate("MODALITY", EXPLICIT_LE).expect("association");
        let (n, answer) = assoc.stream_fragments(true, &mut |b: &mut [u8]| b.fill(0), 64 * MIB);
        sent = n;
        (answer.unwrap_or(Answer::Silent), format!("sent={}KiB", n / 1024))
    });
    assert!(
        answer.ends_connection(),
        "{} KiB of command fragments: the node answered {answer:?}",
        sent / 1024
    );

    // Data fragments with no C-STORE-RQ: 256 MiB that nobody asked to store.
    t.attack("data fragments without a C-STORE-RQ", MemoryCheck::Bounded, |t| {
        let mut assoc = t.associate("MODALITY", EXPLICIT_LE).expect("association");
        let (sent, answer) = assoc.stream_fragments(false, &mut |b: &mut [u8]| b.fill(0), 256 * MIB);
        let note = format!("sent={}MiB spooled={}MiB", sent / MIB, t.temp_bytes() / MIB);
        if answer.is_none() {
            assoc.abort();
        }
        (answer.unwrap_or(Answer::Silent), note)
    });
    let left = t.temp_files_after_wait();
    assert!(left.is_empty(), "temp files left: {left:?}");
}

/// Case 7, more endings: A-RELEASE-RQ and a plain TCP close in the middle of a data set leave
/// nothing stored and no temp file, like the A-ABORT.
#[test]
fn release_or_close_in_the_middle_of_a_data_set_leaves_nothing() {
    let mut t = Target::start("artim_timeout_s = 60\nidle_timeout_s = 60", "");
    for (i, ending) in ["A-RELEASE-RQ", "TCP close"].into_iter().enumerate() {
        let spec = MammogramSpec::low_energy(3000 + i as u64);
        let uid = fixture_uid(&spec);
        let data = explicit_le(&mammogram(&spec).into_inner());
        let case = format!("{ending} mid data set");
        t.attack(&case, MemoryCheck::Reported, |t| {
            let mut assoc = t.associate("MODALITY", EXPLICIT_LE).expect("association");
            assoc.send_store_rq(&uid);
            assoc.send_unfinished(&data[..data.len() / 2]).unwrap();
            let answer = if ending == "A-RELEASE-RQ" {
                send_pdu(&mut assoc.stream, &Pdu::ReleaseRQ).unwrap();
                assoc.wait_answer().unwrap_or(Answer::Silent)
            } else {
                assoc.stream.shutdown(std::net::Shutdown::Both).unwrap();
                Answer::Closed("by the peer".into())
            };
            (answer, String::new())
        });
        t.assert_nothing_left(&case, &uid);
    }
}

/// A peer stalled in the middle of a data set does not hold up a legitimate store of the same
/// SOP Instance UID; when the stalled one completes later, there is still one row and one job.
#[test]
fn stalled_store_does_not_block_the_same_instance_from_another_peer() {
    let mut t = Target::start("artim_timeout_s = 60\nidle_timeout_s = 60", "");
    let (path, uid) = t.fixture();
    let data = explicit_le(&dicom_object::open_file(&path).unwrap().into_inner());
    let answer = t.attack("stalled store of the same instance", MemoryCheck::Reported, |t| {
        let mut stalled = t.associate("MODALITY", EXPLICIT_LE).expect("association");
        stalled.send_store_rq(&uid);
        let half = data.len() / 2;
        stalled
            .stream
            .write_all(&pdata_header(PC_MG, half, false, false))
            .unwrap();
        stalled.stream.write_all(&data[..half]).unwrap();
        let out = storescu(&t.node, "MODALITY", DCMTK_PROMPT, &[path]);
        assert!(
            out.status.success() && successes(&out) == 1,
            "storescu of an instance another peer is stalled on: {}",
            text(&out)
        );
        t.acknowledged.push(uid.clone());
        // The stalled peer completes: a duplicate, acknowledged without a second row or job.
        stalled
            .stream
            .write_all(&pdata_header(PC_MG, data.len() - half, false, true))
            .unwrap();
        stalled.stream.write_all(&data[half..]).unwrap();
        let answer = stalled.wait_answer().unwrap_or(Answer::Silent);
        let rows = t.rows_for(&uid);
        stalled.release();
        (answer, format!("rows={rows:?}"))
    });
    assert!(
        matches!(answer, Answer::Status(0, _)),
        "the late duplicate: {answer:?}"
    );
    assert_eq!(t.rows_for(&uid), (1, 1), "rows (instance, job) after a duplicate");
}

/// Per-PDU idle limit and association lifetime: a PDU dribbled one byte per 50 ms is dropped
/// once idle_timeout_s (2 s) passes without a whole PDU; a peer that sends a C-ECHO every
/// 200 ms is served until association_lifetime_s (4 s), then aborted.
#[test]
fn idle_and_lifetime_limits_end_associations() {
    let mut t = Target::start(
        "artim_timeout_s = 60\nidle_timeout_s = 2\nassociation_lifetime_s = 4",
        "",
    );
    // Dribbler: a C-ECHO-RQ PDU, one byte per 50 ms (about 4 s for the whole PDU).
    let answer = t.attack("a PDU dribbled past idle_timeout_s", MemoryCheck::Reported, |t| {
        let mut assoc = t.associate("MODALITY", EXPLICIT_LE).expect("association");
        let echo_rq = command::c_echo_rq(1).unwrap();
        let mut pdu = pdata_header(PC_ECHO, echo_rq.len(), true, true).to_vec();
        pdu.extend_from_slice(&echo_rq);
        let started = Instant::now();
        let mut answer = None;
        for b in pdu {
            if let Ok(a) = assoc.answers.try_recv() {
                answer = Some(a);
                break;
            }
            if let Err(e) = assoc.stream.write_all(&[b]) {
                answer = Some(assoc.answer_to(Err(e), 1));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let answer = answer.or_else(|| assoc.wait_answer()).unwrap_or(Answer::Silent);
        let dribble_s = started.elapsed().as_secs_f32();
        (answer, format!("after={dribble_s:.1}s idle_timeout_s=2"))
    });
    assert!(
        answer.ends_connection(),
        "a PDU dribbled past idle_timeout_s: {answer:?}"
    );

    // Chatty: C-ECHO every 200 ms, each answered, until the lifetime ends the association.
    let mut echoes = 0;
    let ending = t.attack("an association past its lifetime", MemoryCheck::Reported, |t| {
        let mut assoc = t.associate("MODALITY", EXPLICIT_LE).expect("association");
        let started = Instant::now();
        let ending = loop {
            if started.elapsed() > Duration::from_secs(30) {
                break Answer::Silent;
            }
            if assoc
                .send_message(PC_ECHO, true, &command::c_echo_rq(1).unwrap())
                .is_err()
            {
                break assoc
                    .wait_answer()
                    .unwrap_or(Answer::Closed("write failed".into()));
            }
            match assoc.wait_answer() {
                Some(Answer::Status(0, _)) => echoes += 1,
                Some(other) => break other,
                None => break Answer::Silent,
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let lived_s = started.elapsed().as_secs_f32();
        (
            ending,
            format!("echoes={echoes} lived={lived_s:.1}s association_lifetime_s=4"),
        )
    });
    assert!(echoes > 0, "no C-ECHO answered before the lifetime ended");
    assert!(
        ending.ends_connection(),
        "an association past its lifetime: {ending:?}"
    );
}

/// Node CPU time (user + system) in seconds, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after_comm
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// A counter of /proc/<pid>/io (e.g. "syscw", write system calls; "wchar", bytes written).
fn io_counter(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Write system calls the node has made.
fn write_syscalls(pid: u32) -> u64 {
    io_counter(pid, "syscw")
}

/// A data set sent as one-byte PDVs (37,449 in each 256 KiB PDU, all valid PS3.8). Streams
/// `total` bytes of the endless data set in them, then aborts. Returns the bytes sent.
fn send_one_byte_pdvs(assoc: &mut Assoc, spec: &MammogramSpec, total: usize) -> usize {
    let mut source = endless_dataset(spec);
    let per_pdu = assoc.max_pdu as usize / 7;
    let mut sent = 0usize;
    let mut byte = [0u8; 1];
    while sent < total {
        let n = per_pdu.min(total - sent);
        let mut pdu = Vec::with_capacity(6 + n * 7);
        pdu.push(0x04);
        pdu.push(0);
        pdu.extend_from_slice(&((n * 7) as u32).to_be_bytes());
        for _ in 0..n {
            source(&mut byte);
            pdu.extend_from_slice(&3u32.to_be_bytes());
            pdu.extend_from_slice(&[PC_MG, 0, byte[0]]);
        }
        if assoc.stream.write_all(&pdu).is_err() {
            break;
        }
        sent += n;
    }
    sent
}

/// Case 3, third part: the same bytes cut into one-byte PDVs. A legitimate store is served
/// meanwhile, and the node's work stays proportional to the bytes, not to the PDV count:
/// spooling 256 KiB may not take more than one write system call per 4 KiB (plus slack).
#[test]
fn one_byte_pdvs_cost_no_more_than_large_ones() {
    let mut t = Target::start("artim_timeout_s = 60\nidle_timeout_s = 60", "");
    const TOTAL: usize = 256 * 1024;

    // A legitimate store while two peers send one-byte PDVs.
    let attackers: Vec<_> = (0..2u64)
        .map(|i| {
            let mut assoc = t.associate("MODALITY", EXPLICIT_LE).expect("association");
            std::thread::spawn(move || {
                let spec = MammogramSpec::low_energy(4000 + i);
                assoc.send_store_rq(&fixture_uid(&spec));
                let sent = send_one_byte_pdvs(&mut assoc, &spec, TOTAL);
                assoc.abort();
                sent
            })
        })
        .collect();
    t.assert_healthy("one-byte PDVs (during)");
    for a in attackers {
        a.join().unwrap();
    }
    let _ = t.temp_files_after_wait();

    // The cost: write system calls while the node spools TOTAL bytes of one-byte PDVs.
    let spec = MammogramSpec::low_energy(4100);
    let mut assoc = t.associate("MODALITY", EXPLICIT_LE).expect("association");
    assoc.send_store_rq(&fixture_uid(&spec));
    let (writes0, cpu0, started) = (
        write_syscalls(t.node.pid()),
        cpu_seconds(t.node.pid()),
        Instant::now(),
    );
    let sent = send_one_byte_pdvs(&mut assoc, &spec, TOTAL);
    // Wait (bounded) until the node has spooled what was sent, less what its spool buffer
    // (64 KiB) still holds until the data set ends.
    while t.temp_bytes() + 64 * 1024 < sent as u64 && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (writes, cpu) = (
        write_syscalls(t.node.pid()) - writes0,
        cpu_seconds(t.node.pid()) - cpu0,
    );
    let spooled = t.temp_bytes();
    report(
        "one-byte-pdvs",
        &format!("spooled={}KiB", spooled / 1024),
        0,
        memory(t.node.pid()),
        &format!(
            "sent={}KiB pdvs={sent} write_syscalls={writes} node_cpu={cpu:.1}s wall={:.1}s",
            sent / 1024,
            started.elapsed().as_secs_f32()
        ),
    );
    assoc.abort();
    assert!(
        writes <= (sent / 4096) as u64 + 200,
        "spooling {} KiB sent as {sent} one-byte PDVs took {writes} write system calls",
        sent / 1024
    );
    let left = t.temp_files_after_wait();
    assert!(left.is_empty(), "temp files left: {left:?}");
    t.assert_healthy("one-byte PDVs (after)");
}

/// Case 1, under a flood: connections opened as fast as the test can (the newest 64 kept open,
/// none ever sending a byte) while dcmtk stores three times: the node drops the oldest
/// negotiating connections, never a modality that sends its request at once.
#[test]
fn connection_flood_does_not_evict_a_prompt_modality() {
    let mut t = Target::start(
        "max_associations = 4\nmax_pending_associations = 16\nartim_timeout_s = 60\nidle_timeout_s = 60",
        "",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (addr, flag) = (t.node.addr, stop.clone());
    let flood = std::thread::spawn(move || {
        let mut open = std::collections::VecDeque::new();
        let mut opened = 0u64;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(s) = TcpStream::connect(addr) {
                open.push_back(s);
                opened += 1;
            }
            if open.len() > 64 {
                open.pop_front();
            }
        }
        opened
    });
    let mut results = Vec::new();
    for _ in 0..3 {
        let (path, uid) = t.fixture();
        let out = storescu(&t.node, "MODALITY", DCMTK_PROMPT, &[path]);
        let ok = out.status.success() && successes(&out) == 1;
        if ok {
            t.acknowledged.push(uid);
        }
        results.push((ok, text(&out)));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.join().unwrap();
    let served = results.iter().filter(|(ok, _)| *ok).count();
    report(
        "connection-flood",
        &format!("storescu served {served}/3"),
        0,
        memory(t.node.pid()),
        &format!("flood_connections={opened} max_pending=16"),
    );
    for (ok, out) in &results {
        assert!(ok, "storescu during a connection flood: {out}");
    }
    t.assert_healthy("connection flood");
}

/// A data set of 4 million empty private elements (32 MiB, every one well-formed) before
/// a whole image: the checks walk it without building it in memory.
#[test]
fn many_tiny_elements_keep_memory_bounded() {
    let mut t = Target::start("artim_timeout_s = 60\nidle_timeout_s = 60", "");
    let spec = MammogramSpec::low_energy(6000);
    let uid = fixture_uid(&spec);
    const ELEMENTS: usize = 4 << 20;
    let mut data = fixture_part(&spec, |t| t.group() <= 0x0028);
    data.reserve(ELEMENTS * 8 + 500_000);
    // (gggg,eeee) LO of length 0: groups 0029, 002B, …, elements 1000-FFFF in each.
    let (mut group, mut element) = (0x0029u16, 0x1000u16);
    for _ in 0..ELEMENTS {
        data.extend_from_slice(&group.to_le_bytes());
        data.extend_from_slice(&element.to_le_bytes());
        data.extend_from_slice(b"LO\0\0");
        if element == 0xFFFF {
            (group, element) = (group + 2, 0x1000);
        } else {
            element += 1;
        }
    }
    assert!(group < 0x7FE0);
    data.extend(fixture_part(&spec, |t| t.group() > 0x0028));
    let answer = t.attack("4 million tiny elements", MemoryCheck::Bounded, |t| {
        let started = Instant::now();
        // Walking 4 million elements may take a while on a loaded machine.
        let (assoc, answer) = t.store_raw(EXPLICIT_LE, &uid, &data, 6);
        let note = format!(
            "bytes={}MiB answered_after={:.1}s",
            data.len() as u64 / MIB,
            started.elapsed().as_secs_f32()
        );
        if matches!(answer, Answer::Status(0, _)) {
            t.acknowledged.push(uid.clone());
        }
        assoc.release();
        (answer, note)
    });
    assert!(
        matches!(answer, Answer::Status(..)),
        "4 million tiny elements: the node answered {answer:?}"
    );
}
