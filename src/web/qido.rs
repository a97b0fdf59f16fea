//! QIDO-RS (PS3.18 10.6): searches for studies, series and instances, answered from the SQLite
//! index ([`crate::queue::index`]) without opening a file.
//!
//! - Matching keys by keyword (`PatientID=`) or tag (`00100020=`): single value, universal
//!   (empty or `*`), wildcards `*` `?` (person names ignore ASCII case, other attributes do not),
//!   date and time ranges (`a-b`, `-b`, `a-`), lists of UIDs (and of modalities) separated by
//!   `,` or `\` (a UID key given twice adds to its list; other repeated keys must all match),
//!   and ModalitiesInStudy (a study matches when any of its series has one of them).
//!   A key of a level below the search's matches through any of the entity's instances
//!   (`/studies?SeriesDescription=AI*`: the studies with such a series), as dcm4chee does. A key
//!   the index cannot match or with a malformed value is refused with 400 and the reason.
//! - `includefield` (repeated or comma-separated, keyword or tag, or `all`); a valid attribute
//!   the index does not keep is ignored. `limit`, `offset`. `fuzzymatching` is accepted and
//!   ignored: matching is literal, and `fuzzymatching=true` is answered with the `Warning: 299`
//!   PS3.18 prescribes for it.
//! - Answers are `application/dicom+json` (PS3.18 F), always 200 with an array, `[]` when
//!   nothing matches (what OHIF expects). They carry the attributes PS3.18 Table 6.7.1-2, -2a and
//!   -2b require for their level (and those of the levels above when the path names no study
//!   or series), the matching keys, the included fields, and RetrieveURL built from the
//!   request's own origin (as WADO-RS's BulkDataURIs: Host or X-Forwarded-Host and -Proto, the
//!   listening port where a client's Host leaves it out). Series answers also
//!   carry Synthetic Data, instance answers Synthetic Data and Image Type, so a derived series
//!   is unmistakable beside its SeriesDescription.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;

use super::{BaseUrl, WebError, WebState, DICOM_JSON};
use crate::queue::index::{self, Condition, Found, Level, Matcher, Search, SearchError, Value};

pub(super) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/studies", search(Level::Study))
        .route("/series", search(Level::Series))
        .route("/instances", search(Level::Instance))
        .route("/studies/{study}/series", search(Level::Series))
        .route("/studies/{study}/instances", search(Level::Instance))
        .route(
            "/studies/{study}/series/{series}/instances",
            search(Level::Instance),
        )
}

/// The handler of a search at `level`, restricted to the study and series in the path.
fn search(level: Level) -> MethodRouter<Arc<WebState>> {
    get(
        move |State(s): State<Arc<WebState>>,
              scope: Scope,
              h: HeaderMap,
              base: BaseUrl,
              Query(p): Query<Vec<(String, String)>>| async move {
            qido(&s, &h, base, &p, level, scope).await
        },
    )
}

/// What the path restricts the search to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    All,
    Study(String),
    Series(String, String),
}

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = PathRejection;

    /// From the path's `{study}` and `{series}`.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Scope, PathRejection> {
        let Path(mut uids) = Path::<HashMap<String, String>>::from_request_parts(parts, state).await?;
        Ok(match (uids.remove("study"), uids.remove("series")) {
            (Some(study), Some(series)) => Scope::Series(study, series),
            (Some(study), None) => Scope::Study(study),
            _ => Scope::All,
        })
    }
}

impl Scope {
    /// The highest level whose attributes the answer carries: the one below the path's.
    fn first_returned_level(&self) -> Level {
        match self {
            Scope::All => Level::Study,
            Scope::Study(_) => Level::Series,
            Scope::Series(..) => Level::Instance,
        }
    }
}

/// The attributes PS3.18 Table 6.7.1-2 (study), -2a (series) and -2b (instance) require, plus
/// what marks a derived series (Synthetic Data, Image Type). Specific Character Set, Instance
/// Availability and RetrieveURL are added when the answer is built.
fn required(level: Level) -> &'static [Tag] {
    match level {
        Level::Study => &[
            tags::STUDY_DATE,
            tags::STUDY_TIME,
            tags::ACCESSION_NUMBER,
            tags::MODALITIES_IN_STUDY,
            tags::REFERRING_PHYSICIAN_NAME,
            tags::PATIENT_NAME,
            tags::PATIENT_ID,
            tags::PATIENT_BIRTH_DATE,
            tags::PATIENT_SEX,
            tags::STUDY_INSTANCE_UID,
            tags::STUDY_ID,
            tags::NUMBER_OF_STUDY_RELATED_SERIES,
            tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        ],
        Level::Series => &[
            tags::MODALITY,
            tags::SERIES_DESCRIPTION,
            tags::SERIES_INSTANCE_UID,
            tags::SERIES_NUMBER,
            tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
            tags::PERFORMED_PROCEDURE_STEP_START_DATE,
            tags::PERFORMED_PROCEDURE_STEP_START_TIME,
            tags::SYNTHETIC_DATA,
        ],
        Level::Instance => &[
            tags::SOP_CLASS_UID,
            tags::SOP_INSTANCE_UID,
            tags::INSTANCE_NUMBER,
            tags::ROWS,
            tags::COLUMNS,
            tags::BITS_ALLOCATED,
            tags::NUMBER_OF_FRAMES,
            tags::IMAGE_TYPE,
            tags::SYNTHETIC_DATA,
        ],
    }
}

