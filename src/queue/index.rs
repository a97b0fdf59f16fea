//! The DICOMweb index: the attributes QIDO-RS matches and returns, kept in each `instances` row
//! (migration 0003), and the searches over them.
//!
//! Ingest fills the columns from its one walk over a received data set, the pipeline from the
//! data set it built; a search never opens a file. Study and series answers are aggregated from
//! the instance rows (Study Root model: patient attributes are study attributes). An entity
//! matches when one of its instances matches every condition; its counts and lists are then
//! taken over all of its instances, so a condition never shrinks a count.
//!
//! Every value reaches SQLite as a bound parameter; only column names from the tables below
//! are written into the SQL text.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{Queue, Result};

/// The query level of an attribute, and of a search. Patient attributes are study attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Study,
    Series,
    Instance,
}

/// An attribute with its own column in `instances`, read from each data set.
#[derive(Debug, Clone, Copy)]
pub struct Indexed {
    pub tag: Tag,
    pub vr: VR,
    pub level: Level,
    pub column: &'static str,
}

const fn ix(tag: Tag, vr: VR, level: Level, column: &'static str) -> Indexed {
    Indexed {
        tag,
        vr,
        level,
        column,
    }
}

/// The attributes migration 0003 added, in its column order.
pub const INDEXED: &[Indexed] = &[
    ix(tags::PATIENT_NAME, VR::PN, Level::Study, "patient_name"),
    ix(tags::PATIENT_ID, VR::LO, Level::Study, "patient_id"),
    ix(
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        Level::Study,
        "patient_birth_date",
    ),
    ix(tags::PATIENT_SEX, VR::CS, Level::Study, "patient_sex"),
    ix(tags::STUDY_DATE, VR::DA, Level::Study, "study_date"),
    ix(tags::STUDY_TIME, VR::TM, Level::Study, "study_time"),
    ix(tags::ACCESSION_NUMBER, VR::SH, Level::Study, "accession_number"),
    ix(tags::STUDY_ID, VR::SH, Level::Study, "study_id"),
    ix(tags::STUDY_DESCRIPTION, VR::LO, Level::Study, "study_description"),
    ix(
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        Level::Study,
        "referring_physician_name",
    ),
    ix(tags::MODALITY, VR::CS, Level::Series, "modality"),
    ix(
        tags::SERIES_DESCRIPTION,
        VR::LO,
        Level::Series,
        "series_description",
    ),
    ix(tags::SERIES_NUMBER, VR::IS, Level::Series, "series_number"),
    ix(tags::SERIES_DATE, VR::DA, Level::Series, "series_date"),
    ix(tags::SERIES_TIME, VR::TM, Level::Series, "series_time"),
    ix(
        tags::PERFORMED_PROCEDURE_STEP_START_DATE,
        VR::DA,
        Level::Series,
        "pps_start_date",
    ),
    ix(
        tags::PERFORMED_PROCEDURE_STEP_START_TIME,
        VR::TM,
        Level::Series,
        "pps_start_time",
    ),
    ix(tags::INSTANCE_NUMBER, VR::IS, Level::Instance, "instance_number"),
    ix(
        tags::IMAGE_LATERALITY,
        VR::CS,
        Level::Instance,
        "image_laterality",
    ),
    ix(tags::VIEW_POSITION, VR::CS, Level::Instance, "view_position"),
    ix(tags::ROWS, VR::US, Level::Instance, "image_rows"),
    ix(tags::COLUMNS, VR::US, Level::Instance, "image_columns"),
    ix(tags::BITS_ALLOCATED, VR::US, Level::Instance, "bits_allocated"),
    ix(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        Level::Instance,
        "number_of_frames",
    ),
    // Instance attributes in the IODs, kept at series level here: vcnode's derived series are
    // synthetic throughout, and a series answer must show it (a series is synthetic when any
    // of its instances is).
    ix(tags::SYNTHETIC_DATA, VR::CS, Level::Series, "synthetic_data"),
    ix(tags::CONVERSION_TYPE, VR::CS, Level::Series, "conversion_type"),
];

/// Columns the instances table had before: the UIDs, and Image Type (values joined by `\`).
const BASE: &[Indexed] = &[
    ix(tags::STUDY_INSTANCE_UID, VR::UI, Level::Study, "study_uid"),
    ix(tags::SERIES_INSTANCE_UID, VR::UI, Level::Series, "series_uid"),
    ix(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        Level::Instance,
        "sop_instance_uid",
    ),
    ix(tags::SOP_CLASS_UID, VR::UI, Level::Instance, "sop_class_uid"),
    ix(tags::IMAGE_TYPE, VR::CS, Level::Instance, "image_type"),
];

