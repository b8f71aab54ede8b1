//! `labelSelector` and `fieldSelector` parsing and matching, with the operators, field sets
//! and error messages of the real server.

use serde_json::Value;

use super::{
    names::{label_value_error, qualified_name_error},
    resources::ResourceDef,
    status::ApiError,
};

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Exists(String),
    NotExists(String),
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed label selector (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<LabelReq>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Open,
    Close,
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Gt,
    Lt,
    In,
    NotIn,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => s.clone(),
            Token::Comma => ",".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::Eq => "=".into(),
            Token::DoubleEq => "==".into(),
            Token::NotEq => "!=".into(),
            Token::Not => "!".into(),
            Token::Gt => ">".into(),
            Token::Lt => "<".into(),
            Token::In => "in".into(),
            Token::NotIn => "notin".into(),
        }
    }
}

fn lex(input: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '=' if next == Some('=') => {
                out.push(Token::DoubleEq);
                i += 2;
            }
            '=' => {
                out.push(Token::Eq);
                i += 1;
            }
            '!' if next == Some('=') => {
                out.push(Token::NotEq);
                i += 2;
            }
            '!' => {
                out.push(Token::Not);
                i += 1;
            }
            '>' => {
                out.push(Token::Gt);
                i += 1;
            }
            '<' => {
                out.push(Token::Lt);
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && !" \t\n\r,()=!<>".contains(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Ident(word),
                });
            }
        }
    }
    out
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn ident(&mut self, what: &str) -> Result<String, String> {
        match self.next() {
            Some(Token::Ident(s)) => Ok(s),
            Some(other) => Err(format!("found '{}', expected: {what}", other.describe())),
            None => Err(format!("found '', expected: {what}")),
        }
    }

    fn values_set(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Some(Token::Open) => {}
            Some(other) => return Err(format!("found '{}', expected: '('", other.describe())),
            None => return Err("found '', expected: '('".to_string()),
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Some(Token::Ident(v)) => {
                    values.push(v);
                    match self.next() {
                        Some(Token::Comma) => continue,
                        Some(Token::Close) => break,
                        Some(other) => {
                            return Err(format!(
                                "found '{}', expected: ',' or ')'",
                                other.describe()
                            ));
                        }
                        None => return Err("found '', expected: ')'".to_string()),
                    }
                }
                Some(Token::Close) => break,
                Some(Token::Comma) => values.push(String::new()),
                Some(other) => {
                    return Err(format!(
                        "found '{}', expected: ',', ')' or identifier",
                        other.describe()
                    ));
                }
                None => return Err("found '', expected: ')'".to_string()),
            }
        }
        if values.is_empty() {
            return Err("for 'in', 'notin' operators, values set can't be empty".to_string());
        }
        Ok(values)
    }

    fn requirement(&mut self) -> Result<LabelReq, String> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            let key = self.ident("identifier after '!'")?;
            check_key(&key)?;
            return Ok(LabelReq::NotExists(key));
        }
        let key = self.ident("identifier")?;
        check_key(&key)?;
        let req = match self.peek().cloned() {
            None | Some(Token::Comma) => LabelReq::Exists(key),
            Some(op @ (Token::Eq | Token::DoubleEq | Token::NotEq)) => {
                self.pos += 1;
                let value = match self.peek() {
                    Some(Token::Ident(_)) => self.ident("identifier")?,
                    None | Some(Token::Comma) => String::new(),
                    Some(other) => {
                        return Err(format!(
                            "found '{}', expected: identifier",
                            other.describe()
                        ));
                    }
                };
                check_value(&key, 0, &value)?;
                if op == Token::NotEq {
                    LabelReq::NotEq(key, value)
                } else {
                    LabelReq::Eq(key, value)
                }
            }
            Some(op @ (Token::In | Token::NotIn)) => {
                self.pos += 1;
                let values = self.values_set()?;
                for (i, v) in values.iter().enumerate() {
                    check_value(&key, i, v)?;
                }
                if op == Token::In {
                    LabelReq::In(key, values)
                } else {
                    LabelReq::NotIn(key, values)
                }
            }
            Some(op @ (Token::Gt | Token::Lt)) => {
                self.pos += 1;
                let raw = self.ident("identifier")?;
                let n: i64 = raw.parse().map_err(|_| {
                    format!("for 'Gt', 'Lt' operators, the value must be an integer: {raw:?}")
                })?;
                if op == Token::Gt {
                    LabelReq::Gt(key, n)
                } else {
                    LabelReq::Lt(key, n)
                }
            }
            Some(other) => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    other.describe()
                ));
            }
        };
        Ok(req)
    }
}

