//! The Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` once per
//! family, then its samples, one per line, with escaped label values.
//!
//! The format is what node_exporter's textfile collector and a Prometheus scrape read
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>): a family's lines
//! must be together, a series must not appear twice, and a counter's name ends in
//! `_total` by convention. The writer keeps the first two by construction (a family
//! is written whole, in one call chain) and [`validate`] checks all three, so a test
//! can hold the whole output to them.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// What a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever rises (until the daemon restarts).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A sample's value: counters are exact integers, some gauges have fractions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Written as an integer.
    Int(u64),
    /// Written as a float (`NaN`, `+Inf`, `-Inf` spelled as the format wants).
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(u64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

/// The text being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    names: BTreeSet<String>,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts family `name`: its HELP and TYPE lines. Its samples follow through the
    /// returned [`Family`], before the next family starts.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> Family<'_> {
        // Our own names, fixed in the code: a slip here is a bug the unit tests catch.
        debug_assert!(valid_name(name), "bad metric name {name}");
        debug_assert!(
            (kind == Kind::Counter) == name.ends_with("_total"),
            "{name}: counters, and only they, end in _total"
        );
        debug_assert!(self.names.insert(name.to_string()), "{name} twice");
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.word());
        Family {
            out: self,
            name: name.to_string(),
        }
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Into<Value>) {
        self.family(name, kind, help).sample(&[], value);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// The family being written.
#[derive(Debug)]
pub struct Family<'a> {
    out: &'a mut Exposition,
    name: String,
}

impl Family<'_> {
    /// One sample, with `labels` (name, value) in the order given.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) -> &mut Self {
        let text = &mut self.out.text;
        text.push_str(&self.name);
        if !labels.is_empty() {
            text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                debug_assert!(valid_label(label), "bad label name {label}");
                if i > 0 {
                    text.push(',');
                }
                let _ = write!(text, "{label}=\"{}\"", escape_label_value(value));
            }
            text.push('}');
        }
        text.push(' ');
        match value.into() {
            Value::Int(v) => {
                let _ = write!(text, "{v}");
            }
            Value::Float(v) => text.push_str(&float(v)),
        }
        text.push('\n');
        self
    }
}

/// A float as the format spells it.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// HELP text: a backslash and a line feed are escaped.
pub fn escape_help(s: &str) -> String {
    s.replace('\\', r"\\").replace('\n', r"\n")
}

/// A label value: backslash, double quote and line feed are escaped.
pub fn escape_label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            c => out.push(c),
        }
    }
    out
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
fn valid_label(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A reason the text breaks the format or its conventions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A line that is neither a comment nor a sample.
    #[error("line {line}: not a sample: {text}")]
    NotASample {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A sample before its family's TYPE, or a family split in two.
    #[error("line {line}: {name} is not the family being written")]
    OutOfFamily {
        /// 1-based line number.
        line: usize,
        /// The metric name.
        name: String,
    },
    /// The same name and labels twice.
    #[error("line {line}: series {series} appears twice")]
    Duplicate {
        /// 1-based line number.
        line: usize,
        /// The series.
        series: String,
    },
    /// A counter not named `_total`, or a gauge that is.
    #[error("{0}: a counter's name, and only a counter's, ends in _total")]
    Naming(String),
    /// The text does not end with a line feed.
    #[error("the last line has no line feed")]
    NoFinalNewline,
}

/// Checks `text` against the format as this daemon writes it: every family has HELP
/// then TYPE (counter or gauge) before its samples, which are contiguous; names and
/// label names are valid; label values are quoted with only `\\`, `\"` and `\n`
/// escapes; values parse as floats; no series is written twice; counters end in
/// `_total`. Returns the samples (series text → value) for a test to look at.
pub fn validate(text: &str) -> Result<Vec<(String, f64)>, FormatError> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(FormatError::NoFinalNewline);
    }
    let mut seen_families = BTreeSet::new();
    let mut seen_series = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let bad = || FormatError::NotASample {
            line: n,
            text: line.to_string(),
        };
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !valid_name(name) || !seen_families.insert(name.to_string()) {
                return Err(FormatError::OutOfFamily {
                    line: n,
                    name: name.to_string(),
                });
            }
            current = None;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let (name, kind) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            if !seen_families.contains(name) || words.next().is_some() {
                return Err(bad());
            }
            match kind {
                "counter" if name.ends_with("_total") => {}
                "gauge" if !name.ends_with("_total") => {}
                "counter" | "gauge" => return Err(FormatError::Naming(name.to_string())),
                _ => return Err(bad()),
            }
            current = Some(name.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(bad());
        }
        let (series, value) = split_sample(line).ok_or_else(bad)?;
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        if current.as_deref() != Some(name) {
            return Err(FormatError::OutOfFamily {
                line: n,
                name: name.to_string(),
            });
        }
        if name_end < series.len() && !valid_labels(&series[name_end..]) {
            return Err(bad());
        }
        let value = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse::<f64>().map_err(|_| bad())?,
        };
        if !seen_series.insert(series.to_string()) {
            return Err(FormatError::Duplicate {
                line: n,
                series: series.to_string(),
            });
        }
        samples.push((series.to_string(), value));
    }
    Ok(samples)
}