/// Study and series attributes computed over their instances (PS3.4 C.3.4, C.3.5).
const AGGREGATES: &[(Tag, VR, Level)] = &[
    (tags::NUMBER_OF_STUDY_RELATED_SERIES, VR::IS, Level::Study),
    (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, Level::Study),
    (tags::MODALITIES_IN_STUDY, VR::CS, Level::Study),
    (tags::SOP_CLASSES_IN_STUDY, VR::UI, Level::Study),
    (tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, Level::Series),
];

fn is_integer(vr: VR) -> bool {
    matches!(vr, VR::IS | VR::US)
}

/// An attribute the index knows: stored in a column or computed from the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    pub tag: Tag,
    pub vr: VR,
    pub level: Level,
    /// Whether it can be a matching key.
    pub matchable: bool,
}

/// Every attribute the index can return, in tag order.
pub fn attributes() -> impl Iterator<Item = Attribute> {
    let mut all: Vec<Attribute> = BASE
        .iter()
        .chain(INDEXED)
        .map(|a| Attribute {
            tag: a.tag,
            vr: a.vr,
            level: a.level,
            // Image Type is multi-valued; matching on it is not offered.
            matchable: a.tag != tags::IMAGE_TYPE,
        })
        .chain(AGGREGATES.iter().map(|&(tag, vr, level)| Attribute {
            tag,
            vr,
            level,
            matchable: tag == tags::MODALITIES_IN_STUDY,
        }))
        .collect();
    all.sort_by_key(|a| a.tag);
    all.into_iter()
}

/// The attribute of `tag`, if the index knows it.
pub fn attribute(tag: Tag) -> Option<Attribute> {
    attributes().find(|a| a.tag == tag)
}

fn column_of(tag: Tag) -> Option<&'static Indexed> {
    BASE.iter().chain(INDEXED).find(|a| a.tag == tag)
}

/// The values of the indexed attributes of one instance, as read from its data set (padding
/// trimmed; absent when missing, empty or unreadable). Old rows have none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexedAttributes(BTreeMap<Tag, String>);

impl IndexedAttributes {
    /// Whether `tag` has a column of its own.
    pub fn is_indexed(tag: Tag) -> bool {
        INDEXED.iter().any(|a| a.tag == tag)
    }

    /// Records the value of `tag` as text (multiple values joined by `\`); other tags and
    /// empty values are ignored.
    pub fn set(&mut self, tag: Tag, value: &str) {
        let value = value.trim_matches([' ', '\0']);
        if Self::is_indexed(tag) && !value.is_empty() {
            self.0.insert(tag, value.to_string());
        }
    }

    pub fn get(&self, tag: Tag) -> Option<&str> {
        self.0.get(&tag).map(String::as_str)
    }

    /// The indexed attributes of a data set in memory (a derived instance the pipeline built).
    pub fn from_object(obj: &InMemDicomObject) -> IndexedAttributes {
        let mut out = IndexedAttributes::default();
        for a in INDEXED {
            if let Some(text) = obj.element(a.tag).ok().and_then(|e| e.to_str().ok()) {
                out.set(a.tag, &text);
            }
        }
        out
    }

    /// The value to bind for column `a`: integers as integers (the first value; none when it
    /// is not a number), the rest as text.
    fn bind_value(&self, a: &Indexed) -> Bind {
        let text = self.get(a.tag);
        if is_integer(a.vr) {
            Bind::OptInt(text.and_then(|t| t.split('\\').next()?.trim().parse().ok()))
        } else {
            Bind::OptText(text.map(str::to_string))
        }
    }
}

/// The INSERT of [`super::insert_instance`]: the base columns, then [`INDEXED`] in order.
pub(super) static INSERT_INSTANCE: LazyLock<String> = LazyLock::new(|| {
    let base = [
        "sop_instance_uid",
        "sop_class_uid",
        "study_uid",
        "series_uid",
        "transfer_syntax",
        "origin",
        "path",
        "bytes",
        "image_type",
        "calling_ae",
        "source_uid",
        "created_at",
    ];
    let columns: Vec<&str> = base
        .iter()
        .copied()
        .chain(INDEXED.iter().map(|a| a.column))
        .collect();
    format!(
        "INSERT INTO instances ({}) VALUES ({}) ON CONFLICT (sop_instance_uid) DO NOTHING",
        columns.join(", "),
        vec!["?"; columns.len()].join(", ")
    )
});

/// Binds the [`INDEXED`] columns of `attrs` after the base ones, in [`INSERT_INSTANCE`]'s order.
pub(super) fn bind_indexed<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    attrs: &IndexedAttributes,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for a in INDEXED {
        q = attrs.bind_value(a).bind_to(q);
    }
    q
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bind {
    Text(String),
    Int(i64),
    OptText(Option<String>),
    OptInt(Option<i64>),
}

impl Bind {
    fn bind_to<'q>(
        self,
        q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
        match self {
            Bind::Text(s) => q.bind(s),
            Bind::Int(n) => q.bind(n),
            Bind::OptText(s) => q.bind(s),
            Bind::OptInt(n) => q.bind(n),
        }
    }
}

