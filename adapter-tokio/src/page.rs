//! The live page of the HTTP API (docs/live-page.md): `GET /` shows who is online, the recent
//! events with a kind filter, the counters, and whether a client acknowledged a message.
//!
//! The page is three small hand-written files (`page/assets/`: HTML, CSS, JavaScript) compiled
//! into the binary; it loads nothing from anywhere else (its Content-Security-Policy forbids
//! it). It reads the API: `/api/v1/clients` and `/api/v1/events` (the HTTP module's), and the
//! two routes of this module:
//!
//! - `GET /api/v1/stats`: the counters of `GET /metrics` as JSON, `{"families": [{"name",
//!   "type", "help", "samples": [{"labels": {..}, "value": n}]}]}` (a sample of a histogram
//!   also names itself: `"name": "..._bucket"`).
//! - `GET /api/v1/acks?product_id=P&message_id=M[&client_id=C]`: the recent `msgack` events of
//!   message (P, M), by client C when given, from the bounded [`AckTable`]: `{"acked": bool,
//!   "acks": [event, ...], "matched", "held", "capacity", "evicted", "oldest_ts"}`.
//!
//! [`routes`] builds them for any state that is a [`PageSource`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub mod acks;

pub use acks::AckTable;

/// The page.
const INDEX_HTML: &str = include_str!("page/assets/index.html");
/// Its styles.
const PAGE_CSS: &str = include_str!("page/assets/page.css");
/// Its script.
const PAGE_JS: &str = include_str!("page/assets/page.js");

/// What the page's assets may load: only from this server, no inline code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The paths of the page's assets; they carry no data, so they need no token (the page asks for
/// one when the API answers 401).
pub const ASSET_PATHS: [&str; 3] = ["/", "/page.css", "/page.js"];

/// Whether `path` is one of [`ASSET_PATHS`].
pub fn is_asset(path: &str) -> bool {
    ASSET_PATHS.contains(&path)
}

/// What the page's routes read from the server.
pub trait PageSource: Send + Sync + 'static {
    /// Every counter in the Prometheus text format, as `GET /metrics` serves them.
    fn counters(&self) -> String;
    /// The table of recent acknowledgements.
    fn acks(&self) -> &AckTable;
}

/// The page and its routes: `/`, `/page.css`, `/page.js`, `/api/v1/stats`, `/api/v1/acks`.
pub fn routes<S: PageSource>() -> Router<Arc<S>> {
    Router::new()
        .route("/", get(index))
        .route("/page.css", get(css))
        .route("/page.js", get(js))
        .route("/api/v1/stats", get(stats::<S>))
        .route("/api/v1/acks", get(acks_lookup::<S>))
}

/// A static asset of the page.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

/// A JSON error: `{"error": message}` with `status`, as the rest of the API answers (the HTTP
/// module's own helper cannot be named here: it mounts these routes).
fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `GET /api/v1/stats`.
async fn stats<S: PageSource>(State(source): State<Arc<S>>) -> Response {
    axum::Json(counters_json(&source.counters())).into_response()
}

/// The query of `GET /api/v1/acks`.
#[derive(Debug, Deserialize)]
struct AckQuery {
    product_id: String,
    message_id: String,
    client_id: Option<String>,
}

/// `GET /api/v1/acks`.
async fn acks_lookup<S: PageSource>(
    State(source): State<Arc<S>>,
    query: Result<Query<AckQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "product_id and message_id are required (client_id is optional)",
        );
    };
    if source.acks().is_off() {
        return error(
            StatusCode::NOT_FOUND,
            "the ack table is off (set http.ack_table, e.g. 10000, to keep recent acknowledgements)",
        );
    }
    let client = q.client_id.as_deref().filter(|c| !c.is_empty());
    let found = source.acks().lookup(&q.product_id, &q.message_id, client);
    // The table holds events our own encoder wrote: each parses (one that would not is left
    // out rather than failing the answer).
    let acks: Vec<Value> = found
        .acks
        .iter()
        .filter_map(|json| serde_json::from_slice(json).ok())
        .collect();
    axum::Json(json!({
        "product_id": q.product_id,
        "message_id": q.message_id,
        "client_id": client,
        "acked": found.matched > 0,
        "acks": acks,
        "matched": found.matched,
        "held": found.held,
        "capacity": found.capacity,
        "evicted": found.evicted,
        "oldest_ts": found.oldest_ts,
    }))
    .into_response()
}

