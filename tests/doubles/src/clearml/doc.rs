//! Helpers over JSON documents shared by every service of the double: dotted paths, timestamps in
//! the server's format, request-field accessors that fail like the server's request models, and the
//! query features of the server's `get_many` (list filters with `-`/`__$` operators, unanchored regex
//! name filters, `only_fields` projection, `order_by`, paging with the 500-item cap).

use std::cmp::Ordering;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use regex::Regex;
use serde_json::{Map, Value};

use super::error::ApiError;

/// A JSON object (a stored document or a request body).
pub type Doc = Map<String, Value>;

/// Largest page the server returns (`services._mongo.max_page_size`).
pub(crate) const MAX_PAGE_SIZE: usize = 500;

/// Truncates to milliseconds, the precision MongoDB keeps.
pub(crate) fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond() / 1_000_000 * 1_000_000;
    t.with_nanosecond(nanos).unwrap_or(t)
}

/// ISO-8601 with `+00:00`, microseconds printed only when non-zero (Python `isoformat`).
pub fn fmt_time(t: DateTime<Utc>) -> String {
    if t.nanosecond() == 0 {
        t.to_rfc3339_opts(SecondsFormat::Secs, false)
    } else {
        t.to_rfc3339_opts(SecondsFormat::Micros, false)
    }
}

/// Parses a timestamp written by [`fmt_time`] (or any RFC 3339 text).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A new id: 32 lowercase hex characters (uuid4 without dashes).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The value at a dotted path (`execution.queue`).
pub fn get_path<'a>(doc: &'a Doc, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut current = doc.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// The string at a dotted path, if it is a string.
pub fn get_str<'a>(doc: &'a Doc, path: &str) -> Option<&'a str> {
    get_path(doc, path).and_then(Value::as_str)
}

/// Sets a dotted path, creating (or replacing non-object) intermediate objects.
pub(crate) fn set_path(doc: &mut Doc, path: &str, value: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut current = doc;
    for part in parts {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        current = next;
    }
    current.insert(last.to_string(), value);
}

/// Removes a dotted path (a no-op when absent).
pub(crate) fn remove_path(doc: &mut Doc, path: &str) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut current = doc;
    for part in parts {
        match current.get_mut(part) {
            Some(Value::Object(next)) => current = next,
            _ => return,
        }
    }
    current.remove(last);
}

/// Sets a field, or removes it when the value is `null` (unset fields are omitted from replies).
pub(crate) fn set_or_unset(doc: &mut Doc, path: &str, value: Value) {
    if value.is_null() {
        remove_path(doc, path);
    } else {
        set_path(doc, path, value);
    }
}

// ---------------------------------------------------------------------------------------------
// Request fields. The server parses bodies with jsonmodels: unknown keys are ignored, `null` is the
// same as absent, and a missing required field or a wrong type is a 400/12 validation error.
// ---------------------------------------------------------------------------------------------

fn type_error(field: &str, expected: &str) -> ApiError {
    ApiError::validation(format!(
        "Error for field '{field}'. Value has to be {expected}"
    ))
}

fn present<'a>(data: &'a Doc, field: &str) -> Option<&'a Value> {
    data.get(field).filter(|v| !v.is_null())
}

/// A required string field.
pub(crate) fn req_str<'a>(data: &'a Doc, field: &str) -> Result<&'a str, ApiError> {
    match present(data, field) {
        None => Err(ApiError::validation(format!(
            "Error for field '{field}'. Field is required!"
        ))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(type_error(field, "a string")),
    }
}

/// An optional string field.
pub(crate) fn opt_str<'a>(data: &'a Doc, field: &str) -> Result<Option<&'a str>, ApiError> {
    match present(data, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(type_error(field, "a string")),
    }
}

/// An optional string field with a default of `""`.
pub(crate) fn str_or_empty<'a>(data: &'a Doc, field: &str) -> Result<&'a str, ApiError> {
    Ok(opt_str(data, field)?.unwrap_or(""))
}

/// An optional boolean field.
pub(crate) fn opt_bool(data: &Doc, field: &str, default: bool) -> Result<bool, ApiError> {
    match present(data, field) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(type_error(field, "a boolean")),
    }
}