/// How a matching key's value is compared (PS3.4 C.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Single Value Matching: equal (person names: equal ignoring ASCII case).
    Single(String),
    /// Wild Card Matching: `*` any run of characters, `?` one character (person names ignore
    /// ASCII case, other attributes do not).
    Wildcard(String),
    /// Range Matching of dates or times, bounds included; one bound may be open.
    Range {
        from: Option<String>,
        to: Option<String>,
    },
    /// List of UID Matching, or a list of code strings (Modality, ModalitiesInStudy): any of them.
    List(Vec<String>),
    /// An integer attribute (Series Number, Instance Number, …).
    Integer(i64),
}

/// A matching key that cannot be used, and why (the reason goes back to the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadMatch(pub String);

fn is_date(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_time(s: &str) -> bool {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    matches!(hms.len(), 2 | 4 | 6)
        && hms.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 6
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (frac.is_empty() || hms.len() == 6)
}

impl Matcher {
    /// The matcher for `value` of `attr`, or None for Universal Matching (an empty value, or
    /// `*` alone). PS3.18 8.3.4: UIDs (and the modality keys) may be lists separated by `,` or
    /// `\`; dates and times may be ranges `a-b`, `-b`, `a-`.
    pub fn parse(attr: &Attribute, value: &str) -> std::result::Result<Option<Matcher>, BadMatch> {
        let value = value.trim();
        if value.is_empty() || value == "*" {
            return Ok(None);
        }
        let bad = |why: &str| Err(BadMatch(format!("{why}: {value:?}")));
        let wild = value.contains(['*', '?']);
        match attr.vr {
            VR::UI => {
                let uids: Vec<String> = value
                    .split([',', '\\'])
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect();
                if wild
                    || uids
                        .iter()
                        .any(|u| !u.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
                {
                    return bad("not a UID or a list of UIDs");
                }
                Ok(Some(if uids.len() == 1 {
                    Matcher::Single(uids.into_iter().next().unwrap_or_default())
                } else {
                    Matcher::List(uids)
                }))
            }
            VR::DA | VR::TM => {
                let valid = if attr.vr == VR::DA { is_date } else { is_time };
                let what = if attr.vr == VR::DA {
                    "not a date (YYYYMMDD) or a date range (YYYYMMDD-YYYYMMDD)"
                } else {
                    "not a time (HHMMSS) or a time range (HHMMSS-HHMMSS)"
                };
                match value.split_once('-') {
                    None if valid(value) => Ok(Some(Matcher::Single(value.to_string()))),
                    Some((from, to)) if (from.is_empty() || valid(from)) && (to.is_empty() || valid(to)) => {
                        if from.is_empty() && to.is_empty() {
                            return bad(what);
                        }
                        let bound = |s: &str| (!s.is_empty()).then(|| s.to_string());
                        Ok(Some(Matcher::Range {
                            from: bound(from),
                            to: bound(to),
                        }))
                    }
                    _ => bad(what),
                }
            }
            vr if is_integer(vr) => value
                .parse()
                .map(|n| Some(Matcher::Integer(n)))
                .or_else(|_| bad("not an integer")),
            _ if attr.tag == tags::MODALITY || attr.tag == tags::MODALITIES_IN_STUDY => {
                let codes: Vec<String> = value
                    .split([',', '\\'])
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect();
                Ok(Some(match codes.len() {
                    1 if wild => Matcher::Wildcard(codes.into_iter().next().unwrap_or_default()),
                    1 => Matcher::Single(codes.into_iter().next().unwrap_or_default()),
                    _ if wild => return bad("a list of modalities cannot hold wildcards"),
                    _ => Matcher::List(codes),
                }))
            }
            _ if wild => Ok(Some(Matcher::Wildcard(value.to_string()))),
            _ => Ok(Some(Matcher::Single(value.to_string()))),
        }
    }
}

/// A `*`/`?` pattern as a case-sensitive SQLite GLOB pattern (GLOB's own `[` escaped).
pub fn glob_pattern(wildcard: &str) -> String {
    let mut out = String::with_capacity(wildcard.len());
    for c in wildcard.chars() {
        match c {
            '[' => out.push_str("[[]"),
            c => out.push(c),
        }
    }
    out
}

/// A `*`/`?` pattern as an ASCII-case-insensitive LIKE pattern with `\` as its escape.
pub fn like_pattern(wildcard: &str) -> String {
    let mut out = String::with_capacity(wildcard.len());
    for c in wildcard.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// One matching key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub tag: Tag,
    pub matcher: Matcher,
}

/// A QIDO-RS search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    pub level: Level,
    /// All must match.
    pub conditions: Vec<Condition>,
    pub limit: Option<u64>,
    pub offset: u64,
    /// The attributes the answer needs: aggregates of a higher level than the search's are
    /// computed only when wanted.
    pub wanted: BTreeSet<Tag>,
}

/// A value found: text (possibly `\`-separated multiple values), an integer or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Int(i64),
    List(Vec<String>),
}

