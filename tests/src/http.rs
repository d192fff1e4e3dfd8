//! A real HTTP client for the HTTP API tests: Debian's `curl`, one process per request or
//! per event stream.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::WAIT;

/// The answer to one request.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("a JSON body ({e}), got {:?}", self.body))
    }
}

/// `curl` with `args` and the URL `url`; the status and body.
pub async fn curl(url: &str, args: &[&str]) -> HttpResponse {
    let out = tokio::time::timeout(
        WAIT,
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("curl answers in time")
    .expect("curl runs (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("curl printed no status: {text:?} {out:?}"));
    HttpResponse {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_owned(),
    }
}

/// `GET http://ADDR{path}` with curl.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    curl(&format!("http://{addr}{path}"), &[]).await
}

/// One Server-Sent Event, or a comment line.
#[derive(Debug, Clone, Default)]
pub struct SseItem {
    /// The `id:` line.
    pub id: Option<u64>,
    /// The `event:` line.
    pub event: Option<String>,
    /// The `data:` line.
    pub data: Option<String>,
    /// A comment line (`: ...`), when the block was one.
    pub comment: Option<String>,
}

impl SseItem {
    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.data.as_deref().unwrap_or("null")).expect("JSON data")
    }
}

/// An event stream read with `curl -N`.
pub struct SseStream {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl SseStream {
    /// Opens `url` with curl and `args` (headers, say).
    pub fn open(url: &str, args: &[&str]) -> SseStream {
        let mut child = Command::new("curl")
            .args(["-sSN", "-H", "Accept: text/event-stream"])
            .args(args)
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("curl runs (apt-get install curl)");
        let stdout = child.stdout.take().expect("piped stdout");
        SseStream {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next event or comment block, within `within`; `None` when none came.
    pub async fn try_next(&mut self, within: Duration) -> Option<SseItem> {
        let read = async {
            let mut item = SseItem::default();
            let mut any = false;
            while let Some(line) = self.lines.next_line().await.ok()? {
                if line.is_empty() {
                    if any {
                        return Some(item);
                    }
                    continue;
                }
                any = true;
                if let Some(c) = line.strip_prefix(':') {
                    item.comment = Some(c.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("id:") {
                    item.id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    item.event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    item.data = Some(v.trim_start().to_owned());
                }
            }
            None
        };
        tokio::time::timeout(within, read).await.ok().flatten()
    }

    /// The next event (comments and keep-alives skipped) that `want` accepts, within [`WAIT`].
    pub async fn next_event(&mut self, what: &str, want: impl Fn(&SseItem) -> bool) -> SseItem {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next(left).await {
                Some(item) if item.event.is_some() && want(&item) => return item,
                Some(item) => seen.push(item),
                None => panic!("no SSE event {what} within {WAIT:?}; seen: {seen:?}"),
            }
        }
    }

    /// Ends the stream (kills curl).
    pub async fn close(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Polls `GET http://ADDR{path}` until its JSON satisfies `want` (within [`WAIT`]); the last
/// JSON.
pub async fn wait_json(
    addr: SocketAddr,
    path: &str,
    what: &str,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = http_get(addr, path).await;
        let json = response.json();
        if want(&json) {
            return json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: GET {path} still says {json}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One sample of the HTTP listener's `/metrics`, by exact series name.
pub async fn http_metric(addr: SocketAddr, series: &str) -> u64 {
    let text = http_get(addr, "/metrics").await.body;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Polls [`http_metric`] until `want` accepts it (within [`WAIT`]); the last value.
pub async fn wait_metric(addr: SocketAddr, series: &str, want: impl Fn(u64) -> bool) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = http_metric(addr, series).await;
        if want(value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is still {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