/// The Prometheus text format (version 0.0.4) as JSON: one object per family, in order.
pub fn counters_json(text: &str) -> Value {
    let mut families: Vec<Map<String, Value>> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let mut family = Map::new();
            family.insert("name".into(), name.into());
            family.insert("type".into(), "untyped".into());
            family.insert("help".into(), help.into());
            family.insert("samples".into(), Value::Array(Vec::new()));
            families.push(family);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let (Some((_, kind)), Some(family)) = (rest.split_once(' '), families.last_mut()) {
                family.insert("type".into(), kind.into());
            }
        } else if !line.is_empty()
            && !line.starts_with('#')
            && let Some((name, labels, value)) = sample(line)
        {
            let Some(family) = families.last_mut() else {
                continue;
            };
            let mut entry = Map::new();
            if family.get("name").and_then(Value::as_str) != Some(name) {
                entry.insert("name".into(), name.into());
            }
            entry.insert("labels".into(), Value::Object(labels));
            entry.insert("value".into(), value);
            if let Some(Value::Array(samples)) = family.get_mut("samples") {
                samples.push(Value::Object(entry));
            }
        }
    }
    json!({ "families": families })
}

/// One sample line: `name{label="value",...} number`; `None` when malformed.
fn sample(line: &str) -> Option<(&str, Map<String, Value>, Value)> {
    let mut labels = Map::new();
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) if line.as_bytes()[i] == b'{' => {
            let mut rest = &line[i + 1..];
            loop {
                rest = rest.trim_start_matches(',');
                if let Some(after) = rest.strip_prefix('}') {
                    break (&line[..i], after);
                }
                let (key, after) = rest.split_once("=\"")?;
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next()? {
                        (_, '\\') => match chars.next()?.1 {
                            'n' => value.push('\n'),
                            c => value.push(c),
                        },
                        (j, '"') => break j,
                        (_, c) => value.push(c),
                    }
                };
                labels.insert(key.to_owned(), value.into());
                rest = &after[end + 1..];
            }
        }
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    let number = rest.split_whitespace().next()?;
    let value = if let Ok(n) = number.parse::<u64>() {
        Value::from(n)
    } else {
        // `+Inf`, `NaN` and the like have no JSON form: null.
        number.parse::<f64>().ok().map_or(Value::Null, Value::from)
    };
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_text_becomes_families_of_samples() {
        let text = "# HELP activity_a Things.\n# TYPE activity_a counter\nactivity_a 3\n\
                    # HELP activity_b By kind.\n# TYPE activity_b counter\n\
                    activity_b{kind=\"x\"} 1\nactivity_b{kind=\"y \\\"q\\\"\",z=\"\"} 2\n\
                    # HELP activity_h Latency.\n# TYPE activity_h histogram\n\
                    activity_h_bucket{le=\"0.5\"} 4\nactivity_h_bucket{le=\"+Inf\"} 5\n\
                    activity_h_sum 1.25\nactivity_h_count 5\n";
        assert_eq!(
            counters_json(text),
            json!({"families": [
                {"name": "activity_a", "type": "counter", "help": "Things.",
                 "samples": [{"labels": {}, "value": 3}]},
                {"name": "activity_b", "type": "counter", "help": "By kind.",
                 "samples": [{"labels": {"kind": "x"}, "value": 1},
                             {"labels": {"kind": "y \"q\"", "z": ""}, "value": 2}]},
                {"name": "activity_h", "type": "histogram", "help": "Latency.",
                 "samples": [{"name": "activity_h_bucket", "labels": {"le": "0.5"}, "value": 4},
                             {"name": "activity_h_bucket", "labels": {"le": "+Inf"}, "value": 5},
                             {"name": "activity_h_sum", "labels": {}, "value": 1.25},
                             {"name": "activity_h_count", "labels": {}, "value": 5}]},
            ]})
        );
    }

    #[test]
    fn every_counter_of_the_broker_appears() {
        let metrics = crate::metrics::Metrics::default();
        metrics.connection_opened();
        let text = metrics.render();
        let json = counters_json(&text);
        let families = json["families"].as_array().expect("families");
        let samples: usize = families
            .iter()
            .map(|f| f["samples"].as_array().expect("samples").len())
            .sum();
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        assert_eq!(samples, lines, "every sample line is in the JSON");
        assert_eq!(families[0]["name"], "activity_connections_current");
        assert_eq!(families[0]["samples"][0]["value"], 1);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        for line in ["x{a=\"1\" 2", "x{a=1} 2", "x", "x{a=\"1\"} "] {
            assert_eq!(sample(line), None, "{line}");
        }
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for asset in [INDEX_HTML, PAGE_CSS, PAGE_JS] {
            for needle in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!asset.contains(needle), "an asset contains {needle}");
            }
        }
    }
}
