//! Every mistake of a values document at once: the strict parse stops at the first error, so the
//! document is parsed again without the offending key (or list entry) until it passes, and the
//! errors are put in the order their keys appear in the file. A user with five mistakes gets five
//! lines, not five runs.

use serde_json::Value;

use super::{FieldError, Values};

/// Most errors reported for one document (a runaway cascade stops here).
const MAX_ERRORS: usize = 50;

impl Values {
    /// Every error of the values document `text` (empty: it is valid), in file order.
    pub fn errors_in_yaml(text: &str) -> Vec<FieldError> {
        match Values::from_yaml(text) {
            Ok(_) => Vec::new(),
            Err(first) => match crate::yaml::from_str::<Value>(text) {
                Ok(doc) if doc.is_object() => {
                    let mut errors = Values::errors_in(doc);
                    if errors.is_empty() {
                        errors.push(first); // size or emptiness: not about a key
                    }
                    in_file_order(errors, text)
                }
                _ => vec![first],
            },
        }
    }

    /// Every error of the values document `doc` (empty: it is valid), in the order found.
    pub fn errors_in(mut doc: Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        while errors.len() < MAX_ERRORS {
            let Err(e) = Values::from_json(doc.clone()) else {
                break;
            };
            // a missing key (`… required`) cannot be removed: its nearest present parent goes
            let removed = ancestors(&e.path).any(|p| remove_path(&mut doc, p));
            errors.push(e);
            if !removed {
                break; // not about one key: nothing to take out and parse again
            }
        }
        errors
    }
}

/// `a.b[0].c`, then `a.b[0]`, `a.b`, `a`: the path and each parent, nearest first.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| p.rfind(['.', '[']).map(|i| &p[..i]))
        .filter(|p| !p.is_empty())
}

/// Removes what `path` names from `doc`: the list entry when the path goes through a list (an
/// entry's field removed alone would only make the entry invalid in another way), else the key.
/// Keys may contain dots (`nvidia.com/gpu`), so each step takes the longest key that matches.
fn remove_path(doc: &mut Value, path: &str) -> bool {
    let path = match path.rfind(']') {
        Some(end) => &path[..=end],
        None => path,
    };
    remove_at(doc, path)
}

fn remove_at(v: &mut Value, rest: &str) -> bool {
    match v {
        Value::Object(map) => {
            let Some(key) = map
                .keys()
                .filter(|k| {
                    rest == k.as_str()
                        || rest
                            .strip_prefix(k.as_str())
                            .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
                })
                .max_by_key(|k| k.len())
                .cloned()
            else {
                return false;
            };
            let after = &rest[key.len()..];
            if after.is_empty() {
                return map.remove(&key).is_some();
            }
            let after = after.strip_prefix('.').unwrap_or(after);
            map.get_mut(&key)
                .is_some_and(|child| remove_at(child, after))
        }
        Value::Array(items) => {
            let Some((index, after)) = rest
                .strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .and_then(|(i, after)| Some((i.parse::<usize>().ok()?, after)))
            else {
                return false;
            };
            if index >= items.len() {
                return false;
            }
            if after.is_empty() {
                items.remove(index);
                return true;
            }
            let after = after.strip_prefix('.').unwrap_or(after);
            remove_at(&mut items[index], after)
        }
        _ => false,
    }
}

/// Sorts errors by the line of the file their path's last key is on (errors whose key cannot be
/// found keep their order, after the others).
pub fn in_file_order(errors: Vec<FieldError>, text: &str) -> Vec<FieldError> {
    let mut keyed: Vec<(usize, usize, FieldError)> = errors
        .into_iter()
        .enumerate()
        .map(|(i, e)| (line_of(text, &e.path).unwrap_or(usize::MAX), i, e))
        .collect();
    keyed.sort_by_key(|(line, i, _)| (*line, *i));
    keyed.into_iter().map(|(_, _, e)| e).collect()
}

