//! The seed corpus: valid encodings built with the node's own writers and dicom-rs, so that
//! mutation starts from inputs that reach deep into each parser.

use std::io::Write;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN};
use dicom_ul::pdu::{
    write_pdu, AbortRQSource, AssociationRQ, PDataValue, PDataValueType, Pdu, PresentationContextProposed,
    UserVariableItem,
};
use vcnode::fixture::{mammogram, MammogramSpec};
use vcnode_scp::command;

/// The first byte of a `scan` input selects how its body is encoded.
pub const MODE_IMPLICIT: u8 = 0;
pub const MODE_EXPLICIT: u8 = 1;
pub const MODE_DEFLATED: u8 = 2;

const SOP_INSTANCE: &str = "1.2.826.0.1.3680043.10.1.7";

pub fn command_sets() -> Vec<Vec<u8>> {
    vec![
        command::c_store_rq(1, vcnode_scp::MG_FOR_PRESENTATION, SOP_INSTANCE).expect("C-STORE-RQ"),
        command::c_echo_rq(2).expect("C-ECHO-RQ"),
        command::c_echo_rsp(2, 0).expect("C-ECHO-RSP"),
        command::response(
            command::C_STORE_RQ,
            3,
            Some("1.2"),
            Some("1.2.3"),
            0xA900,
            Some("why"),
        )
        .expect("C-STORE-RSP"),
    ]
}

fn pdata(values: Vec<PDataValue>) -> Pdu {
    Pdu::PData { data: values }
}

fn pdv(value_type: PDataValueType, is_last: bool, data: &[u8]) -> PDataValue {
    PDataValue {
        presentation_context_id: 1,
        value_type,
        is_last,
        data: data.to_vec(),
    }
}

fn stream(pdus: &[Pdu]) -> Vec<u8> {
    let mut out = Vec::new();
    for pdu in pdus {
        write_pdu(&mut out, pdu).expect("a valid PDU encodes");
    }
    out
}

/// Byte streams of whole PDUs, as a storage SCU sends them.
pub fn pdu_streams() -> Vec<Vec<u8>> {
    use PDataValueType::{Command, Data};
    let store = command::c_store_rq(1, vcnode_scp::MG_FOR_PRESENTATION, SOP_INSTANCE).expect("C-STORE-RQ");
    let echo = command::c_echo_rq(2).expect("C-ECHO-RQ");
    let data = small_dataset_explicit();
    let (head, tail) = store.split_at(store.len() / 2);
    let third = data.len() / 3;
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "MODALITY".into(),
        called_ae_title: "VCNODE".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: vcnode_scp::MG_FOR_PRESENTATION.into(),
            transfer_syntaxes: vec![
                vcnode_scp::EXPLICIT_VR_LE.into(),
                vcnode_scp::IMPLICIT_VR_LE.into(),
            ],
        }],
        user_variables: vec![
            UserVariableItem::MaxLength(16384),
            UserVariableItem::ImplementationClassUID("1.2.3.4".into()),
            UserVariableItem::ImplementationVersionName("FUZZ".into()),
        ],
    });
    vec![
        // A C-STORE: command in one PDV, the data set in three fragments, then release.
        stream(&[
            pdata(vec![pdv(Command, true, &store)]),
            pdata(vec![pdv(Data, false, &data[..third])]),
            pdata(vec![pdv(Data, false, &data[third..2 * third])]),
            pdata(vec![pdv(Data, true, &data[2 * third..])]),
            Pdu::ReleaseRQ,
        ]),
        // The command split in two fragments, the data set in the same PDU as its end.
        stream(&[
            pdata(vec![pdv(Command, false, head)]),
            pdata(vec![pdv(Command, true, tail), pdv(Data, true, &data)]),
        ]),
        // Negotiation, an echo, release and abort.
        stream(&[
            rq,
            pdata(vec![pdv(Command, true, &echo)]),
            Pdu::ReleaseRQ,
            Pdu::ReleaseRP,
            Pdu::AbortRQ {
                source: AbortRQSource::ServiceUser,
            },
        ]),
    ]
}

fn small_spec(seed: u64) -> MammogramSpec {
    MammogramSpec {
        rows: 16,
        columns: 12,
        ..MammogramSpec::low_energy(seed)
    }
}

fn encode(obj: &InMemDicomObject, explicit: bool) -> Vec<u8> {
    let ts = if explicit {
        EXPLICIT_VR_LITTLE_ENDIAN.erased()
    } else {
        IMPLICIT_VR_LITTLE_ENDIAN.erased()
    };
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &ts)
        .expect("a fixture encodes");
    out
}

fn small_dataset_explicit() -> Vec<u8> {
    encode(&mammogram(&small_spec(1)), true)
}

/// A fixture mammogram with sequences nested `depth` levels (Referenced Image Sequence inside
/// Content Sequence items), the way structured modality data carries them.
fn nested(depth: usize) -> InMemDicomObject {
    let mut obj: InMemDicomObject = mammogram(&small_spec(2)).into_inner();
    let mut inner = InMemDicomObject::from_element_iter([DataElement::new(
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(SOP_INSTANCE),
    )]);
    for level in 0..depth {
        let tag = if level % 2 == 0 {
            tags::REFERENCED_IMAGE_SEQUENCE
        } else {
            tags::CONTENT_SEQUENCE
        };
        inner = InMemDicomObject::from_element_iter([
            DataElement::new(tags::VALUE_TYPE, VR::CS, PrimitiveValue::from("CONTAINER")),
            DataElement::new(tag, VR::SQ, DataSetSequence::from(vec![inner.clone(), inner])),
        ]);
    }
    obj.put(DataElement::new(
        tags::CONTENT_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![inner]),
    ));
    obj
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("deflating into memory");
    enc.finish().expect("deflating into memory")
}

fn with_mode(mode: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(mode);
    out.extend_from_slice(body);
    out
}

/// Data sets for `scan`, each prefixed by its mode byte.
pub fn datasets() -> Vec<Vec<u8>> {
    let flat = mammogram(&small_spec(1)).into_inner();
    let deep = nested(4);
    let mut out = Vec::new();
    for obj in [&flat, &deep] {
        out.push(with_mode(MODE_IMPLICIT, &encode(obj, false)));
        let explicit = encode(obj, true);
        out.push(with_mode(MODE_EXPLICIT, &explicit));
        out.push(with_mode(MODE_DEFLATED, &deflate(&explicit)));
    }
    // Encapsulated Pixel Data: an empty offset table and one fragment, in Explicit VR.
    let mut encapsulated = encode(&flat, true);
    let pixel_at = encapsulated
        .windows(4)
        .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00])
        .expect("the fixture has Pixel Data");
    encapsulated.truncate(pixel_at);
    encapsulated.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    encapsulated.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
    encapsulated.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 1, 2, 3, 4]);
    encapsulated.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    out.push(with_mode(MODE_EXPLICIT, &encapsulated));
    out
}
