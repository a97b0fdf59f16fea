//! What a DICOMweb client accepts (PS3.18 8.7): the `Accept` header's media ranges, and the
//! representation of each resource chosen from them (WADO-RS; QIDO-RS answers DICOM JSON).
//!
//! Retrieval of DICOM instances answers `multipart/related; type="application/dicom"` in the
//! transfer syntax the client asks for: `transfer-syntax=*` is the stored one; none at all is
//! the stored one when it is Explicit VR Little Endian (PS3.18's default) and a transcoding to
//! it otherwise; a named uncompressed one is a transcoding. Frames answer the stored encoding
//! for `transfer-syntax=*` (how cornerstone asks) and uncompressed pixels otherwise.

use axum::http::{header, HeaderMap, StatusCode};

use crate::web::WebError;

pub const EXPLICIT_VR_LE: &str = vcnode_scp::EXPLICIT_VR_LE;
pub const IMPLICIT_VR_LE: &str = vcnode_scp::IMPLICIT_VR_LE;

/// One media range of an `Accept` header, lower-cased, with its parameters (values unquoted).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    pub essence: String,
    pub params: Vec<(String, String)>,
    pub q: f32,
}

impl MediaRange {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `type` of a `multipart/related` range (lower-cased), if any.
    fn part_type(&self) -> Option<String> {
        self.param("type").map(str::to_ascii_lowercase)
    }

    fn transfer_syntax(&self) -> Option<&str> {
        self.param("transfer-syntax")
    }

    fn is_any(&self) -> bool {
        matches!(self.essence.as_str(), "*/*" | "multipart/*")
    }
}

/// The media ranges of all `Accept` headers, most preferred first (stable for equal `q`);
/// ranges with `q=0` are left out. An absent or empty header is one `*/*`.
pub fn parse(headers: &HeaderMap) -> Result<Vec<MediaRange>, WebError> {
    let mut ranges = Vec::new();
    for value in headers.get_all(header::ACCEPT) {
        let text = value
            .to_str()
            .map_err(|_| WebError::bad_request("Accept header is not ASCII"))?;
        for item in split_outside_quotes(text, ',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            ranges.push(parse_range(item)?);
        }
    }
    if ranges.is_empty() {
        ranges.push(MediaRange {
            essence: "*/*".into(),
            params: Vec::new(),
            q: 1.0,
        });
    }
    ranges.retain(|r| r.q > 0.0);
    // Stable: equal preferences keep the client's order.
    ranges.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal));
    Ok(ranges)
}

fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_range(item: &str) -> Result<MediaRange, WebError> {
    let malformed = || WebError::bad_request(format!("malformed media range in Accept: {item:?}"));
    let mut pieces = split_outside_quotes(item, ';').into_iter();
    let essence = pieces.next().unwrap_or_default().trim().to_ascii_lowercase();
    let (kind, sub) = essence.split_once('/').ok_or_else(malformed)?;
    if kind.is_empty() || sub.is_empty() {
        return Err(malformed());
    }
    let mut params = Vec::new();
    let mut q = 1.0;
    for p in pieces {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (k, v) = p.split_once('=').ok_or_else(malformed)?;
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().trim_matches('"').to_string();
        if k == "q" {
            q = v
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))
                .ok_or_else(malformed)?;
        } else {
            params.push((k, v));
        }
    }
    Ok(MediaRange { essence, params, q })
}

fn not_acceptable(what: &str) -> WebError {
    WebError::new(
        StatusCode::NOT_ACCEPTABLE,
        format!("cannot answer {what} in any media type the Accept header names"),
    )
}

/// A transfer syntax a client asks for DICOM instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxRequest {
    /// `transfer-syntax=*`: as stored.
    AsStored,
    /// No transfer syntax named: PS3.18's default, Explicit VR Little Endian.
    Default,
    Uid(String),
}

/// How one instance is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The stored file, byte for byte.
    Stored,
    /// Re-encoded (decoding compressed pixel data) into this uncompressed transfer syntax.
    Transcode(&'static str),
}

