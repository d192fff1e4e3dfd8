//! The results CSV, the summary of repeated runs, and the SVG chart.
//!
//! Every run of `activity-bench` prints one CSV row with the columns of [`COLUMNS`] (empty
//! where a measure does not apply). `activity-bench report` groups the rows of one file by
//! scenario and case, keeps the median run of each group (by the scenario's main measure, see
//! [`main_measure`]), adds the ratio to the case whose name starts with `1` (rumqttd's own
//! listener), and writes the summary CSV, a Markdown table and an SVG bar chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, bail};

use crate::stats::median_index;

/// The columns of a results row, in order.
pub const COLUMNS: [&str; 22] = [
    "scenario",
    "case",
    "run",
    "msgs_per_s",
    "delivered",
    "p50_us",
    "p99_us",
    "system_events",
    "system_events_per_s",
    "conns_per_s",
    "presence_events",
    "presence_per_s",
    "clients_ok",
    "errors",
    "idle_rss_delta_kib",
    "idle_rss_kib",
    "bytes_per_conn",
    "broker_cpu_s",
    "broker_cpu_pct",
    "broker_peak_rss_kib",
    "loadavg1",
    "duration_s",
];

/// One results row: column name to value (missing means empty).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row(pub BTreeMap<String, String>);

impl Row {
    /// Sets `column` to `value`.
    pub fn set(&mut self, column: &str, value: impl ToString) {
        self.0.insert(column.to_owned(), value.to_string());
    }

    /// The value of `column`, empty when unset.
    pub fn get(&self, column: &str) -> &str {
        self.0.get(column).map_or("", String::as_str)
    }

    /// The value of `column` as a number.
    pub fn number(&self, column: &str) -> Option<f64> {
        self.get(column).parse().ok()
    }

    /// The row as one CSV line (no newline), in the order of `columns`.
    pub fn to_csv(&self, columns: &[&str]) -> String {
        columns
            .iter()
            .map(|c| csv_field(self.get(c)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Quotes a field when it holds a comma or a quote.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// The header line of a results CSV.
pub fn header() -> String {
    COLUMNS.join(",")
}

/// Parses a CSV written by this module (a header, then rows; quoted fields allowed).
pub fn parse_csv(text: &str) -> anyhow::Result<Vec<Row>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = split_csv(lines.next().context("empty CSV")?);
    let mut rows = Vec::new();
    for line in lines {
        let fields = split_csv(line);
        if fields.len() != header.len() {
            bail!(
                "a row has {} fields, the header {}: {line}",
                fields.len(),
                header.len()
            );
        }
        rows.push(Row(header.iter().cloned().zip(fields).collect()));
    }
    Ok(rows)
}

fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The measure a scenario is judged by: the median run is chosen by it, ratios compare it.
pub fn main_measure(scenario: &str) -> &'static str {
    if scenario.contains("storm") {
        "conns_per_s"
    } else if scenario.contains("idle") {
        "bytes_per_conn"
    } else {
        "msgs_per_s"
    }
}

/// The summary of one scenario and case: its median run and how many runs there were.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The median run (by [`main_measure`]), with `runs` and `ratio_to_case1` added.
    pub row: Row,
    /// The main measure of the median run.
    pub value: f64,
}

/// Groups `rows` by scenario and case (in order of first appearance) and keeps each group's
/// median run, with the ratio of its main measure to case 1 of the same scenario.
pub fn summarize(rows: &[Row]) -> Vec<Summary> {
    let mut groups: Vec<((String, String), Vec<&Row>)> = Vec::new();
    for row in rows {
        let key = (row.get("scenario").to_owned(), row.get("case").to_owned());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push(row),
            None => groups.push((key, vec![row])),
        }
    }
    let mut out: Vec<Summary> = Vec::new();
    for ((scenario, _), group) in &groups {
        let measure = main_measure(scenario);
        let values: Vec<f64> = group
            .iter()
            .map(|r| r.number(measure).unwrap_or(0.0))
            .collect();
        let Some(median) = median_index(&values) else {
            continue;
        };
        let mut row = group[median].clone();
        row.set("runs", group.len());
        out.push(Summary {
            row,
            value: values[median],
        });
    }
    let case1: BTreeMap<String, f64> = out
        .iter()
        .filter(|s| s.row.get("case").starts_with('1'))
        .map(|s| (s.row.get("scenario").to_owned(), s.value))
        .collect();
    for summary in &mut out {
        if let Some(&base) = case1.get(summary.row.get("scenario"))
            && base > 0.0
        {
            let ratio = summary.value / base;
            summary.row.set("ratio_to_case1", format!("{ratio:.2}"));
        }
    }
    out
}

/// The columns of the summary CSV: [`COLUMNS`], then `runs` and `ratio_to_case1`.
pub fn summary_columns() -> Vec<&'static str> {
    let mut columns = COLUMNS.to_vec();
    columns.extend(["runs", "ratio_to_case1"]);
    columns
}