/// A sample line as (series, value); the series may hold spaces inside quotes.
fn split_sample(line: &str) -> Option<(&str, &str)> {
    let end = match line.find('{') {
        Some(open) => {
            let close = closing_brace(line, open)?;
            close + 1
        }
        None => line.find(' ')?,
    };
    let (series, rest) = line.split_at(end);
    let value = rest.strip_prefix(' ')?;
    if value.is_empty()
        || value.contains(' ')
        || !valid_name(&series[..line.find('{').unwrap_or(end)])
    {
        return None;
    }
    Some((series, value))
}

/// Where the label set opened at `open` closes, skipping quoted values.
fn closing_brace(line: &str, open: usize) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(open + i),
            _ => {}
        }
    }
    None
}

/// `{name="value",...}` with valid names and escapes, no label twice.
fn valid_labels(set: &str) -> bool {
    let Some(inner) = set.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
        return false;
    };
    let mut names = BTreeSet::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let Some(eq) = rest.find("=\"") else {
            return false;
        };
        let name = &rest[..eq];
        if !valid_label(name) || !names.insert(name) {
            return false;
        }
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    _ => return false,
                },
                '"' => {
                    end = Some(eq + 2 + i);
                    break;
                }
                '\n' => return false,
                _ => {}
            }
        }
        let Some(end) = end else { return false };
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.is_empty() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_format_byte_for_byte() {
        let mut e = Exposition::new();
        e.family(
            "pfsyncd_peer_packets_received_total",
            Kind::Counter,
            "Packets heard from a peer.",
        )
        .sample(&[("peer", "10.0.0.1")], 12u64)
        .sample(&[("peer", "fe80::1")], 0u64);
        e.single("pfsyncd_syncok", Kind::Gauge, "1 once in sync.", true);
        e.single(
            "pfsyncd_bulk_last_duration_seconds",
            Kind::Gauge,
            "Took.",
            1.25,
        );
        e.single("pfsyncd_x", Kind::Gauge, "Not a number.", f64::NAN);
        assert_eq!(
            e.finish(),
            "# HELP pfsyncd_peer_packets_received_total Packets heard from a peer.\n\
             # TYPE pfsyncd_peer_packets_received_total counter\n\
             pfsyncd_peer_packets_received_total{peer=\"10.0.0.1\"} 12\n\
             pfsyncd_peer_packets_received_total{peer=\"fe80::1\"} 0\n\
             # HELP pfsyncd_syncok 1 once in sync.\n\
             # TYPE pfsyncd_syncok gauge\n\
             pfsyncd_syncok 1\n\
             # HELP pfsyncd_bulk_last_duration_seconds Took.\n\
             # TYPE pfsyncd_bulk_last_duration_seconds gauge\n\
             pfsyncd_bulk_last_duration_seconds 1.25\n\
             # HELP pfsyncd_x Not a number.\n\
             # TYPE pfsyncd_x gauge\n\
             pfsyncd_x NaN\n"
        );
    }

    #[test]
    fn escapes_label_values_and_help() {
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_help("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
        let mut e = Exposition::new();
        e.family("m", Kind::Gauge, "h")
            .sample(&[("l", "x\"} 1\nm 2")], 3u64);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP m h\n# TYPE m gauge\nm{l=\"x\\\"} 1\\nm 2\"} 3\n"
        );
        // A value that looks like the end of the set and another sample stays one.
        let samples = validate(&text).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].1, 3.0);
    }

    #[test]
    fn the_validator_refuses_what_breaks_the_format() {
        let ok = "# HELP a_total h\n# TYPE a_total counter\na_total{x=\"1\"} 1\n";
        assert!(validate(ok).is_ok());
        let twice = "# HELP a_total h\n# TYPE a_total counter\na_total 1\na_total 2\n";
        assert!(matches!(
            validate(twice),
            Err(FormatError::Duplicate { .. })
        ));
        let split = "# HELP a h\n# TYPE a gauge\na 1\n# HELP b h\n# TYPE b gauge\nb 1\na 2\n";
        assert!(matches!(
            validate(split),
            Err(FormatError::OutOfFamily { .. })
        ));
        let badname = "# HELP a h\n# TYPE a counter\na 1\n";
        assert!(matches!(validate(badname), Err(FormatError::Naming(_))));
        let untyped = "a 1\n";
        assert!(validate(untyped).is_err());
        assert!(validate("# HELP a h\n# TYPE a gauge\na{x=\"\\q\"} 1\n").is_err());
        assert!(validate("# HELP a h\n# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n").is_err());
        assert!(validate("# HELP a h\n# TYPE a gauge\na one\n").is_err());
        assert!(matches!(
            validate("# HELP a h\n# TYPE a gauge\na 1"),
            Err(FormatError::NoFinalNewline)
        ));
    }
}