/// The uncompressed transfer syntaxes the node transcodes into.
fn uncompressed(uid: &str) -> Option<&'static str> {
    [EXPLICIT_VR_LE, IMPLICIT_VR_LE].into_iter().find(|u| *u == uid)
}

/// The transfer syntax requests for `multipart/related; type="application/dicom"`, most
/// preferred first; 406 when no range accepts DICOM instances.
pub fn dicom_requests(ranges: &[MediaRange]) -> Result<Vec<SyntaxRequest>, WebError> {
    let requests: Vec<SyntaxRequest> = ranges
        .iter()
        .filter(|r| match r.essence.as_str() {
            "multipart/related" => matches!(
                r.part_type().as_deref(),
                None | Some("application/dicom") | Some("*/*") | Some("application/*")
            ),
            // A single-part request is answered multipart all the same (one instance or not).
            "application/dicom" | "application/*" => true,
            _ => r.is_any(),
        })
        .map(|r| match r.transfer_syntax() {
            Some("*") => SyntaxRequest::AsStored,
            Some(uid) => SyntaxRequest::Uid(uid.to_string()),
            None => SyntaxRequest::Default,
        })
        .collect();
    if requests.is_empty() {
        return Err(not_acceptable("DICOM instances"));
    }
    Ok(requests)
}

/// How an instance stored in `stored` is sent for the first request it can satisfy.
pub fn deliver(requests: &[SyntaxRequest], stored: &str) -> Option<Delivery> {
    requests.iter().find_map(|r| match r {
        SyntaxRequest::AsStored => Some(Delivery::Stored),
        SyntaxRequest::Default if stored == EXPLICIT_VR_LE => Some(Delivery::Stored),
        SyntaxRequest::Default => Some(Delivery::Transcode(EXPLICIT_VR_LE)),
        SyntaxRequest::Uid(u) if u == stored => Some(Delivery::Stored),
        SyntaxRequest::Uid(u) => uncompressed(u).map(Delivery::Transcode),
    })
}

/// The media type of a frame's bytes in a compressed transfer syntax (PS3.18 Table 8.7.3-2).
pub fn frame_media_type(ts: &str) -> Option<&'static str> {
    Some(match ts {
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        _ => return None,
    })
}

/// How frames (or pixel data bulk data) are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameDelivery {
    /// Native pixel bytes, Explicit VR Little Endian (decoded when stored compressed).
    Uncompressed,
    /// The stored encoding: native bytes or each frame's compressed bitstream. `part_type` is
    /// the media type the parts are labelled with.
    Stored { part_type: String },
}

/// How frames of an instance stored in `stored` (`encapsulated`: compressed) are sent; 406
/// when no media range accepts them.
pub fn frame_delivery(
    ranges: &[MediaRange],
    stored: &str,
    encapsulated: bool,
) -> Result<FrameDelivery, WebError> {
    let native_type = "application/octet-stream";
    let stored_type = || {
        frame_media_type(stored)
            .filter(|_| encapsulated)
            .unwrap_or(native_type)
            .to_string()
    };
    for r in ranges {
        let part_type = match r.essence.as_str() {
            "multipart/related" => r.part_type(),
            "application/octet-stream" => Some(native_type.to_string()),
            _ if r.is_any() => None,
            e if e.starts_with("image/") => Some(e.to_string()),
            _ => continue,
        };
        let ts = r.transfer_syntax();
        let chosen = match (part_type.as_deref(), ts) {
            // Anything: the server's choice, the stored encoding under its own media type.
            (None | Some("*/*"), None | Some("*")) => Some(FrameDelivery::Stored {
                part_type: stored_type(),
            }),
            (Some(t), Some("*")) if t == native_type => Some(FrameDelivery::Stored {
                part_type: native_type.to_string(),
            }),
            (Some(t), None) if t == native_type => Some(FrameDelivery::Uncompressed),
            (Some(t), Some(EXPLICIT_VR_LE)) if t == native_type => Some(FrameDelivery::Uncompressed),
            (None | Some("*/*"), Some(EXPLICIT_VR_LE)) => Some(FrameDelivery::Uncompressed),
            (_, Some(uid)) if uid == stored && encapsulated => Some(FrameDelivery::Stored {
                part_type: part_type
                    .filter(|t| t != "*/*" && !t.ends_with("/*"))
                    .unwrap_or_else(stored_type),
            }),
            // image/jp2 etc. without a transfer syntax: the stored bitstream if it is one.
            (Some(t), None | Some("*")) if encapsulated && frame_media_type(stored) == Some(t) => {
                Some(FrameDelivery::Stored {
                    part_type: t.to_string(),
                })
            }
            (Some("image/*"), None | Some("*")) if encapsulated => Some(FrameDelivery::Stored {
                part_type: stored_type(),
            }),
            _ => None,
        };
        if let Some(c) = chosen {
            return Ok(c);
        }
    }
    Err(not_acceptable("these frames"))
}