/// A keyword (`PatientID`) or a tag (`00100020`) of the standard dictionary.
fn tag_of(key: &str) -> Result<Tag, WebError> {
    let hex = |s: &str| u16::from_str_radix(s, 16).ok();
    if key.len() == 8 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let (Some(g), Some(e)) = (hex(&key[..4]), hex(&key[4..])) {
            return Ok(Tag(g, e));
        }
    }
    StandardDataDictionary
        .by_name(key)
        .map(|e| e.tag())
        .ok_or_else(|| {
            WebError::bad_request(format!(
                "{key:?} is not a query parameter, a DICOM keyword or a tag"
            ))
        })
}

/// A QIDO-RS request's query parameters, checked.
#[derive(Debug, Default, PartialEq, Eq)]
struct Parsed {
    conditions: Vec<Condition>,
    /// Matching keys and included fields: all returned.
    include: BTreeSet<Tag>,
    include_all: bool,
    limit: Option<u64>,
    offset: u64,
    fuzzy: bool,
}

fn parse_params(params: &[(String, String)]) -> Result<Parsed, WebError> {
    let mut out = Parsed::default();
    let number = |key: &str, v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| WebError::bad_request(format!("{key} must be a non-negative integer")))
    };
    for (key, value) in params {
        match key.as_str() {
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if field == "all" {
                        out.include_all = true;
                    } else {
                        out.include.insert(tag_of(field)?);
                    }
                }
            }
            "limit" => out.limit = Some(number("limit", value)?),
            "offset" => out.offset = number("offset", value)?,
            "fuzzymatching" => match value.as_str() {
                "true" => out.fuzzy = true,
                "false" => out.fuzzy = false,
                _ => return Err(WebError::bad_request("fuzzymatching must be true or false")),
            },
            key => {
                let tag = tag_of(key)?;
                let attr = index::attribute(tag)
                    .filter(|a| a.matchable)
                    .ok_or_else(|| WebError::bad_request(format!("matching on {key} is not supported")))?;
                out.include.insert(tag);
                let matcher =
                    Matcher::parse(&attr, value).map_err(|e| WebError::bad_request(format!("{key}: {e}")))?;
                // A UID key given again adds to its list (as dicomweb-client sends a list);
                // other keys given again must all match.
                let earlier = out
                    .conditions
                    .iter_mut()
                    .find(|c| c.tag == tag && attr.vr == VR::UI);
                match (matcher, earlier) {
                    (None, _) => {}
                    (Some(matcher), Some(earlier)) => earlier.matcher = uid_union(&earlier.matcher, matcher),
                    (Some(matcher), None) => out.conditions.push(Condition { tag, matcher }),
                }
            }
        }
    }
    Ok(out)
}

/// Two UID matchers as one list.
fn uid_union(a: &Matcher, b: Matcher) -> Matcher {
    let uids = |m: &Matcher| match m {
        Matcher::Single(u) => vec![u.clone()],
        Matcher::List(l) => l.clone(),
        _ => Vec::new(),
    };
    let mut all = uids(a);
    all.extend(uids(&b));
    Matcher::List(all)
}

fn is_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

