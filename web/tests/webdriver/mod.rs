//! A small W3C WebDriver client over plain HTTP (reqwest) for Debian's chromedriver and
//! headless Chromium: start the driver, open a session, navigate, find, click, type,
//! read text, run a script, take screenshots. Only what the console's browser test uses.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};

/// The W3C element reference key.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Flags for headless Chromium as root on a build machine: no sandbox (root), no GPU, and
/// nothing that talks to the network on its own.
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1360,1300",
];

/// A running chromedriver and one browser session; both end on drop.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("base", &self.base).finish()
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Finds an executable on PATH or at the usual Debian location.
pub fn which(name: &str, debian_path: &str) -> Option<std::path::PathBuf> {
    if Path::new(debian_path).exists() {
        return Some(debian_path.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.exists())
    })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    pub async fn start() -> Result<Self> {
        let driver_bin = which("chromedriver", "/usr/bin/chromedriver")
            .ok_or("chromedriver not found: install Debian's chromium-driver (make setup)")?;
        let chromium = which("chromium", "/usr/bin/chromium")
            .ok_or("chromium not found: install Debian's chromium (make setup)")?;
        let port = free_port()?;
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::Builder::new()
            .prefix("hostplug-chromium-")
            .tempdir()?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The console under test serves a self-signed certificate made at start.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let mut browser = Self {
            http,
            base,
            session: String::new(),
            driver,
            _profile: profile,
        };
        let value = browser
            .call(reqwest::Method::POST, "/session", Some(caps))
            .await?;
        browser.session = value["sessionId"]
            .as_str()
            .ok_or("no session id")?
            .to_owned();
        Ok(browser)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let value: Value = response.json().await?;
        if !status.is_success() {
            return Err(
                format!("WebDriver {path}: {status}: {}", value["value"]["message"]).into(),
            );
        }
        Ok(value["value"].clone())
    }

    async fn session_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let path = format!("/session/{}{}", self.session, path);
        self.call(method, &path, body).await
    }

    /// Opens a URL.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.session_call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .map(drop)
    }

    /// The current URL.
    pub async fn url(&self) -> Result<String> {
        let v = self
            .session_call(reqwest::Method::GET, "/url", None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The page's HTML.
    pub async fn source(&self) -> Result<String> {
        let v = self
            .session_call(reqwest::Method::GET, "/source", None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Finds an element by CSS selector.
    pub async fn find(&self, css: &str) -> Result<Element<'_>> {
        let v = self
            .session_call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .map_err(|e| format!("finding {css}: {e}"))?;
        let id = v[ELEMENT_KEY].as_str().ok_or("no element id")?.to_owned();
        Ok(Element { browser: self, id })
    }

    /// Every element matching a CSS selector, in document order.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>> {
        let v = self
            .session_call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .map_err(|e| format!("finding {css}: {e}"))?;
        v.as_array()
            .ok_or("no element list")?
            .iter()
            .map(|e| {
                let id = e[ELEMENT_KEY].as_str().ok_or("no element id")?.to_owned();
                Ok(Element { browser: self, id })
            })
            .collect()
    }

    /// Runs a script in the page (as a user with the developer tools could), e.g. to
    /// send what the page's own controls never would.
    pub async fn execute(&self, script: &str) -> Result<Value> {
        self.session_call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Sets the browser window's size in CSS pixels (the viewport of headless Chromium),
    /// e.g. 1366 wide, the most common laptop screen.
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        self.session_call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await
        .map(drop)
    }

    /// Waits until an element matching `css` exists, up to `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element<'_>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.find(css).await {
                Ok(element) => return Ok(element),
                Err(err) if Instant::now() > deadline => return Err(err),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Accepts a `confirm()` dialog, if one is open.
    pub async fn accept_dialog(&self) -> Result<()> {
        self.session_call(reqwest::Method::POST, "/alert/accept", Some(json!({})))
            .await
            .map(drop)
    }

    /// Saves a PNG screenshot of the viewport.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self
            .session_call(reqwest::Method::GET, "/screenshot", None)
            .await?;
        let png =
            base64::engine::general_purpose::STANDARD.decode(v.as_str().ok_or("no image")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Best effort: ask chromedriver to close Chromium, then stop the driver.
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = http_delete(&url);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A raw HTTP/1.1 DELETE, usable in `Drop` where no async runtime can be entered.
fn http_delete(url: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
    Ok(())
}

/// An element on the page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    /// Clicks it.
    pub async fn click(&self) -> Result<()> {
        self.browser
            .session_call(
                reqwest::Method::POST,
                &format!("/element/{}/click", self.id),
                Some(json!({})),
            )
            .await
            .map(drop)
    }

    /// Clears it and types `text`.
    pub async fn fill(&self, text: &str) -> Result<()> {
        self.browser
            .session_call(
                reqwest::Method::POST,
                &format!("/element/{}/clear", self.id),
                Some(json!({})),
            )
            .await?;
        self.browser
            .session_call(
                reqwest::Method::POST,
                &format!("/element/{}/value", self.id),
                Some(json!({"text": text})),
            )
            .await
            .map(drop)
    }

    /// Its rendered text.
    pub async fn text(&self) -> Result<String> {
        let v = self
            .browser
            .session_call(
                reqwest::Method::GET,
                &format!("/element/{}/text", self.id),
                None,
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }
}
