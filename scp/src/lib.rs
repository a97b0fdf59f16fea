//! DIMSE networking for vcnode, on top of [`dicom_ul`].
//!
//! This crate knows DICOM networking and nothing about models or storage:
//! - [`StorageScp`] accepts associations (AE title and host checks, limits on negotiating and
//!   concurrent associations, ARTIM, per-PDU and lifetime timeouts, a PDU length limit on every
//!   read), answers C-ECHO, reassembles C-STORE requests ([`reassembly`]) while spooling each
//!   data set to a file, and hands it to a [`StoreHandler`], whose [`StoreOutcome`] becomes the
//!   C-STORE response status. Acknowledging only what is durable is the handler's job.
//! - [`tls`] builds the DICOM TLS side of a port ([`ScpListener::tls`]): the node's certificate
//!   and, optionally, client-certificate verification against a CA.
//! - [`pdu`] reads PDUs with their length checked before their body, on dicom-ul's codec.
//! - [`StoreScu`] sends data sets to a remote storage SCP and reads each response status.
//! - [`status`] names the PS3.4/PS3.7 status codes the node uses.

pub mod command;
pub mod pdu;
pub mod reassembly;
pub mod scp;
pub mod scu;
pub mod status;
pub mod tls;

pub use scp::{
    peer_list, AssociationObserver, Peer, PeerList, ReceivedInstance, Rejection, ScpConfig, ScpListener,
    SpooledDataSet, StorageScp, StoreHandler, StoreOutcome, Transport, SPOOL_SUFFIX,
};
pub use scu::{ScuError, StoreScu, StoreScuOptions};

/// Verification SOP Class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
/// Digital Mammography X-Ray Image Storage - For Presentation.
pub const MG_FOR_PRESENTATION: &str = "1.2.840.10008.5.1.4.1.1.1.2";
/// Digital Mammography X-Ray Image Storage - For Processing.
pub const MG_FOR_PROCESSING: &str = "1.2.840.10008.5.1.4.1.1.1.2.1";
/// Implicit VR Little Endian, the transfer syntax of every DIMSE command set.
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Checks a UID against PS3.5 9.1: 1 to 64 characters, digits and dots, no empty component,
/// no leading zero in a multi-digit component. The node uses UIDs as path components, so
/// this is also what stands between a peer and the file system.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|c| {
            !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c.len() == 1 || !c.starts_with('0'))
        })
}

/// Trims the padding DICOM allows at the end of UI and AE values.
pub fn trim_value(s: &str) -> &str {
    s.trim_end_matches(['\0', ' ']).trim_start_matches(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_syntax() {
        assert!(is_valid_uid("1.2.840.10008.5.1.4.1.1.1.2"));
        assert!(is_valid_uid("2.25.329800735698586629295641978511506172918"));
        assert!(!is_valid_uid(""));
        assert!(!is_valid_uid("1..2"));
        assert!(!is_valid_uid("1.2."));
        assert!(!is_valid_uid("1.02.3"));
        assert!(!is_valid_uid("../../etc/passwd"));
        assert!(!is_valid_uid("1.2/3"));
        assert!(!is_valid_uid(&"1.".repeat(32)));
    }
}