/// One study, series or instance found, with its attributes (absent: no value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found(pub BTreeMap<Tag, Value>);

impl Found {
    pub fn text(&self, tag: Tag) -> Option<&str> {
        match self.0.get(&tag) {
            Some(Value::Text(s)) => Some(s),
            _ => None,
        }
    }
}

/// SQL text with its parameters in order.
#[derive(Debug, Default)]
struct Sql {
    text: String,
    binds: Vec<Bind>,
}

impl Sql {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }
    fn param(&mut self, b: Bind) {
        self.text.push('?');
        self.binds.push(b);
    }
    fn list(&mut self, values: &[String]) {
        self.push("(");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.param(Bind::Text(v.clone()));
        }
        self.push(")");
    }
}

/// `column <op> …` for one condition on one row.
fn condition_sql(c: &Condition, sql: &mut Sql) -> std::result::Result<(), BadMatch> {
    if c.tag == tags::MODALITIES_IN_STUDY {
        // A study matches when any of its series has the modality.
        sql.push("study_uid IN (SELECT study_uid FROM instances WHERE ");
        condition_sql(
            &Condition {
                tag: tags::MODALITY,
                matcher: c.matcher.clone(),
            },
            sql,
        )?;
        sql.push(")");
        return Ok(());
    }
    let col = column_of(c.tag).ok_or_else(|| BadMatch(format!("matching on {} is not supported", c.tag)))?;
    let name = col.column;
    let person = col.vr == VR::PN;
    match &c.matcher {
        Matcher::Single(v) if person => {
            sql.push(&format!("{name} LIKE "));
            sql.param(Bind::Text(like_pattern(v)));
            sql.push(" ESCAPE '\\'");
        }
        Matcher::Wildcard(v) if person => {
            sql.push(&format!("{name} LIKE "));
            sql.param(Bind::Text(like_pattern(v)));
            sql.push(" ESCAPE '\\'");
        }
        Matcher::Single(v) => {
            sql.push(&format!("{name} = "));
            sql.param(Bind::Text(v.clone()));
        }
        Matcher::Wildcard(v) => {
            sql.push(&format!("{name} GLOB "));
            sql.param(Bind::Text(glob_pattern(v)));
        }
        Matcher::List(values) => {
            sql.push(&format!("{name} IN "));
            sql.list(values);
        }
        Matcher::Integer(n) => {
            sql.push(&format!("{name} = "));
            sql.param(Bind::Int(*n));
        }
        Matcher::Range { from, to } => {
            let mut and = "";
            sql.push("(");
            if let Some(from) = from {
                sql.push(&format!("{name} >= "));
                sql.param(Bind::Text(from.clone()));
                and = " AND ";
            }
            if let Some(to) = to {
                sql.push(&format!("{and}{name} <= "));
                // A time bound covers the whole of its last unit: 1015 includes 101530.
                let upper = if col.vr == VR::TM {
                    format!("{to}\u{7f}")
                } else {
                    to.clone()
                };
                sql.param(Bind::Text(upper));
            }
            sql.push(")");
        }
    }
    Ok(())
}

fn conditions_sql(conditions: &[Condition], sql: &mut Sql) -> std::result::Result<(), BadMatch> {
    for (i, c) in conditions.iter().enumerate() {
        if i > 0 {
            sql.push(" AND ");
        }
        condition_sql(c, sql)?;
    }
    Ok(())
}

fn columns_up_to(level: Level) -> impl Iterator<Item = &'static Indexed> {
    BASE.iter().chain(INDEXED).filter(move |a| a.level <= level)
}