/// An optional integer field (integral floats are accepted, as Python's int coercion does).
pub(crate) fn opt_i64(data: &Doc, field: &str) -> Result<Option<i64>, ApiError> {
    match present(data, field) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.fract() == 0.0 => Ok(Some(f as i64)),
            _ => Err(type_error(field, "an integer")),
        },
        Some(_) => Err(type_error(field, "an integer")),
    }
}

/// An optional list of strings.
pub(crate) fn opt_str_list(data: &Doc, field: &str) -> Result<Option<Vec<String>>, ApiError> {
    match present(data, field) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| type_error(field, "a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(type_error(field, "a list")),
    }
}

/// An optional object field.
pub(crate) fn opt_obj<'a>(data: &'a Doc, field: &str) -> Result<Option<&'a Doc>, ApiError> {
    match present(data, field) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(type_error(field, "a dict")),
    }
}

/// Rejects tags starting with the reserved operator prefix `__$` (400/16), like `conform_tags`.
pub(crate) fn validate_tags(tags: &[String]) -> Result<(), ApiError> {
    if let Some(bad) = tags.iter().find(|t| t.starts_with("__$")) {
        return Err(ApiError::fields_value(
            "tags and system_tags cannot start with '__$'",
            &[("tag", bad.clone())],
        ));
    }
    Ok(())
}

/// Sorted, de-duplicated tag list as the server returns it.
pub(crate) fn sorted_tags(tags: &[String]) -> Value {
    let mut tags = tags.to_vec();
    tags.sort();
    tags.dedup();
    Value::Array(tags.into_iter().map(Value::String).collect())
}

// ---------------------------------------------------------------------------------------------
// Query features of `get_many`.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Or,
    And,
}

/// A list-field filter (`tags: ["a", "-b"]`, `status: ["queued"]`, `["__$all", "a", "b"]`, `[null]`).
///
/// Semantics follow the server's `get_list_field_query`: each value lands in one of four groups
/// (`in`, `nin`, `all`, `not all`) depending on the current operator (`__$any`/`__$or` default,
/// `__$all`/`__$and`) and whether it is excluded (`-` prefix or `__$not` before it); the non-empty
/// groups are combined with the first operator seen (OR by default); `null` also matches a missing
/// or empty field.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListFilter {
    any_in: Vec<String>,
    none_in: Vec<String>,
    all_in: Vec<String>,
    not_all_in: Vec<String>,
    global_and: bool,
    allow_empty: bool,
}