async fn qido(
    state: &WebState,
    headers: &HeaderMap,
    BaseUrl(base): BaseUrl,
    params: &[(String, String)],
    level: Level,
    scope: Scope,
) -> Result<Response, WebError> {
    super::accept::accepts_dicom_json(&super::accept::parse(headers)?, "a search")?;
    let mut parsed = parse_params(params)?;
    let mut path_uids = Vec::new();
    match &scope {
        Scope::All => {}
        Scope::Study(study) => path_uids.push((tags::STUDY_INSTANCE_UID, study)),
        Scope::Series(study, series) => {
            path_uids.push((tags::STUDY_INSTANCE_UID, study));
            path_uids.push((tags::SERIES_INSTANCE_UID, series));
        }
    }
    for (tag, uid) in path_uids {
        if !is_uid(uid) {
            return Err(WebError::bad_request("a UID in the path is not a valid UID"));
        }
        parsed.conditions.push(Condition {
            tag,
            matcher: Matcher::Single(uid.clone()),
        });
    }

    // What the answer carries: the required attributes of the returned levels, the UIDs of
    // every level down to the search's, the matching keys and the included fields.
    let returned = |l: Level| l >= scope.first_returned_level() && l <= level;
    let mut wanted: BTreeSet<Tag> = [Level::Study, Level::Series, Level::Instance]
        .into_iter()
        .filter(|l| returned(*l))
        .flat_map(|l| required(l).iter().copied())
        .collect();
    wanted.extend(
        [
            (tags::STUDY_INSTANCE_UID, Level::Study),
            (tags::SERIES_INSTANCE_UID, Level::Series),
            (tags::SOP_INSTANCE_UID, Level::Instance),
        ]
        .into_iter()
        .filter(|(_, l)| *l <= level)
        .map(|(t, _)| t),
    );
    wanted.extend(parsed.include.iter().copied());
    if parsed.include_all {
        wanted.extend(index::attributes().map(|a| a.tag));
    }
    // Only what the index holds at the search's level and above.
    let emitted: Vec<(Tag, VR)> = index::attributes()
        .filter(|a| a.level <= level && wanted.contains(&a.tag))
        .map(|a| (a.tag, a.vr))
        .collect();

    let search = Search {
        level,
        conditions: parsed.conditions,
        limit: parsed.limit,
        offset: parsed.offset,
        wanted: emitted.iter().map(|(t, _)| *t).collect(),
    };
    let found = state.queue.search(&search).await.map_err(|e| match e {
        SearchError::BadMatch(e) => WebError::bad_request(e.to_string()),
        SearchError::Queue(e) => WebError::internal(e),
    })?;

    let available = returned(Level::Study) || returned(Level::Instance);
    // Thousands of instances take a while to encode: off the runtime's threads.
    let body = tokio::task::spawn_blocking(move || {
        let answer: Vec<InMemDicomObject> = found
            .iter()
            .map(|f| dataset(f, &emitted, level, available, &base))
            .collect();
        let mut json = dicom_json::to_value(answer)?;
        empty_values_as_null(&mut json);
        serde_json::to_string(&json)
    })
    .await
    .map_err(WebError::internal)?
    .map_err(WebError::internal)?;
    let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, DICOM_JSON)], body).into_response();
    if parsed.fuzzy {
        response.headers_mut().insert(
            header::WARNING,
            HeaderValue::from_static(
                "299 vcnode \"The fuzzymatching parameter is not supported. Only literal matching has been performed.\"",
            ),
        );
    }
    Ok(response)
}

/// PS3.18 F.2.5: an empty value among several is `null` in DICOM JSON, not `""` (Image Type
/// `ORIGINAL\PRIMARY\POST_CONTRAST\\LOW_ENERGY` has one).
fn empty_values_as_null(answer: &mut serde_json::Value) {
    let datasets = answer.as_array_mut().into_iter().flatten();
    let elements = datasets
        .filter_map(|d| d.as_object_mut())
        .flat_map(|d| d.values_mut());
    for element in elements {
        if let Some(values) = element.get_mut("Value").and_then(|v| v.as_array_mut()) {
            for v in values.iter_mut().filter(|v| v.as_str() == Some("")) {
                *v = serde_json::Value::Null;
            }
        }
    }
}