/// The Markdown table of a summary: one line per scenario and case.
pub fn markdown(summaries: &[Summary]) -> String {
    let mut md = String::from(
        "| scenario | case | main measure (median) | ratio to case 1 | p50 / p99 latency | \
         broker CPU | broker peak RSS | events received | runs |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in summaries {
        let r = &s.row;
        let scenario = r.get("scenario");
        let measure = match main_measure(scenario) {
            "conns_per_s" => format!("{:.0} conn/s", s.value),
            "bytes_per_conn" => format!("{:.0} B/conn", s.value),
            _ => format!("{:.0} msg/s", s.value),
        };
        let latency = match (r.number("p50_us"), r.number("p99_us")) {
            (Some(p50), Some(p99)) => format!("{} / {}", micros(p50), micros(p99)),
            _ => "-".to_owned(),
        };
        let cpu = match r.number("broker_cpu_pct") {
            Some(pct) => format!("{pct:.0}%"),
            None => "-".to_owned(),
        };
        let rss = match r.number("broker_peak_rss_kib") {
            Some(kib) => format!("{:.1} MiB", kib / 1024.0),
            None => "-".to_owned(),
        };
        let events = if !r.get("system_events_per_s").is_empty() {
            format!(
                "{} ({:.0}/s)",
                r.get("system_events"),
                r.number("system_events_per_s").unwrap_or(0.0)
            )
        } else if !r.get("presence_per_s").is_empty() {
            format!(
                "{} ({:.0}/s)",
                r.get("presence_events"),
                r.number("presence_per_s").unwrap_or(0.0)
            )
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            md,
            "| {scenario} | {} | {measure} | {} | {latency} | {cpu} | {rss} | {events} | {} |",
            r.get("case"),
            if r.get("ratio_to_case1").is_empty() {
                "-"
            } else {
                r.get("ratio_to_case1")
            },
            r.get("runs"),
        );
    }
    md
}

/// Microseconds as text: `850 µs` or `12.3 ms`.
fn micros(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Escapes text for SVG.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar chart of the throughput scenarios: one panel per scenario, one bar per
/// case, each panel with its own scale, labelled with msg/s and the ratio to case 1.
pub fn svg_chart(summaries: &[Summary], title: &str) -> String {
    const WIDTH: f64 = 900.0;
    const LABEL_W: f64 = 300.0;
    const BAR_H: f64 = 22.0;
    const GAP: f64 = 6.0;
    const PANEL_HEAD: f64 = 34.0;
    const COLORS: [&str; 6] = [
        "#7f7f7f", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#d62728",
    ];
    let mut scenarios: Vec<&str> = Vec::new();
    for s in summaries {
        let scenario = s.row.get("scenario");
        if main_measure(scenario) == "msgs_per_s" && !scenarios.contains(&scenario) {
            scenarios.push(scenario);
        }
    }
    let mut body = String::new();
    let mut y = 50.0;
    for scenario in &scenarios {
        let bars: Vec<&Summary> = summaries
            .iter()
            .filter(|s| s.row.get("scenario") == *scenario)
            .collect();
        let max = bars.iter().map(|s| s.value).fold(0.0, f64::max).max(1.0);
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.0}" font-size="15" font-weight="bold">{}</text>"#,
            y + 20.0,
            xml(scenario)
        );
        y += PANEL_HEAD;
        for bar in bars {
            let case = bar.row.get("case");
            let color_index = case
                .chars()
                .next()
                .and_then(|c| c.to_digit(10))
                .map_or(0, |d| (d as usize).saturating_sub(1) % COLORS.len());
            let w = (WIDTH - LABEL_W - 170.0) * bar.value / max;
            let ratio = bar.row.get("ratio_to_case1");
            let _ = writeln!(
                body,
                r#"<text x="{:.0}" y="{:.0}" font-size="12" text-anchor="end">{}</text>"#,
                LABEL_W - 8.0,
                y + 15.0,
                xml(case)
            );
            let _ = writeln!(
                body,
                r#"<rect x="{LABEL_W:.0}" y="{y:.0}" width="{w:.1}" height="{BAR_H:.0}" fill="{}"/>"#,
                COLORS[color_index]
            );
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.0}" font-size="12">{:.0} msg/s{}</text>"#,
                LABEL_W + w + 6.0,
                y + 15.0,
                bar.value,
                if ratio.is_empty() {
                    String::new()
                } else {
                    format!(" ({ratio}x)")
                }
            );
            y += BAR_H + GAP;
        }
        y += 10.0;
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="28" font-size="17" font-weight="bold">{}</text>
{body}</svg>
"#,
        y + 10.0,
        xml(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, case: &str, v: f64) -> Row {
        let mut r = Row::default();
        r.set("scenario", scenario);
        r.set("case", case);
        r.set("msgs_per_s", v);
        r
    }

    #[test]
    fn csv_round_trip_and_summary() {
        let rows = [
            row("a", "1 base", 100.0),
            row("a", "1 base", 300.0),
            row("a", "1 base", 200.0),
            row("a", "2 x,y", 50.0),
        ];
        let mut text = header() + "\n";
        for r in &rows {
            text += &(r.to_csv(&COLUMNS) + "\n");
        }
        let parsed = parse_csv(&text).unwrap();
        assert_eq!(parsed[3].get("case"), "2 x,y");
        let summary = summarize(&parsed);
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[0].value, 200.0);
        assert_eq!(summary[1].row.get("ratio_to_case1"), "0.25");
        assert!(markdown(&summary).contains("| a | 2 x,y | 50 msg/s | 0.25 |"));
        assert!(svg_chart(&summary, "t").starts_with("<svg"));
    }
}
