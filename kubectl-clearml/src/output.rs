//! The one renderer: every command returns a view (plain data, `Serialize + Tabular`) and this
//! module prints it as a kubectl-style table, a wide table, JSON or YAML. Data goes to the `out`
//! writer (stdout); notes for people (e.g. "No tasks found.") go to `err` (stderr).
//!
//! JSON and YAML serialise the view structs (snake_case keys), never the raw proto messages, so
//! scripts keep working when the wire contract grows.

use std::io::{self, Write};

use serde::Serialize;

/// `-o/--output`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns with uppercase headers.
    #[default]
    Table,
    /// The table with extra columns.
    Wide,
    /// Pretty-printed JSON.
    Json,
    /// YAML.
    Yaml,
}

impl OutputFormat {
    /// JSON or YAML: output meant for programs (no spinners, no chatter).
    pub fn is_machine(self) -> bool {
        matches!(self, Self::Json | Self::Yaml)
    }
}

/// A view that knows how to print itself for people.
pub trait Tabular {
    /// Writes the human form; `wide` adds columns.
    fn write_table(&self, wide: bool, out: &mut dyn Write) -> io::Result<()>;

    /// A note for stderr when there is nothing to show (the table then prints nothing).
    fn empty_message(&self) -> Option<String> {
        None
    }
}

/// Writing a view failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// stdout/stderr refused the write (e.g. a closed pipe).
    #[error("cannot write output: {0}")]
    Io(#[from] io::Error),
    /// The view could not be encoded.
    #[error("cannot encode output: {0}")]
    Encode(String),
}

/// Prints `view` in format `fmt`: data to `out`, notes to `err`.
pub fn render<T: Serialize + Tabular>(
    view: &T,
    fmt: OutputFormat,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), OutputError> {
    match fmt {
        OutputFormat::Table | OutputFormat::Wide => match view.empty_message() {
            Some(note) => writeln!(err, "{note}")?,
            None => view.write_table(fmt == OutputFormat::Wide, out)?,
        },
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(view)
                .map_err(|e| OutputError::Encode(e.to_string()))?;
            writeln!(out, "{text}")?;
        }
        OutputFormat::Yaml => {
            let text = clearml_agent_core::yaml::to_string(view)
                .map_err(|e| OutputError::Encode(e.to_string()))?;
            write!(out, "{text}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Prints `view` to stdout (notes to stderr).
pub fn print<T: Serialize + Tabular>(view: &T, fmt: OutputFormat) -> Result<(), OutputError> {
    render(
        view,
        fmt,
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

/// Columns separated by three spaces, left-aligned, the last one unpadded (kubectl's layout).
pub fn write_columns(
    headers: &[&str],
    rows: &[Vec<String>],
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            if i + 1 == widths.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `<none>` for an empty cell, as kubectl shows it.
pub fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.to_string()
    }
}

/// kubectl's age format (its `HumanDuration`): `42s`, `5m10s`, `37m`, `3h20m`, `20h`, `3d4h`, `12d`.
pub fn format_age(seconds: i64) -> String {
    fn pair(a: i64, ua: &str, b: i64, ub: &str) -> String {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    }
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        pair(m, "m", s % 60, "s")
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        pair(h, "h", m % 60, "m")
    } else if h < 48 {
        format!("{h}h")
    } else if h < 192 {
        pair(d, "d", h % 24, "h")
    } else if d < 730 {
        format!("{d}d")
    } else {
        pair(d / 365, "y", d % 365, "d")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Sample {
        rows: Vec<SampleRow>,
    }

    #[derive(Serialize)]
    struct SampleRow {
        queue_name: String,
        max_pods: Option<u32>,
    }

    impl Tabular for Sample {
        fn write_table(&self, wide: bool, out: &mut dyn Write) -> io::Result<()> {
            let mut headers = vec!["NAME", "MAX PODS"];
            if wide {
                headers.push("NOTE");
            }
            let rows: Vec<Vec<String>> = self
                .rows
                .iter()
                .map(|r| {
                    let mut row = vec![
                        r.queue_name.clone(),
                        r.max_pods.map_or("-".into(), |m| m.to_string()),
                    ];
                    if wide {
                        row.push("wide".into());
                    }
                    row
                })
                .collect();
            write_columns(&headers, &rows, out)
        }

        fn empty_message(&self) -> Option<String> {
            self.rows.is_empty().then(|| "No queues found.".to_string())
        }
    }

    fn sample() -> Sample {
        Sample {
            rows: vec![
                SampleRow {
                    queue_name: "gpu-large-queue".into(),
                    max_pods: Some(10),
                },
                SampleRow {
                    queue_name: "cpu".into(),
                    max_pods: None,
                },
            ],
        }
    }

    fn rendered(view: &Sample, fmt: OutputFormat) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        render(view, fmt, &mut out, &mut err).expect("render");
        (
            String::from_utf8(out).expect("utf8"),
            String::from_utf8(err).expect("utf8"),
        )
    }

    #[test]
    fn table_aligns_columns_under_uppercase_headers() {
        let (out, err) = rendered(&sample(), OutputFormat::Table);
        assert_eq!(
            out,
            "NAME              MAX PODS\ngpu-large-queue   10\ncpu               -\n"
        );
        assert!(err.is_empty());
    }

    #[test]
    fn wide_adds_columns() {
        let (out, _) = rendered(&sample(), OutputFormat::Wide);
        let first = out.lines().next().expect("header");
        assert!(first.ends_with("NOTE"), "{first}");
    }

    #[test]
    fn json_uses_snake_case_keys_of_the_view() {
        let (out, _) = rendered(&sample(), OutputFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["rows"][0]["queue_name"], "gpu-large-queue");
        assert_eq!(v["rows"][0]["max_pods"], 10);
        assert!(v["rows"][1]["max_pods"].is_null());
    }

    #[test]
    fn yaml_round_trips_to_the_same_document_as_json() {
        let (yaml, _) = rendered(&sample(), OutputFormat::Yaml);
        let (json, _) = rendered(&sample(), OutputFormat::Json);
        let from_yaml: serde_json::Value = clearml_agent_core::yaml::from_str(&yaml).expect("yaml");
        let from_json: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(from_yaml, from_json);
    }

    #[test]
    fn empty_table_prints_a_note_on_stderr_and_nothing_on_stdout() {
        let (out, err) = rendered(&Sample { rows: vec![] }, OutputFormat::Table);
        assert!(out.is_empty());
        assert_eq!(err, "No queues found.\n");
        // JSON still prints the (empty) data.
        let (out, _) = rendered(&Sample { rows: vec![] }, OutputFormat::Json);
        assert!(out.contains("\"rows\": []"), "{out}");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (-5, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (310, "5m10s"),
            (37 * 60, "37m"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (20 * 3600, "20h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (12 * 86_400, "12d"),
            (800 * 86_400, "2y70d"),
        ];
        for (secs, want) in cases {
            assert_eq!(format_age(secs), want, "{secs}");
        }
    }
}