/// One entity of the answer as a data set.
fn dataset(
    found: &Found,
    emitted: &[(Tag, VR)],
    level: Level,
    available: bool,
    base: &str,
) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    // DICOM JSON is UTF-8 (PS3.18 F.2.1).
    obj.put(DataElement::new(
        tags::SPECIFIC_CHARACTER_SET,
        VR::CS,
        PrimitiveValue::from("ISO_IR 192"),
    ));
    for &(tag, vr) in emitted {
        let value = match found.0.get(&tag) {
            None => PrimitiveValue::Empty,
            Some(Value::Int(n)) => PrimitiveValue::from(*n),
            Some(Value::List(items)) => PrimitiveValue::Strs(items.iter().cloned().collect()),
            Some(Value::Text(s)) => PrimitiveValue::Strs(s.split('\\').map(str::to_string).collect()),
        };
        obj.put(DataElement::new(tag, vr, value));
    }
    if available {
        // Instance Availability is a study and an instance attribute: everything is on disk.
        obj.put(DataElement::new(
            tags::INSTANCE_AVAILABILITY,
            VR::CS,
            PrimitiveValue::from("ONLINE"),
        ));
    }
    let uid = |tag| found.text(tag).unwrap_or_default();
    let mut url = format!("{base}/studies/{}", uid(tags::STUDY_INSTANCE_UID));
    if level >= Level::Series {
        url.push_str(&format!("/series/{}", uid(tags::SERIES_INSTANCE_UID)));
    }
    if level >= Level::Instance {
        url.push_str(&format!("/instances/{}", uid(tags::SOP_INSTANCE_UID)));
    }
    obj.put(DataElement::new(
        tags::RETRIEVE_URL,
        VR::UR,
        PrimitiveValue::from(url),
    ));
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn ohif_study_list_request_parses() {
        let p = parse_params(&params(&[
            ("limit", "101"),
            ("offset", "0"),
            ("fuzzymatching", "false"),
            ("includefield", "00081030,00080060,00080090,00100030"),
            ("StudyInstanceUID", "1.2.3"),
        ]))
        .unwrap();
        assert_eq!(p.limit, Some(101));
        assert!(p.include.contains(&tags::STUDY_DESCRIPTION));
        assert!(p.include.contains(&tags::PATIENT_BIRTH_DATE));
        assert_eq!(
            p.conditions,
            [Condition {
                tag: tags::STUDY_INSTANCE_UID,
                matcher: Matcher::Single("1.2.3".into())
            }]
        );
        let p = parse_params(&params(&[("StudyInstanceUID", "1.2"), ("0020000D", "1.3,1.4")])).unwrap();
        assert_eq!(
            p.conditions[0].matcher,
            Matcher::List(vec!["1.2".into(), "1.3".into(), "1.4".into()]),
            "a repeated UID key adds to the list"
        );
        let p = parse_params(&params(&[("00100020", "PID")])).unwrap();
        assert_eq!(p.conditions[0].tag, tags::PATIENT_ID);
        let p = parse_params(&params(&[("includefield", "all"), ("includefield", "Rows")])).unwrap();
        assert!(p.include_all && p.include.contains(&tags::ROWS));
    }

    #[test]
    fn bad_queries_are_refused_with_a_reason() {
        for (q, why) in [
            (("Nonsense", "1"), "not a query parameter"),
            (("limit", "-1"), "non-negative"),
            (("StudyDate", "yesterday"), "not a date"),
            (("SOPClassUID", "MG"), "not a UID"),
            (("00291010", "x"), "not supported"),
            (("fuzzymatching", "maybe"), "true or false"),
        ] {
            let e = parse_params(&params(&[q])).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.reason.contains(why), "{q:?}: {}", e.reason);
        }
    }

    #[test]
    fn answers_are_dicom_json() {
        let mut found = Found::default();
        found
            .0
            .insert(tags::STUDY_INSTANCE_UID, Value::Text("1.2".into()));
        found
            .0
            .insert(tags::PATIENT_NAME, Value::Text("Müller^Anna".into()));
        found
            .0
            .insert(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, Value::Int(3));
        found.0.insert(
            tags::MODALITIES_IN_STUDY,
            Value::List(vec!["CT".into(), "MG".into()]),
        );
        let emitted: Vec<(Tag, VR)> = [
            tags::STUDY_INSTANCE_UID,
            tags::PATIENT_NAME,
            tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
            tags::MODALITIES_IN_STUDY,
            tags::STUDY_DATE,
        ]
        .into_iter()
        .map(|t| (t, index::attribute(t).unwrap().vr))
        .collect();
        let obj = dataset(&found, &emitted, Level::Study, true, "http://h/dicomweb");
        let json: serde_json::Value =
            serde_json::from_str(&dicom_json::to_string(vec![obj]).unwrap()).unwrap();
        let study = &json[0];
        assert_eq!(study["00100010"]["vr"], "PN");
        assert_eq!(study["00100010"]["Value"][0]["Alphabetic"], "Müller^Anna");
        assert_eq!(study["00201208"]["Value"][0], 3, "IS as a number");
        assert_eq!(study["00080061"]["Value"], serde_json::json!(["CT", "MG"]));
        assert_eq!(
            study["00080020"],
            serde_json::json!({"vr": "DA"}),
            "required, empty"
        );
        assert_eq!(study["00081190"]["Value"][0], "http://h/dicomweb/studies/1.2");
        assert_eq!(study["00080056"]["Value"][0], "ONLINE");

        let mut found = Found::default();
        found.0.insert(
            tags::IMAGE_TYPE,
            Value::Text("ORIGINAL\\PRIMARY\\\\LOW_ENERGY".into()),
        );
        let obj = dataset(
            &found,
            &[(tags::IMAGE_TYPE, VR::CS)],
            Level::Instance,
            true,
            "http://h",
        );
        let mut json = dicom_json::to_value(vec![obj]).unwrap();
        empty_values_as_null(&mut json);
        assert_eq!(
            json[0]["00080008"]["Value"],
            serde_json::json!(["ORIGINAL", "PRIMARY", null, "LOW_ENERGY"])
        );
    }
}