/// The statement of the page of `search` (without the aggregates of higher levels).
///
/// Studies and series are paged first, on the few columns they are ordered by (an index-only
/// scan for studies), and only the page's entities are then aggregated over their instances.
fn page_sql(search: &Search) -> std::result::Result<Sql, BadMatch> {
    let mut sql = Sql::default();
    let limit = Bind::Int(search.limit.map(|l| l.min(i64::MAX as u64) as i64).unwrap_or(-1));
    let offset = Bind::Int(search.offset.min(i64::MAX as u64) as i64);
    if search.level == Level::Instance {
        let columns: Vec<&str> = columns_up_to(Level::Instance).map(|a| a.column).collect();
        sql.push(&format!("SELECT {} FROM instances", columns.join(", ")));
        if !search.conditions.is_empty() {
            sql.push(" WHERE ");
            conditions_sql(&search.conditions, &mut sql)?;
        }
        sql.push(" ORDER BY study_uid, series_uid, instance_number, sop_instance_uid LIMIT ");
        sql.param(limit);
        sql.push(" OFFSET ");
        sql.param(offset);
        return Ok(sql);
    }
    // Newest studies first; series in study and series number order.
    let (key, order_by, page_order, outer_order) = match search.level {
        Level::Study => (
            "study_uid",
            "MAX(study_date) AS page_a, MAX(study_time) AS page_b",
            "page_a DESC, page_b DESC, study_uid",
            "MIN(page.page_a) DESC, MIN(page.page_b) DESC, instances.study_uid",
        ),
        _ => (
            "series_uid",
            "MIN(study_uid) AS page_a, MIN(series_number) AS page_b",
            "page_a, page_b, series_uid",
            "MIN(page.page_a), MIN(page.page_b), instances.series_uid",
        ),
    };
    sql.push(&format!("WITH page AS (SELECT {key}, {order_by} FROM instances"));
    if !search.conditions.is_empty() {
        // The entity matches through any of its instances; its aggregates count them all.
        sql.push(&format!(" WHERE {key} IN (SELECT {key} FROM instances WHERE "));
        conditions_sql(&search.conditions, &mut sql)?;
        sql.push(")");
    }
    sql.push(&format!(" GROUP BY {key} ORDER BY {page_order} LIMIT "));
    sql.param(limit);
    sql.push(" OFFSET ");
    sql.param(offset);
    sql.push(") SELECT ");
    let columns: Vec<String> = columns_up_to(search.level)
        .map(|a| {
            if a.column == key {
                format!("instances.{key} AS {key}")
            } else {
                // One value per study or series: any instance's (they agree), never a NULL of
                // an instance indexed before migration 0003 over another's value; YES over NO
                // for Synthetic Data.
                let f = if a.tag == tags::SYNTHETIC_DATA {
                    "MAX"
                } else {
                    "MIN"
                };
                format!("{f}({0}) AS {0}", a.column)
            }
        })
        .collect();
    sql.push(&columns.join(", "));
    sql.push(match search.level {
        Level::Study => {
            ", COUNT(DISTINCT series_uid) AS n_series, COUNT(*) AS n_instances, \
             GROUP_CONCAT(DISTINCT modality) AS modalities, GROUP_CONCAT(DISTINCT sop_class_uid) AS sop_classes"
        }
        _ => ", COUNT(*) AS n_series_instances",
    });
    sql.push(&format!(
        " FROM page JOIN instances ON instances.{key} = page.{key} GROUP BY instances.{key} ORDER BY {outer_order}"
    ));
    Ok(sql)
}

fn split_list(s: Option<String>) -> Option<Value> {
    let mut items: Vec<String> = s?.split(',').map(str::to_string).collect();
    items.sort();
    Some(Value::List(items))
}

fn row_to_found(row: &SqliteRow, level: Level) -> Result<Found> {
    let mut found = Found::default();
    // The page's columns come first, in this order (by position: no lookup by name per value).
    for (i, a) in columns_up_to(level).enumerate() {
        let value = if is_integer(a.vr) {
            row.try_get::<Option<i64>, _>(i)?.map(Value::Int)
        } else {
            row.try_get::<Option<String>, _>(i)?.map(Value::Text)
        };
        if let Some(v) = value {
            found.0.insert(a.tag, v);
        }
    }
    match level {
        Level::Study => {
            found.0.insert(
                tags::NUMBER_OF_STUDY_RELATED_SERIES,
                Value::Int(row.try_get("n_series")?),
            );
            found.0.insert(
                tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
                Value::Int(row.try_get("n_instances")?),
            );
            if let Some(v) = split_list(row.try_get("modalities")?) {
                found.0.insert(tags::MODALITIES_IN_STUDY, v);
            }
            if let Some(v) = split_list(row.try_get("sop_classes")?) {
                found.0.insert(tags::SOP_CLASSES_IN_STUDY, v);
            }
        }
        Level::Series => {
            found.0.insert(
                tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
                Value::Int(row.try_get("n_series_instances")?),
            );
        }
        Level::Instance => {}
    }
    Ok(found)
}