impl ListFilter {
    /// Parses the request value of a list field (a list, or a single value).
    pub(crate) fn parse(field: &str, value: &Value) -> Result<Self, ApiError> {
        let items: Vec<Value> = match value {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        let mut filter = ListFilter::default();
        let mut current = Op::Or;
        let mut global: Option<Op> = None;
        let mut negate_next: Option<bool> = None;
        for item in items {
            let text = match item {
                Value::Null => {
                    negate_next = None;
                    global.get_or_insert(Op::Or);
                    filter.allow_empty = true;
                    continue;
                }
                Value::String(s) => s,
                other => {
                    return Err(ApiError::fields_value(
                        "invalid value type, string expected",
                        &[("field", field.to_string()), ("value", other.to_string())],
                    ));
                }
            };
            if text.starts_with("__$") {
                if negate_next.is_some() {
                    return Err(ApiError::fields_value(
                        "Value is expected after",
                        &[("field", field.to_string()), ("operator", text)],
                    ));
                }
                match text.as_str() {
                    "__$not" => negate_next = Some(false),
                    "__$nop" => negate_next = Some(true),
                    "__$all" | "__$and" => {
                        current = Op::And;
                        global.get_or_insert(Op::And);
                    }
                    "__$any" | "__$or" => {
                        current = Op::Or;
                        global.get_or_insert(Op::Or);
                    }
                    _ => {
                        return Err(ApiError::fields_value(
                            "Unsupported operator",
                            &[("field", field.to_string()), ("operator", text)],
                        ));
                    }
                }
                continue;
            }
            global.get_or_insert(Op::Or);
            let (include, value) = if let Some(rest) = text.strip_prefix('-') {
                if rest.is_empty() {
                    return Err(ApiError::fields_value(
                        "Missing value after the exclude prefix -",
                        &[("field", field.to_string()), ("value", String::new())],
                    ));
                }
                negate_next = None;
                (false, rest.to_string())
            } else {
                (negate_next.take().unwrap_or(true), text)
            };
            let group = match (current, include) {
                (Op::Or, true) => &mut filter.any_in,
                (Op::Or, false) => &mut filter.none_in,
                (Op::And, true) => &mut filter.all_in,
                (Op::And, false) => &mut filter.not_all_in,
            };
            group.push(value);
        }
        if negate_next.is_some() {
            return Err(ApiError::fields_value(
                "Value is expected after",
                &[("field", field.to_string())],
            ));
        }
        filter.global_and = global == Some(Op::And);
        Ok(filter)
    }

    /// True when the filter has no condition at all (an empty list).
    pub(crate) fn is_empty(&self) -> bool {
        self.any_in.is_empty()
            && self.none_in.is_empty()
            && self.all_in.is_empty()
            && self.not_all_in.is_empty()
            && !self.allow_empty
    }

    /// Whether a document field value (array or scalar, or missing) passes.
    pub(crate) fn matches(&self, field: Option<&Value>) -> bool {
        let values: Vec<&str> = match field {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => vec![s.as_str()],
            Some(_) => Vec::new(),
        };
        let has = |v: &String| values.contains(&v.as_str());
        let mut results = Vec::new();
        if !self.any_in.is_empty() {
            results.push(self.any_in.iter().any(has));
        }
        if !self.none_in.is_empty() {
            results.push(!self.none_in.iter().any(has));
        }
        if !self.all_in.is_empty() {
            results.push(self.all_in.iter().all(has));
        }
        if !self.not_all_in.is_empty() {
            results.push(!self.not_all_in.iter().all(has));
        }
        let empty_field = match field {
            None | Some(Value::Null) => true,
            Some(Value::Array(items)) => items.is_empty(),
            _ => false,
        };
        if results.is_empty() {
            return !self.allow_empty || empty_field;
        }
        let combined = if self.global_and {
            results.iter().all(|r| *r)
        } else {
            results.iter().any(|r| *r)
        };
        combined || (self.allow_empty && empty_field)
    }
}

/// Compiles a `name`-style pattern (unanchored, case-sensitive regular expression).
pub(crate) fn pattern(field: &str, value: &str) -> Result<Regex, ApiError> {
    Regex::new(value).map_err(|e| {
        ApiError::fields_value(
            "failed parsing query field",
            &[("error", e.to_string()), ("field", field.to_string())],
        )
    })
}

/// Applies an `only_fields` projection: include mode keeps the listed (dotted) paths plus `id`;
/// when every entry starts with `-`, those paths are removed instead.
pub(crate) fn project(doc: &Doc, only_fields: &[String]) -> Doc {
    if only_fields.is_empty() {
        return doc.clone();
    }
    let (exclude, include): (Vec<&String>, Vec<&String>) =
        only_fields.iter().partition(|f| f.starts_with('-'));
    if include.is_empty() {
        let mut out = doc.clone();
        for path in exclude {
            remove_path(&mut out, &path[1..]);
        }
        return out;
    }
    let mut out = Map::new();
    if let Some(id) = doc.get("id") {
        out.insert("id".into(), id.clone());
    }
    for path in include {
        if let Some(value) = get_path(doc, path) {
            set_path(&mut out, path, value.clone());
        }
    }
    out
}

fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// Orders (`order_by`, `-` for descending, `id` appended as a tie-breaker) and pages
/// (`page`/`page_size`, at most 500 per page, at most 500 without paging) a result list.
pub(crate) fn order_and_page(mut docs: Vec<Doc>, data: &Doc) -> Result<Vec<Doc>, ApiError> {
    let order_by: Vec<String> = match data.get("order_by") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(_)) => opt_str_list(data, "order_by")?.unwrap_or_default(),
        _ => Vec::new(),
    };
    if !order_by.is_empty() {
        let mut keys = order_by;
        if !keys.iter().any(|k| k == "id" || k == "-id") {
            keys.push("id".into());
        }
        docs.sort_by(|a, b| {
            for key in &keys {
                let (field, desc) = match key.strip_prefix('-') {
                    Some(f) => (f, true),
                    None => (key.as_str(), false),
                };
                let ord = compare_values(get_path(a, field), get_path(b, field));
                let ord = if desc { ord.reverse() } else { ord };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
    }
    let page = opt_i64(data, "page")?;
    let page_size = opt_i64(data, "page_size")?;
    if let Some(p) = page
        && p < 0
    {
        return Err(ApiError::validation("page must be >=0: field=page"));
    }
    if let Some(s) = page_size
        && s < 1
    {
        return Err(ApiError::validation(
            "page_size must be >0: field=page_size",
        ));
    }
    let size = page_size
        .map(|s| (s as usize).min(MAX_PAGE_SIZE))
        .unwrap_or(MAX_PAGE_SIZE);
    let start = page.unwrap_or(0) as usize * size;
    Ok(docs.into_iter().skip(start).take(size).collect())
}

/// Reads `only_fields` (or its alias `projection`).
pub(crate) fn only_fields(data: &Doc) -> Result<Vec<String>, ApiError> {
    if let Some(p) = opt_str_list(data, "projection")?
        && !p.is_empty()
    {
        return Ok(p);
    }
    Ok(opt_str_list(data, "only_fields")?.unwrap_or_default())
}

/// The request value of a filter field given either as a literal dotted key (`"execution.queue"`)
/// or nested (`{"execution": {"queue": …}}`, as the query-string merge produces).
pub(crate) fn filter_value<'a>(data: &'a Doc, field: &str) -> Option<&'a Value> {
    data.get(field)
        .or_else(|| get_path(data, field))
        .filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(v: Value) -> ListFilter {
        ListFilter::parse("tags", &v).expect("valid filter")
    }

    #[test]
    fn list_filters_follow_the_server_rules() {
        let tags = json!(["a", "b"]);
        assert!(filter(json!(["a"])).matches(Some(&tags)));
        assert!(!filter(json!(["c"])).matches(Some(&tags)));
        assert!(!filter(json!(["-a"])).matches(Some(&tags)));
        assert!(filter(json!(["-c"])).matches(Some(&tags)));
        assert!(filter(json!(["-c"])).matches(None));
        assert!(filter(json!(["__$all", "a", "b"])).matches(Some(&tags)));
        assert!(!filter(json!(["__$all", "a", "c"])).matches(Some(&tags)));
        assert!(!filter(json!(["__$not", "a"])).matches(Some(&tags)));
        assert!(filter(json!([null])).matches(Some(&json!([]))));
        assert!(!filter(json!([null])).matches(Some(&tags)));
        assert!(filter(json!(["queued"])).matches(Some(&json!("queued"))));
        assert!(ListFilter::parse("tags", &json!(["__$bogus"])).is_err());
        assert!(ListFilter::parse("tags", &json!(["-"])).is_err());
        assert!(filter(json!([])).is_empty());
    }

    #[test]
    fn projection_keeps_dotted_paths_and_id() {
        let doc =
            json!({"id": "x", "status": "queued", "execution": {"queue": "q", "framework": "f"}});
        let doc = doc.as_object().expect("object").clone();
        let out = project(&doc, &["execution.queue".to_string()]);
        assert_eq!(
            Value::Object(out),
            json!({"id": "x", "execution": {"queue": "q"}})
        );
        let out = project(&doc, &["-execution".to_string()]);
        assert_eq!(Value::Object(out), json!({"id": "x", "status": "queued"}));
    }

    #[test]
    fn times_print_like_python_isoformat() {
        let t = parse_time("2025-06-26T01:45:12.917+00:00").expect("parses");
        assert_eq!(fmt_time(t), "2025-06-26T01:45:12.917000+00:00");
        let t = parse_time("2025-06-26T01:45:12Z").expect("parses");
        assert_eq!(fmt_time(t), "2025-06-26T01:45:12+00:00");
    }

    #[test]
    fn paging_caps_at_500() {
        let docs: Vec<Doc> = (0..600)
            .map(|i| {
                json!({"id": format!("{i:04}")})
                    .as_object()
                    .cloned()
                    .expect("object")
            })
            .collect();
        let none = Map::new();
        assert_eq!(order_and_page(docs.clone(), &none).expect("ok").len(), 500);
        let page1 = json!({"page": 1, "page_size": 500})
            .as_object()
            .cloned()
            .expect("object");
        assert_eq!(order_and_page(docs, &page1).expect("ok").len(), 100);
    }
}
