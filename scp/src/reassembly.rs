//! P-DATA reassembly (PS3.8 9.3.5, Annex E): presentation data value fragments become whole
//! command sets and a stream of data set chunks, within limits.
//!
//! Kept free of I/O so the association loop stays small and the fuzzer can drive it directly:
//! the caller writes [`Event::DataChunk`]s wherever it keeps data sets (the SCP spools them to
//! a file), so no data set is ever buffered whole in memory.

use dicom_ul::pdu::{PDataValue, PDataValueType};

/// The largest command set accepted. C-ECHO and C-STORE command sets are a few hundred bytes;
/// a peer sending more is not speaking DIMSE.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    #[error("command set larger than {MAX_COMMAND_BYTES} bytes")]
    CommandTooLarge,
    #[error("data set larger than the limit of {limit} bytes")]
    DataSetTooLarge { limit: u64 },
    #[error("data set fragment on presentation context {got} while context {expected}'s is open")]
    ContextChanged { expected: u8, got: u8 },
    #[error("command fragment in the middle of a data set")]
    CommandDuringDataSet,
}

/// What a presentation data value completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole command set, on its presentation context.
    Command { pc_id: u8, bytes: Vec<u8> },
    /// Bytes of the data set being received (possibly empty).
    DataChunk { pc_id: u8, bytes: Vec<u8> },
    /// The last fragment of the data set arrived (its bytes came in the preceding chunks).
    DataEnd { pc_id: u8, total: u64 },
}

/// Reassembly state of one association.
#[derive(Debug)]
pub struct Reassembly {
    command: Vec<u8>,
    /// The presentation context and bytes so far of the data set being received.
    data: Option<(u8, u64)>,
    max_data_set: u64,
}

impl Reassembly {
    pub fn new(max_data_set: u64) -> Self {
        Reassembly {
            command: Vec::new(),
            data: None,
            max_data_set,
        }
    }

    /// True while a data set is partly received.
    pub fn in_data_set(&self) -> bool {
        self.data.is_some()
    }

    /// Takes one PDV; returns what it completes: nothing, a command set, a data chunk, or for
    /// the last data fragment its chunk followed by [`Event::DataEnd`].
    pub fn push(&mut self, pdv: PDataValue) -> Result<Vec<Event>, ReassemblyError> {
        let pc_id = pdv.presentation_context_id;
        match pdv.value_type {
            PDataValueType::Command => {
                if self.data.is_some() {
                    return Err(ReassemblyError::CommandDuringDataSet);
                }
                if self.command.len() + pdv.data.len() > MAX_COMMAND_BYTES {
                    self.command = Vec::new();
                    return Err(ReassemblyError::CommandTooLarge);
                }
                self.command.extend_from_slice(&pdv.data);
                if !pdv.is_last {
                    return Ok(Vec::new());
                }
                let bytes = std::mem::take(&mut self.command);
                Ok(vec![Event::Command { pc_id, bytes }])
            }
            PDataValueType::Data => {
                let so_far = match self.data {
                    Some((open, _)) if open != pc_id => {
                        return Err(ReassemblyError::ContextChanged {
                            expected: open,
                            got: pc_id,
                        })
                    }
                    Some((_, n)) => n,
                    None => 0,
                };
                let total = so_far.saturating_add(pdv.data.len() as u64);
                if total > self.max_data_set {
                    self.data = None;
                    return Err(ReassemblyError::DataSetTooLarge {
                        limit: self.max_data_set,
                    });
                }
                let chunk = Event::DataChunk {
                    pc_id,
                    bytes: pdv.data,
                };
                if pdv.is_last {
                    self.data = None;
                    Ok(vec![chunk, Event::DataEnd { pc_id, total }])
                } else {
                    self.data = Some((pc_id, total));
                    Ok(vec![chunk])
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdv(value_type: PDataValueType, is_last: bool, data: &[u8]) -> PDataValue {
        PDataValue {
            presentation_context_id: 1,
            value_type,
            is_last,
            data: data.to_vec(),
        }
    }

    #[test]
    fn fragments_become_a_command_then_chunks_and_an_end() {
        let mut r = Reassembly::new(100);
        assert!(r
            .push(pdv(PDataValueType::Command, false, b"ab"))
            .unwrap()
            .is_empty());
        let cmd = r.push(pdv(PDataValueType::Command, true, b"cd")).unwrap();
        assert_eq!(
            cmd,
            vec![Event::Command {
                pc_id: 1,
                bytes: b"abcd".to_vec()
            }]
        );
        assert_eq!(r.push(pdv(PDataValueType::Data, false, b"xy")).unwrap().len(), 1);
        assert!(r.in_data_set());
        let end = r.push(pdv(PDataValueType::Data, true, b"z")).unwrap();
        assert_eq!(end[1], Event::DataEnd { pc_id: 1, total: 3 });
        assert!(!r.in_data_set());
    }

    #[test]
    fn limits_hold() {
        let mut r = Reassembly::new(10);
        r.push(pdv(PDataValueType::Data, false, &[0; 8])).unwrap();
        assert_eq!(
            r.push(pdv(PDataValueType::Data, false, &[0; 8])),
            Err(ReassemblyError::DataSetTooLarge { limit: 10 })
        );
        let big = vec![0; MAX_COMMAND_BYTES / 2 + 1];
        r.push(pdv(PDataValueType::Command, false, &big)).unwrap();
        assert_eq!(
            r.push(pdv(PDataValueType::Command, false, &big)),
            Err(ReassemblyError::CommandTooLarge)
        );
    }
}
