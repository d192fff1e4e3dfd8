//! Real headless Chromium driven over the W3C WebDriver protocol: Debian's `chromium` and
//! `chromium-driver` (`/usr/bin/chromedriver`), which `scripts/test.sh` installs.
//!
//! [`Browser::start`] runs chromedriver on a free port and opens one session; every command
//! is one HTTP/1.1 request with a JSON body (hyper's client) as the WebDriver recommendation
//! (<https://www.w3.org/TR/webdriver2/>) defines them. A missing chromedriver or Chromium fails
//! with what to install.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use crate::ports::free_port;

/// The chromedriver of Debian's `chromium-driver`.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver and Chromium may take to start (a busy 2-core machine).
const START_WAIT: Duration = Duration::from_secs(60);

/// How long one WebDriver command may take.
const COMMAND_WAIT: Duration = Duration::from_secs(60);

/// How often [`Browser::wait_for`] evaluates its script.
const POLL: Duration = Duration::from_millis(50);

/// The window size of every session, in CSS pixels (the screenshots' size).
pub const WINDOW: (u32, u32) = (1400, 900);

/// One headless Chromium session; chromedriver and the browser end when it is dropped.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    pub async fn start() -> Browser {
        if !std::path::Path::new(CHROMEDRIVER).exists() {
            panic!(
                "{CHROMEDRIVER} is missing: this test needs Debian's `chromium` and \
                 `chromium-driver` (apt-get install chromium chromium-driver; scripts/test.sh does)"
            );
        }
        let port = free_port();
        let profile = tempfile::tempdir().expect("a temporary directory");
        let log = profile.path().join("chromedriver.log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Ok(status) = browser.request("GET", "/status", None).await
                && status["ready"] == true
            {
                break;
            }
            if let Ok(Some(exit)) = browser.driver.try_wait() {
                panic!(
                    "chromedriver exited at start ({exit}); its log: {}",
                    log.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer within {START_WAIT:?}"
            );
            sleep(POLL).await;
        }
        let (width, height) = WINDOW;
        let mut args = vec![
            "--headless".to_owned(),
            // As root (CI), Chromium refuses to start with its sandbox.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-background-networking".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!(
                "--user-data-dir={}",
                browser._profile.path().join("profile").display()
            ),
        ];
        // Chromium throttles timers of pages it thinks hidden; a headless one is never seen.
        args.push("--disable-background-timer-throttling".to_owned());
        args.push("--disable-renderer-backgrounding".to_owned());
        let mut options = json!({ "args": args });
        if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let created = browser
            .request(
                "POST",
                "/session",
                Some(json!({
                    "capabilities": { "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": options,
                    }}
                })),
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start Chromium ({e}): this test needs Debian's \
                     `chromium` (apt-get install chromium; scripts/test.sh does); \
                     chromedriver's log: {}",
                    log.display()
                )
            });
        browser.session = created["sessionId"]
            .as_str()
            .expect("a new session has an id")
            .to_owned();
        browser
    }

    /// One WebDriver command: `method` on `path` (below the server's root) with `body`; the
    /// `value` of the answer, or the WebDriver error as text.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let exchange = async {
            let stream = TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(connection);
            let body = body.map(|b| b.to_string()).unwrap_or_default();
            let request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", format!("127.0.0.1:{}", self.port))
                .header("content-type", "application/json; charset=utf-8")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| format!("request: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("{method} {path}: {e}"))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{method} {path}: body: {e}"))?
                .to_bytes();
            let answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{method} {path}: {status}, not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })?;
            let value = answer.get("value").cloned().unwrap_or(Value::Null);
            if !status.is_success() || value.get("error").is_some() {
                return Err(format!("{method} {path}: {status}: {value}"));
            }
            Ok(value)
        };
        tokio::time::timeout(COMMAND_WAIT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{method} {path}: no answer within {COMMAND_WAIT:?}"
                ))
            })
    }

    /// A command of this session (`path` below `/session/{id}`); panics on an error.
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        self.request(method, &full, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page and returns
    /// what it returns.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Evaluates `script` until `done` accepts its value, at most `within`; panics with `what`
    /// and the last value otherwise.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        script: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.eval(script, json!([])).await;
            if done(&value) {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("the page did not show {what} within {within:?}; last: {value}");
            }
            sleep(POLL).await;
        }
    }

    /// The WebDriver id of the element `css` selects; panics when there is none.
    pub async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        // The W3C element reference key.
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference for {css}: {found}"))
            .to_owned()
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    /// Clears the input `css` selects and types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command("POST", &format!("/element/{id}/clear"), Some(json!({})))
            .await;
        self.command(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The visible text of the element `css` selects.
    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        let text = self
            .command("GET", &format!("/element/{id}/text"), None)
            .await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a screenshot is base64 text"))
            .expect("a screenshot decodes")
    }

    /// Ends the session (closing Chromium) and chromedriver.
    pub async fn quit(mut self) {
        let _ = self
            .request("DELETE", &format!("/session/{}", self.session), None)
            .await;
        let _ = self.driver.kill().await;
    }
}
