//! Bounded PDU transport: every PDU read is checked against a length limit *before* its body
//! is read, and must arrive whole before a deadline.
//!
//! dicom-ul's `read_pdu_from_wire_async` grows its buffer to whatever length a peer announces
//! when not strict, and its server negotiation reads the A-ASSOCIATE-RQ on a bare `TcpStream`
//! before the caller can decide anything. The SCP needs both decisions in its own hands (a
//! 4 GiB PDU header must cost nothing; no association slot before the RQ is read), so it reads
//! the 6-byte header here and leaves the PDU encoding and decoding to dicom-ul.

use std::time::Duration;

use dicom_ul::pdu::{
    read_pdu, write_pdu, PDataValue, PDataValueType, Pdu, MAXIMUM_PDU_SIZE, MINIMUM_PDU_SIZE, PDU_HEADER_SIZE,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The largest A-ASSOCIATE-RQ (or other non-P-DATA PDU) the SCP reads. Real requests are a few
/// kB even with a hundred presentation contexts; anything larger is not worth buffering.
pub const MAX_NEGOTIATION_PDU: u32 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("the peer announced a {kind} PDU of {length} bytes, above the limit of {limit}")]
    TooLarge { kind: u8, length: u32, limit: u32 },
    #[error("no complete PDU before the deadline")]
    Timeout,
    #[error("the connection closed")]
    Closed,
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed PDU: {0}")]
    Malformed(String),
}

/// The limit for a PDU of type `pdu_type` on an association that receives P-DATA PDUs of at
/// most `max_pdu_length` bytes (PS3.8 9.3.1: the limit negotiates P-DATA only).
pub fn limit_for(pdu_type: u8, max_pdu_length: u32) -> u32 {
    match pdu_type {
        0x04 => max_pdu_length,
        _ => MAX_NEGOTIATION_PDU,
    }
}

/// Reads one PDU, whole, before `deadline`. A header announcing more than `limit(type)` bytes is
/// refused without reading the body. `buf` is reused between calls (its capacity stays at the
/// largest PDU read, so at most the limit).
pub async fn read_bounded<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: impl Fn(u8) -> u32,
    deadline: Instant,
) -> Result<Pdu, PduError> {
    let read = async {
        let mut header = [0u8; PDU_HEADER_SIZE as usize];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(PduError::Closed),
            Err(e) => return Err(e.into()),
        }
        let kind = header[0];
        let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        let limit = limit(kind);
        if length > limit {
            return Err(PduError::TooLarge { kind, length, limit });
        }
        buf.clear();
        buf.extend_from_slice(&header);
        buf.resize(PDU_HEADER_SIZE as usize + length as usize, 0);
        reader
            .read_exact(&mut buf[PDU_HEADER_SIZE as usize..])
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => PduError::Closed,
                _ => PduError::Io(e),
            })?;
        // The length was checked above; dicom-ul's own check only needs a valid bound.
        let bound = length.clamp(MINIMUM_PDU_SIZE, MAXIMUM_PDU_SIZE);
        match read_pdu(&buf[..], bound, false) {
            Ok(Some(pdu)) => Ok(pdu),
            Ok(None) => Err(PduError::Malformed("incomplete".into())),
            Err(e) => Err(PduError::Malformed(e.to_string())),
        }
    };
    tokio::time::timeout_at(deadline, read)
        .await
        .unwrap_or(Err(PduError::Timeout))
}

/// A P-DATA-TF PDU holding one presentation data value.
pub fn pdata(pc_id: u8, value_type: PDataValueType, is_last: bool, data: Vec<u8>) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type,
            is_last,
            data,
        }],
    }
}

/// Writes one PDU before `timeout` elapses (a peer that stops reading cannot hold the task).
pub async fn write<W: AsyncWrite + Unpin>(
    writer: &mut W,
    pdu: &Pdu,
    timeout: Duration,
) -> Result<(), PduError> {
    let mut out = Vec::with_capacity(256);
    write_pdu(&mut out, pdu).map_err(|e| PduError::Malformed(e.to_string()))?;
    // Flushed: a TLS stream may hold encrypted records back until asked (a TcpStream's flush
    // does nothing).
    let send = async {
        writer.write_all(&out).await?;
        writer.flush().await
    };
    tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| PduError::Timeout)??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_huge_announced_length_is_refused_before_any_body_is_read() {
        // A P-DATA-TF header announcing 4 GiB, and no body at all.
        let bytes = [0x04u8, 0, 0xFF, 0xFF, 0xFF, 0xF0];
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = read_bounded(&mut &bytes[..], &mut buf, |t| limit_for(t, 16384), deadline)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                PduError::TooLarge {
                    length: 0xFFFF_FFF0,
                    limit: 16384,
                    ..
                }
            ),
            "{err}"
        );
        assert!(buf.capacity() < 1024, "nothing was allocated for the body");
    }

    #[tokio::test]
    async fn a_release_request_round_trips() {
        let mut out = Vec::new();
        write(&mut out, &Pdu::ReleaseRQ, Duration::from_secs(1))
            .await
            .unwrap();
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let pdu = read_bounded(&mut &out[..], &mut buf, |t| limit_for(t, 16384), deadline)
            .await
            .unwrap();
        assert_eq!(pdu, Pdu::ReleaseRQ);
    }
}