/// The image media type of a rendered resource: PNG unless JPEG is preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderedType {
    Png,
    Jpeg,
}

impl RenderedType {
    pub fn media_type(self) -> &'static str {
        match self {
            RenderedType::Png => "image/png",
            RenderedType::Jpeg => "image/jpeg",
        }
    }
}

pub fn rendered_type(ranges: &[MediaRange]) -> Result<RenderedType, WebError> {
    ranges
        .iter()
        .find_map(|r| match r.essence.as_str() {
            "image/png" | "image/*" | "*/*" => Some(RenderedType::Png),
            "image/jpeg" => Some(RenderedType::Jpeg),
            _ => None,
        })
        .ok_or_else(|| not_acceptable("a rendered image (image/png, image/jpeg)"))
}

/// Metadata and QIDO-RS answers (`what`) are DICOM JSON only.
pub fn accepts_dicom_json(ranges: &[MediaRange], what: &str) -> Result<(), WebError> {
    if ranges.iter().any(|r| {
        matches!(
            r.essence.as_str(),
            "application/dicom+json" | "application/json" | "application/*" | "*/*"
        )
    }) {
        Ok(())
    } else {
        Err(not_acceptable(&format!("{what} (application/dicom+json)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ranges(accept: &str) -> Vec<MediaRange> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        parse(&h).unwrap()
    }

    #[test]
    fn parses_parameters_quotes_and_preference() {
        let r = ranges(
            r#"multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90;q=0.5, Multipart/Related; type=application/dicom; transfer-syntax="*""#,
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].essence, "multipart/related");
        assert_eq!(r[0].param("transfer-syntax"), Some("*"));
        assert_eq!(r[1].param("type"), Some("application/dicom"));
        assert_eq!(r[1].q, 0.5);
        assert_eq!(parse(&HeaderMap::new()).unwrap()[0].essence, "*/*");
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("nonsense"));
        assert_eq!(parse(&h).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn instances_go_as_stored_or_explicit_little_endian() {
        let j2k = "1.2.840.10008.1.2.4.90";
        let any = dicom_requests(&ranges(
            r#"multipart/related; type="application/dicom"; transfer-syntax=*"#,
        ))
        .unwrap();
        assert_eq!(deliver(&any, j2k), Some(Delivery::Stored));
        let default = dicom_requests(&ranges(r#"multipart/related; type="application/dicom""#)).unwrap();
        assert_eq!(deliver(&default, EXPLICIT_VR_LE), Some(Delivery::Stored));
        assert_eq!(deliver(&default, j2k), Some(Delivery::Transcode(EXPLICIT_VR_LE)));
        assert_eq!(
            deliver(&default, IMPLICIT_VR_LE),
            Some(Delivery::Transcode(EXPLICIT_VR_LE))
        );
        let none = dicom_requests(&parse(&HeaderMap::new()).unwrap()).unwrap();
        assert_eq!(deliver(&none, j2k), Some(Delivery::Transcode(EXPLICIT_VR_LE)));
        let implicit = dicom_requests(&ranges(&format!(
            "multipart/related; type=application/dicom; transfer-syntax={IMPLICIT_VR_LE}"
        )))
        .unwrap();
        assert_eq!(deliver(&implicit, j2k), Some(Delivery::Transcode(IMPLICIT_VR_LE)));
        // JPEG 2000 only for what is stored in it; JPEG-LS is not made here.
        let j2k_only = dicom_requests(&ranges(&format!(
            "multipart/related; type=application/dicom; transfer-syntax={j2k}"
        )))
        .unwrap();
        assert_eq!(deliver(&j2k_only, j2k), Some(Delivery::Stored));
        assert_eq!(deliver(&j2k_only, EXPLICIT_VR_LE), None);
        let err = dicom_requests(&ranges("application/dicom+json")).unwrap_err();
        assert_eq!(err.status, StatusCode::NOT_ACCEPTABLE);
        let err =
            dicom_requests(&ranges(r#"multipart/related; type="application/octet-stream""#)).unwrap_err();
        assert_eq!(err.status, StatusCode::NOT_ACCEPTABLE);
    }

    #[test]
    fn frames_as_cornerstone_asks_are_the_stored_encoding() {
        let j2k = "1.2.840.10008.1.2.4.90";
        let cornerstone = ranges("multipart/related; type=application/octet-stream; transfer-syntax=*");
        assert_eq!(
            frame_delivery(&cornerstone, j2k, true).unwrap(),
            FrameDelivery::Stored {
                part_type: "application/octet-stream".into()
            }
        );
        let plain = ranges(r#"multipart/related; type="application/octet-stream""#);
        assert_eq!(
            frame_delivery(&plain, j2k, true).unwrap(),
            FrameDelivery::Uncompressed
        );
        let any = ranges(r#"multipart/related; type="*/*""#);
        assert_eq!(
            frame_delivery(&any, j2k, true).unwrap(),
            FrameDelivery::Stored {
                part_type: "image/jp2".into()
            }
        );
        assert_eq!(
            frame_delivery(&any, EXPLICIT_VR_LE, false).unwrap(),
            FrameDelivery::Stored {
                part_type: "application/octet-stream".into()
            }
        );
        let jls = ranges("multipart/related; type=image/jls; transfer-syntax=1.2.840.10008.1.2.4.80");
        assert_eq!(
            frame_delivery(&jls, j2k, true).unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
        let jp2 = ranges("multipart/related; type=image/jp2");
        assert_eq!(
            frame_delivery(&jp2, j2k, true).unwrap(),
            FrameDelivery::Stored {
                part_type: "image/jp2".into()
            }
        );
    }

    #[test]
    fn rendered_is_png_unless_jpeg_is_preferred() {
        assert_eq!(
            rendered_type(&parse(&HeaderMap::new()).unwrap()).unwrap(),
            RenderedType::Png
        );
        assert_eq!(
            rendered_type(&ranges("image/jpeg, image/png;q=0.5")).unwrap(),
            RenderedType::Jpeg
        );
        assert_eq!(
            rendered_type(&ranges("image/gif")).unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
    }

    #[test]
    fn dicom_json_answers_need_a_range_that_takes_them() {
        for ok in [
            "application/dicom+json",
            "application/json",
            "*/*",
            "application/*",
        ] {
            assert!(accepts_dicom_json(&ranges(ok), "a search").is_ok(), "{ok}");
        }
        assert!(accepts_dicom_json(&parse(&HeaderMap::new()).unwrap(), "a search").is_ok());
        for refused in ["application/dicom+xml", "application/dicom+json;q=0, image/png"] {
            let e = accepts_dicom_json(&ranges(refused), "a search").unwrap_err();
            assert_eq!(e.status, StatusCode::NOT_ACCEPTABLE, "{refused}");
            assert!(
                e.reason.contains("a search (application/dicom+json)"),
                "{}",
                e.reason
            );
        }
    }
}