/// What searching can fail with: a bad matching key (the client's) or the database (ours).
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    BadMatch(#[from] BadMatch),
    #[error(transparent)]
    Queue(#[from] super::QueueError),
}

impl From<sqlx::Error> for SearchError {
    fn from(e: sqlx::Error) -> SearchError {
        SearchError::Queue(e.into())
    }
}

impl Queue {
    /// Runs a QIDO-RS search: one statement for the page, and at most one more per higher
    /// level whose aggregates are wanted (over the page's studies or series, not per row).
    pub async fn search(&self, search: &Search) -> std::result::Result<Vec<Found>, SearchError> {
        let sql = page_sql(search)?;
        let mut q = sqlx::query(&sql.text);
        for b in sql.binds {
            q = b.bind_to(q);
        }
        let rows = q.fetch_all(self.pool()).await?;
        let mut found = rows
            .iter()
            .map(|r| row_to_found(r, search.level))
            .collect::<Result<Vec<_>>>()?;
        let wants = |level: Level| {
            AGGREGATES
                .iter()
                .any(|&(tag, _, l)| l == level && search.wanted.contains(&tag))
        };
        if search.level > Level::Study && wants(Level::Study) {
            self.add_study_aggregates(&mut found).await?;
        }
        if search.level > Level::Series && wants(Level::Series) {
            self.add_series_aggregates(&mut found).await?;
        }
        Ok(found)
    }

    async fn add_study_aggregates(&self, found: &mut [Found]) -> Result<()> {
        let keys: BTreeSet<&str> = found
            .iter()
            .filter_map(|f| f.text(tags::STUDY_INSTANCE_UID))
            .collect();
        let rows = sqlx::query(
            "SELECT study_uid, COUNT(DISTINCT series_uid) AS n_series, COUNT(*) AS n_instances,
                    GROUP_CONCAT(DISTINCT modality) AS modalities,
                    GROUP_CONCAT(DISTINCT sop_class_uid) AS sop_classes
               FROM instances WHERE study_uid IN (SELECT value FROM json_each(?)) GROUP BY study_uid",
        )
        .bind(serde_json::to_string(&keys).unwrap_or_default())
        .fetch_all(self.pool())
        .await?;
        let mut by_study: BTreeMap<String, Vec<(Tag, Value)>> = BTreeMap::new();
        for r in rows {
            let mut values = vec![
                (
                    tags::NUMBER_OF_STUDY_RELATED_SERIES,
                    Value::Int(r.try_get("n_series")?),
                ),
                (
                    tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
                    Value::Int(r.try_get("n_instances")?),
                ),
            ];
            values.extend(split_list(r.try_get("modalities")?).map(|v| (tags::MODALITIES_IN_STUDY, v)));
            values.extend(split_list(r.try_get("sop_classes")?).map(|v| (tags::SOP_CLASSES_IN_STUDY, v)));
            by_study.insert(r.try_get("study_uid")?, values);
        }
        for f in found {
            let values = f
                .text(tags::STUDY_INSTANCE_UID)
                .and_then(|s| by_study.get(s))
                .cloned()
                .unwrap_or_default();
            f.0.extend(values);
        }
        Ok(())
    }

    async fn add_series_aggregates(&self, found: &mut [Found]) -> Result<()> {
        let keys: BTreeSet<&str> = found
            .iter()
            .filter_map(|f| f.text(tags::SERIES_INSTANCE_UID))
            .collect();
        let counts: BTreeMap<String, i64> = sqlx::query_as(
            "SELECT series_uid, COUNT(*) FROM instances
              WHERE series_uid IN (SELECT value FROM json_each(?)) GROUP BY series_uid",
        )
        .bind(serde_json::to_string(&keys).unwrap_or_default())
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .collect();
        for f in found {
            if let Some(&n) = f.text(tags::SERIES_INSTANCE_UID).and_then(|s| counts.get(s)) {
                f.0.insert(tags::NUMBER_OF_SERIES_RELATED_INSTANCES, Value::Int(n));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::NewInstance;

    fn attr(tag: Tag) -> Attribute {
        attribute(tag).unwrap()
    }

    fn parse(tag: Tag, v: &str) -> Option<Matcher> {
        Matcher::parse(&attr(tag), v).unwrap()
    }

    #[test]
    fn values_become_matchers_as_ps3_4_says() {
        assert_eq!(parse(tags::PATIENT_ID, ""), None, "universal");
        assert_eq!(parse(tags::PATIENT_NAME, "*"), None, "universal");
        assert_eq!(
            parse(tags::PATIENT_ID, "PID1"),
            Some(Matcher::Single("PID1".into()))
        );
        assert_eq!(
            parse(tags::PATIENT_NAME, "DOE^J*"),
            Some(Matcher::Wildcard("DOE^J*".into()))
        );
        assert_eq!(
            parse(tags::STUDY_DATE, "20260101-20261231"),
            Some(Matcher::Range {
                from: Some("20260101".into()),
                to: Some("20261231".into())
            })
        );
        assert_eq!(
            parse(tags::STUDY_DATE, "-20261231"),
            Some(Matcher::Range {
                from: None,
                to: Some("20261231".into())
            })
        );
        assert_eq!(
            parse(tags::STUDY_DATE, "20260101-"),
            Some(Matcher::Range {
                from: Some("20260101".into()),
                to: None
            })
        );
        assert_eq!(
            parse(tags::STUDY_INSTANCE_UID, "1.2.3,1.2.4\\1.2.5"),
            Some(Matcher::List(vec![
                "1.2.3".into(),
                "1.2.4".into(),
                "1.2.5".into()
            ]))
        );
        assert_eq!(
            parse(tags::MODALITIES_IN_STUDY, "MG,CT"),
            Some(Matcher::List(vec!["MG".into(), "CT".into()]))
        );
        assert_eq!(parse(tags::SERIES_NUMBER, "9901"), Some(Matcher::Integer(9901)));
        for (tag, bad) in [
            (tags::STUDY_DATE, "2026-01-01"),
            (tags::STUDY_DATE, "-"),
            (tags::STUDY_DATE, "2026010"),
            (tags::STUDY_TIME, "25a"),
            (tags::STUDY_INSTANCE_UID, "1.2.*"),
            (tags::STUDY_INSTANCE_UID, "abc"),
            (tags::SERIES_NUMBER, "one"),
        ] {
            assert!(Matcher::parse(&attr(tag), bad).is_err(), "{tag} {bad:?}");
        }
    }

    #[test]
    fn wildcards_are_escaped_for_sql() {
        assert_eq!(like_pattern("DOE^J*"), "DOE^J%");
        assert_eq!(like_pattern("100%_a?\\"), "100\\%\\_a_\\\\");
        assert_eq!(glob_pattern("A[B]*?"), "A[[]B]*?");
    }

    #[test]
    fn conditions_become_parameterized_sql() {
        let search = Search {
            level: Level::Study,
            conditions: vec![
                Condition {
                    tag: tags::PATIENT_NAME,
                    matcher: Matcher::Wildcard("o'brien*".into()),
                },
                Condition {
                    tag: tags::MODALITIES_IN_STUDY,
                    matcher: Matcher::List(vec!["MG".into()]),
                },
            ],
            limit: Some(10),
            offset: 5,
            wanted: BTreeSet::new(),
        };
        let sql = page_sql(&search).unwrap();
        assert!(!sql.text.contains("brien"), "values are parameters: {}", sql.text);
        assert!(sql.text.contains(
            "WHERE study_uid IN (SELECT study_uid FROM instances WHERE patient_name LIKE ? ESCAPE '\\' AND \
             study_uid IN (SELECT study_uid FROM instances WHERE modality IN (?)))"
        ));
        assert_eq!(
            sql.binds,
            [
                Bind::Text("o'brien%".into()),
                Bind::Text("MG".into()),
                Bind::Int(10),
                Bind::Int(5)
            ]
        );
    }

    fn instance(n: u32, study: &str, series: &str, set: &[(Tag, &str)]) -> NewInstance {
        let mut attrs = IndexedAttributes::default();
        for &(tag, v) in set {
            attrs.set(tag, v);
        }
        NewInstance {
            sop_instance_uid: format!("1.2.3.{n}"),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.2".into(),
            study_uid: study.into(),
            series_uid: series.into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            path: format!("x/{n}.dcm"),
            bytes: 1,
            image_type: Some("ORIGINAL\\PRIMARY".into()),
            calling_ae: None,
            attrs,
        }
    }

    fn single(tag: Tag, v: &str) -> Condition {
        Condition {
            tag,
            matcher: Matcher::parse(&attr(tag), v).unwrap().unwrap(),
        }
    }

    fn search(level: Level, conditions: Vec<Condition>) -> Search {
        Search {
            level,
            conditions,
            limit: None,
            offset: 0,
            wanted: attributes().map(|a| a.tag).collect(),
        }
    }

    fn uids(found: &[Found], tag: Tag) -> Vec<String> {
        found.iter().map(|f| f.text(tag).unwrap().to_string()).collect()
    }

    async fn by(q: &Queue, conditions: Vec<Condition>) -> Vec<Found> {
        q.search(&search(Level::Study, conditions)).await.unwrap()
    }

    #[tokio::test]
    async fn searches_match_and_aggregate_over_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).await.unwrap();
        let a = [
            (tags::PATIENT_NAME, "Doe^Jane"),
            (tags::PATIENT_ID, "P1"),
            (tags::STUDY_DATE, "20260110"),
            (tags::STUDY_TIME, "101530"),
            (tags::MODALITY, "MG"),
            (tags::SERIES_NUMBER, "1"),
        ];
        let b = [
            (tags::PATIENT_NAME, "ROE^RICHARD"),
            (tags::PATIENT_ID, "P2"),
            (tags::STUDY_DATE, "20260220"),
            (tags::MODALITY, "MG"),
        ];
        let b_ct = [(tags::PATIENT_ID, "P2"), (tags::MODALITY, "CT")];
        for inst in [
            instance(1, "1.1", "1.1.1", &a),
            instance(2, "1.1", "1.1.1", &a),
            instance(3, "1.2", "1.2.1", &b),
            instance(4, "1.2", "1.2.2", &b_ct),
            // Indexed before migration 0003: no attributes.
            instance(5, "1.2", "1.2.2", &[]),
        ] {
            q.record_received(&inst, None).await.unwrap();
        }

        let all = q.search(&search(Level::Study, vec![])).await.unwrap();
        assert_eq!(
            uids(&all, tags::STUDY_INSTANCE_UID),
            ["1.2", "1.1"],
            "newest first"
        );
        assert_eq!(
            all[0].0[&tags::MODALITIES_IN_STUDY],
            Value::List(vec!["CT".into(), "MG".into()])
        );
        assert_eq!(all[0].0[&tags::NUMBER_OF_STUDY_RELATED_SERIES], Value::Int(2));
        assert_eq!(all[0].0[&tags::NUMBER_OF_STUDY_RELATED_INSTANCES], Value::Int(3));
        assert_eq!(all[0].text(tags::PATIENT_NAME), Some("ROE^RICHARD"));

        let found = by(&q, vec![single(tags::PATIENT_ID, "P1")]).await;
        assert_eq!(uids(&found, tags::STUDY_INSTANCE_UID), ["1.1"]);
        let found = by(&q, vec![single(tags::PATIENT_NAME, "doe*")]).await;
        assert_eq!(uids(&found, tags::STUDY_INSTANCE_UID), ["1.1"], "PN ignores case");
        let found = by(&q, vec![single(tags::PATIENT_NAME, "roe^richard")]).await;
        assert_eq!(uids(&found, tags::STUDY_INSTANCE_UID), ["1.2"]);
        let found = by(&q, vec![single(tags::PATIENT_ID, "p*")]).await;
        assert!(found.is_empty(), "other strings are case-sensitive");
        let found = by(&q, vec![single(tags::STUDY_DATE, "20260201-")]).await;
        assert_eq!(uids(&found, tags::STUDY_INSTANCE_UID), ["1.2"]);
        let found = by(&q, vec![single(tags::STUDY_DATE, "-20260110")]).await;
        assert_eq!(uids(&found, tags::STUDY_INSTANCE_UID), ["1.1"]);
        let found = by(&q, vec![single(tags::STUDY_TIME, "1000-1015")]).await;
        assert_eq!(
            uids(&found, tags::STUDY_INSTANCE_UID),
            ["1.1"],
            "1015 covers 101530"
        );
        let found = by(&q, vec![single(tags::MODALITIES_IN_STUDY, "CT")]).await;
        assert_eq!(uids(&found, tags::STUDY_INSTANCE_UID), ["1.2"]);
        assert_eq!(
            found[0].0[&tags::NUMBER_OF_STUDY_RELATED_INSTANCES],
            Value::Int(3),
            "a condition never shrinks a count"
        );
        let found = by(&q, vec![single(tags::MODALITY, "CT")]).await;
        assert_eq!(
            uids(&found, tags::STUDY_INSTANCE_UID),
            ["1.2"],
            "a series key in a study search: the studies with such a series"
        );
        let found = by(&q, vec![single(tags::STUDY_INSTANCE_UID, "1.1,1.2")]).await;
        assert_eq!(found.len(), 2);

        let page = q
            .search(&Search {
                limit: Some(1),
                offset: 1,
                ..search(Level::Study, vec![])
            })
            .await
            .unwrap();
        assert_eq!(uids(&page, tags::STUDY_INSTANCE_UID), ["1.1"]);

        let series = q
            .search(&search(
                Level::Series,
                vec![single(tags::STUDY_INSTANCE_UID, "1.2")],
            ))
            .await
            .unwrap();
        assert_eq!(uids(&series, tags::SERIES_INSTANCE_UID), ["1.2.1", "1.2.2"]);
        assert_eq!(
            series[1].0[&tags::NUMBER_OF_SERIES_RELATED_INSTANCES],
            Value::Int(2)
        );
        assert_eq!(series[1].0[&tags::NUMBER_OF_STUDY_RELATED_SERIES], Value::Int(2));

        let instances = q
            .search(&search(Level::Instance, vec![single(tags::SERIES_NUMBER, "1")]))
            .await
            .unwrap();
        assert_eq!(uids(&instances, tags::SOP_INSTANCE_UID), ["1.2.3.1", "1.2.3.2"]);
        assert_eq!(instances[0].0[&tags::SERIES_NUMBER], Value::Int(1));
        assert_eq!(
            instances[0].0[&tags::NUMBER_OF_SERIES_RELATED_INSTANCES],
            Value::Int(2)
        );
        q.close().await;
    }

    #[test]
    fn integer_columns_take_the_first_number_or_nothing() {
        let mut attrs = IndexedAttributes::default();
        attrs.set(tags::INSTANCE_NUMBER, " 12 \\3");
        attrs.set(tags::SERIES_NUMBER, "x");
        attrs.set(tags::STUDY_ID, "  ");
        attrs.set(tags::SOP_INSTANCE_UID, "1.2");
        let instance = INDEXED.iter().find(|a| a.tag == tags::INSTANCE_NUMBER).unwrap();
        let series = INDEXED.iter().find(|a| a.tag == tags::SERIES_NUMBER).unwrap();
        assert_eq!(attrs.bind_value(instance), Bind::OptInt(Some(12)));
        assert_eq!(attrs.bind_value(series), Bind::OptInt(None));
        assert_eq!(attrs.get(tags::STUDY_ID), None);
        assert_eq!(attrs.get(tags::SOP_INSTANCE_UID), None, "not a column of its own");
    }
}
