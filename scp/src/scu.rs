//! The storage SCU: one association to a remote SCP, C-ECHO and C-STORE over it.

use std::time::Duration;

use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::association::AsyncClientAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::Pdu;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::command::{self, Command};

#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    #[error("could not associate with {addr}: {source}")]
    Associate {
        addr: String,
        source: dicom_ul::association::Error,
    },
    #[error("association with {addr} timed out")]
    Timeout { addr: String },
    #[error("the peer accepted no presentation context for SOP class {0}")]
    NoPresentationContext(String),
    #[error("network error: {0}")]
    Network(String),
    #[error("unexpected reply from the peer: {0}")]
    Protocol(String),
    #[error(transparent)]
    Command(#[from] command::CommandError),
}

/// Where to send and what to propose.
#[derive(Debug, Clone)]
pub struct StoreScuOptions {
    pub calling_ae_title: String,
    pub called_ae_title: String,
    /// `host:port`
    pub address: String,
    /// (abstract syntax, proposed transfer syntaxes) per presentation context.
    pub presentation_contexts: Vec<(String, Vec<String>)>,
    pub max_pdu_length: u32,
    /// Limit on connecting, on negotiation and on each response.
    pub timeout: Duration,
}

/// The status of one C-STORE, as the peer answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreResponse {
    pub status: u16,
    pub error_comment: Option<String>,
}

/// An open association to a storage SCP.
pub struct StoreScu {
    assoc: AsyncClientAssociation<TcpStream>,
    address: String,
    timeout: Duration,
    next_message_id: u16,
}

impl StoreScu {
    pub async fn connect(options: &StoreScuOptions) -> Result<Self, ScuError> {
        let mut opts = ClientAssociationOptions::new()
            .calling_ae_title(options.calling_ae_title.as_str())
            .called_ae_title(options.called_ae_title.as_str())
            .max_pdu_length(options.max_pdu_length)
            .read_timeout(options.timeout)
            .write_timeout(options.timeout)
            .connection_timeout(options.timeout);
        for (abstract_syntax, ts) in &options.presentation_contexts {
            opts = opts
                .with_presentation_context(abstract_syntax.as_str(), ts.iter().map(String::as_str).collect());
        }
        let address = options.address.clone();
        let assoc = tokio::time::timeout(options.timeout, opts.establish_async(address.as_str()))
            .await
            .map_err(|_| ScuError::Timeout {
                addr: address.clone(),
            })?
            .map_err(|source| ScuError::Associate {
                addr: address.clone(),
                source,
            })?;
        Ok(StoreScu {
            assoc,
            address,
            timeout: options.timeout,
            next_message_id: 1,
        })
    }

    /// The accepted presentation context for `sop_class`: (context id, transfer syntax).
    pub fn accepted_context(&self, sop_class: &str) -> Option<(u8, &str)> {
        self.assoc
            .presentation_contexts()
            .iter()
            .find(|pc| {
                pc.reason == PresentationContextResultReason::Acceptance && pc.abstract_syntax == sop_class
            })
            .map(|pc| (pc.id, pc.transfer_syntax.as_str()))
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// C-ECHO; returns the response status.
    pub async fn echo(&mut self) -> Result<u16, ScuError> {
        let (pc_id, _) = self
            .accepted_context(crate::VERIFICATION)
            .ok_or_else(|| ScuError::NoPresentationContext(crate::VERIFICATION.into()))?;
        let id = self.message_id();
        self.send_command(pc_id, command::c_echo_rq(id)?).await?;
        let rsp = self.read_response().await?;
        rsp.status
            .ok_or_else(|| ScuError::Protocol("C-ECHO-RSP without status".into()))
    }

    /// C-STORE of a data set already encoded in the accepted transfer syntax for its class.
    pub async fn store(
        &mut self,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        dataset: &[u8],
    ) -> Result<StoreResponse, ScuError> {
        let (pc_id, _) = self
            .accepted_context(sop_class_uid)
            .ok_or_else(|| ScuError::NoPresentationContext(sop_class_uid.into()))?;
        let id = self.message_id();
        self.send_command(pc_id, command::c_store_rq(id, sop_class_uid, sop_instance_uid)?)
            .await?;
        {
            let net = |e: std::io::Error| ScuError::Network(e.to_string());
            let mut writer = self.assoc.send_pdata(pc_id);
            writer.write_all(dataset).await.map_err(net)?;
            writer.finish().await.map_err(net)?;
        }
        let rsp = self.read_response().await?;
        if rsp.field != command::C_STORE_RSP {
            return Err(ScuError::Protocol(format!(
                "expected C-STORE-RSP, got command {:#06x}",
                rsp.field
            )));
        }
        Ok(StoreResponse {
            status: rsp
                .status
                .ok_or_else(|| ScuError::Protocol("C-STORE-RSP without status".into()))?,
            error_comment: rsp.error_comment,
        })
    }

    async fn send_command(&mut self, pc_id: u8, data: Vec<u8>) -> Result<(), ScuError> {
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        };
        self.assoc
            .send(&pdu)
            .await
            .map_err(|e| ScuError::Network(e.to_string()))
    }

    async fn read_response(&mut self) -> Result<Command, ScuError> {
        let mut buf = Vec::new();
        loop {
            let pdu = tokio::time::timeout(self.timeout, self.assoc.receive())
                .await
                .map_err(|_| ScuError::Timeout {
                    addr: self.address.clone(),
                })?
                .map_err(|e| ScuError::Network(e.to_string()))?;
            match pdu {
                Pdu::PData { data } => {
                    for pdv in data {
                        if pdv.value_type != PDataValueType::Command {
                            continue;
                        }
                        buf.extend_from_slice(&pdv.data);
                        if pdv.is_last {
                            return Ok(Command::parse(&buf)?);
                        }
                    }
                }
                Pdu::AbortRQ { source } => {
                    return Err(ScuError::Network(format!("peer aborted: {source:?}")))
                }
                other => return Err(ScuError::Protocol(other.short_description().to_string())),
            }
        }
    }

    /// Releases the association gracefully.
    pub async fn release(self) -> Result<(), ScuError> {
        self.assoc
            .release()
            .await
            .map_err(|e| ScuError::Network(e.to_string()))
    }

    /// Aborts the association.
    pub async fn abort(self) {
        let _ = self.assoc.abort().await;
    }
}