fn check_key(key: &str) -> Result<(), String> {
    match qualified_name_error(key) {
        Some(e) => Err(format!("key: Invalid value: {key:?}: {e}")),
        None => Ok(()),
    }
}

fn check_value(key: &str, i: usize, value: &str) -> Result<(), String> {
    match label_value_error(value) {
        Some(e) => Err(format!("values[{i}][{key}]: Invalid value: {value:?}: {e}")),
        None => Ok(()),
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` syntax (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`, `>`, `<`).
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let mut parser = Parser {
            tokens: lex(input),
            pos: 0,
        };
        let mut reqs = Vec::new();
        if parser.tokens.is_empty() {
            return Ok(Self { reqs });
        }
        loop {
            let req = parser
                .requirement()
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
            reqs.push(req);
            match parser.next() {
                None => break,
                Some(Token::Comma) => continue,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        other.describe()
                    )));
                }
            }
        }
        Ok(Self { reqs })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|req| match req {
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            LabelReq::Gt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            LabelReq::Lt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, comma-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

fn split_unescaped(input: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

impl FieldSelector {
    /// Parses a field selector and checks every field is one the resource supports.
    pub fn parse(input: &str, res: &ResourceDef, label_selector: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_unescaped(input, ',') {
            if part.trim().is_empty() {
                continue;
            }
            let (field, negate, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            let field = unescape(field.trim());
            if !field_supported(res, &field) {
                return Err(ApiError::bad_request(format!(
                    "Unable to find \"{}/{}, Resource={}\" that match label selector \"{label_selector}\", field selector \"{input}\": field label not supported: {field}",
                    res.group, res.version, res.plural
                )));
            }
            reqs.push((field, negate, unescape(value)));
        }
        Ok(Self { reqs })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether the object's selectable fields satisfy every requirement.
    pub fn matches(&self, res: &ResourceDef, obj: &Value) -> bool {
        self.reqs.iter().all(|(field, negate, value)| {
            let actual = field_value(res, obj, field);
            (actual == *value) != *negate
        })
    }

    /// The value required for `metadata.name`, if the selector pins one (used to serve the
    /// single-object watches kubectl issues without scanning).
    pub fn pinned_name(&self) -> Option<&str> {
        self.reqs
            .iter()
            .find(|(f, negate, _)| f == "metadata.name" && !negate)
            .map(|(_, _, v)| v.as_str())
    }
}

/// The selectable fields of each type, as registered by the real server's field-label
/// conversion functions.
fn field_supported(res: &ResourceDef, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    let extra: &[&str] = match (res.group, res.plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "secrets") => &["type"],
        ("", "namespaces") => &["status.phase"],
        _ => &[],
    };
    extra.contains(&field)
}

/// The string value of a selectable field (missing fields select as `""`, like Go zero values).
fn field_value(res: &ResourceDef, obj: &Value, field: &str) -> String {
    if res.is("", "events") && field == "source" {
        return str_at(obj, "/source/component");
    }
    if res.is("", "pods") && field == "spec.hostNetwork" {
        let on = obj
            .pointer("/spec/hostNetwork")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        return on.to_string();
    }
    let pointer = format!("/{}", field.replace('.', "/"));
    str_at(obj, &pointer)
}

fn str_at(obj: &Value, pointer: &str) -> String {
    match obj.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::k8s::resources::{def, resolve};

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_operators() {
        let p = pod(json!({"app": "web", "tier": "front", "n": "5"}));
        let m = |s: &str| LabelSelector::parse(s).expect("parses").matches(&p);
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web)"));
        assert!(m("tier"));
        assert!(!m("!tier"));
        assert!(m("!missing,app"));
        assert!(m("missing notin (x)"));
        assert!(m("n>4,n<6"));
        assert!(m(""));
    }

    #[test]
    fn bad_label_selectors() {
        for bad in ["app in web", "app=(", "a b", "app in ()", "bad key=1", "=x"] {
            let err = LabelSelector::parse(bad).expect_err(bad);
            assert_eq!(err.code, 400, "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let pods = def(resolve("pods").expect("pods"));
        let p = pod(json!({}));
        let m = |s: &str| {
            FieldSelector::parse(s, pods, "")
                .expect("parses")
                .matches(pods, &p)
        };
        assert!(m("metadata.name=p"));
        assert!(m("status.phase=Running,spec.nodeName==n1"));
        assert!(m("status.phase!=Pending"));
        assert!(!m("spec.nodeName="));
        let err = FieldSelector::parse("spec.foo=x", pods, "").expect_err("unsupported");
        assert!(err.message.contains("field label not supported: spec.foo"));
    }
}