/// The line a dotted path's innermost key is on, following the keys down the YAML's indentation
/// (list indices are skipped: the next key is searched under the list). Approximate by design:
/// it only orders messages.
fn line_of(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut min_indent = 0;
    let mut found = None;
    let mut rest = path;
    while !rest.is_empty() {
        rest = rest.trim_start_matches('.');
        if let Some(r) = rest.strip_prefix('[') {
            rest = r.split_once(']').map_or("", |(_, after)| after);
            continue;
        }
        // the longest key on a deeper line below `from` that `rest` starts with
        let mut best: Option<(usize, usize, usize)> = None; // (line, key length, indent)
        for (n, line) in lines.iter().enumerate().skip(from) {
            let trimmed = line.trim_start_matches([' ', '-']);
            let indent = line.len() - trimmed.len();
            if n > from && indent < min_indent && !trimmed.is_empty() && found.is_some() {
                break; // left the parent's block
            }
            let Some((key, _)) = trimmed.split_once(':') else {
                continue;
            };
            let key = key.trim().trim_matches(['"', '\'']);
            let fits = rest == key
                || rest
                    .strip_prefix(key)
                    .is_some_and(|r| r.starts_with('.') || r.starts_with('['));
            if fits && !key.is_empty() && best.is_none_or(|(_, len, _)| key.len() > len) {
                best = Some((n, key.len(), indent));
                if rest == key {
                    break;
                }
            }
        }
        let (n, len, indent) = best?;
        found = Some(n);
        from = n + 1;
        min_indent = indent + 1;
        rest = &rest[len..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Six mistakes of different kinds (range, unknown key, quantity, env name, type, image),
    /// scattered: six errors, each with its path, in the order the file has them (not the order
    /// the parser met them).
    #[test]
    fn six_mistakes_give_six_errors_in_file_order() {
        let text = "\
agentk8sglue:
  pollIntervalSeconds: -1
  queus: {}
  queues:
    red:
      templateOverrides:
        resources:
          limits:
            memory: 12 GiB
        env:
          - name: 1BAD
            value: x
      queueSettings:
        maxPods: many
  defaultImage: \"has space\"
";
        let got: Vec<String> = Values::errors_in_yaml(text)
            .iter()
            .map(|e| e.path.clone())
            .collect();
        assert_eq!(
            got,
            [
                "agentk8sglue.pollIntervalSeconds",
                "agentk8sglue.queus",
                "agentk8sglue.queues.red.templateOverrides.resources.limits.memory",
                "agentk8sglue.queues.red.templateOverrides.env[0].name",
                "agentk8sglue.queues.red.queueSettings.maxPods",
                "agentk8sglue.defaultImage",
            ]
            .map(String::from),
            "{:#?}",
            Values::errors_in_yaml(text)
        );
    }

    #[test]
    fn a_valid_document_has_no_errors_and_a_broken_one_its_one_error() {
        assert!(Values::errors_in_yaml("agentk8sglue:\n  queues:\n    red: {}\n").is_empty());
        for (text, path) in [
            ("", "(root)"),
            ("agentk8sglue: [1\n", "(root)"),
            ("- 1\n", "(root)"),
        ] {
            let errors = Values::errors_in_yaml(text);
            assert_eq!(errors.len(), 1, "{text:?}: {errors:?}");
            assert_eq!(errors[0].path, path, "{text:?}");
        }
    }

    #[test]
    fn paths_are_removed_through_dotted_keys_and_lists() {
        let mut doc = serde_json::json!({
            "a": {"nvidia.com/gpu": 1, "nvidia": {"com/gpu": 2}, "list": [{"x": 1}, {"x": 2}]}
        });
        assert!(remove_path(&mut doc, "a.nvidia.com/gpu"));
        assert_eq!(doc["a"]["nvidia"]["com/gpu"], 2, "the longest key matched");
        assert!(remove_path(&mut doc, "a.list[0].x"));
        assert_eq!(
            doc["a"]["list"],
            serde_json::json!([{"x": 2}]),
            "the entry went"
        );
        assert!(!remove_path(&mut doc, "a.missing"));
        assert!(!remove_path(&mut doc, "a.list[5]"));
    }
}
