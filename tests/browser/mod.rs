//! Headless Chromium (Debian's `chromium`) driven over the Chrome DevTools Protocol for
//! the UI tests: JSON-RPC on one websocket, one page target, flattened session.
//!
//! Only what the tests use: navigate and wait for the load event, evaluate JavaScript,
//! screenshots, and the events they assert on — console errors, uncaught exceptions,
//! browser log entries (CSP violations land there) and every network request (to prove
//! there is no polling). The browser runs inside the lab's router namespace, so it
//! reaches netmon on the router's loopback exactly like `Lab::http` does; its profile
//! lives in a temporary directory removed on drop, and the process is killed on drop.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::common::{Lab, wait_for};

pub struct Browser {
    child: Child,
    profile: PathBuf,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    /// Every event received so far, in order (method + params).
    pub events: Vec<Value>,
}

impl Browser {
    /// Starts Chromium in the lab's router namespace with a 1280×900 window (or
    /// `width`×`height`) and opens one blank page.
    pub fn start(lab: &Lab, width: u32, height: u32) -> Browser {
        let profile = lab
            .dir
            .join(format!("chromium-{}", crate::common::now_ms()));
        // Chromium's own temporary directory (`org.chromium.Chromium.*`) goes inside the
        // profile: it is killed, not asked to quit, and would leave one in /tmp per run.
        let tmp = profile.join("tmp");
        std::fs::create_dir_all(&tmp).expect("browser profile dir");
        let log = std::fs::File::create(lab.dir.join("chromium.log")).expect("chromium log");
        let child = Command::new("ip")
            .env("TMPDIR", &tmp)
            .args(["netns", "exec", &lab.ns("rtr"), "chromium"])
            .args([
                "--headless=new",
                // Root in a namespace without user namespaces for the sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn chromium (apt-get install chromium)");
        let port_file = profile.join("DevToolsActivePort");
        let (port, path) = wait_for(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&port_file).ok()?;
            let mut lines = text.lines();
            let port: u16 = lines.next()?.trim().parse().ok()?;
            Some((port, lines.next()?.trim().to_owned()))
        })
        .expect("chromium wrote no DevToolsActivePort within 30 s (see chromium.log)");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let stream = lab.connect_in("rtr", addr).expect("connect to chromium");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("devtools handshake");
        // From now on reads return every 200 ms so waits can check their deadlines.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut b = Browser {
            child,
            profile,
            ws,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
        };
        let target = b.browser_call("Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = b.browser_call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        b.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            b.call(domain, json!({}));
        }
        b
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> u64 {
        self.next_id += 1;
        let mut msg = json!({ "id": self.next_id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("devtools send {method}: {e}"));
        self.next_id
    }

    /// Reads one message (None on a read timeout); events are recorded.
    fn recv(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(&text).expect("devtools JSON");
                if v.get("method").is_some() {
                    self.events.push(v.clone());
                }
                Some(v)
            }
            Ok(_) => Some(Value::Null),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("devtools read: {e}"),
        }
    }

    fn wait_reply(&mut self, id: u64, method: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(v) = self.recv()
                && v["id"].as_u64() == Some(id)
            {
                if let Some(err) = v.get("error") {
                    panic!("devtools {method}: {err}");
                }
                return v["result"].clone();
            }
        }
        panic!("devtools {method}: no reply within 30 s");
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params, None);
        self.wait_reply(id, method)
    }

    /// A command on the page's session; its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        let id = self.send(method, params, Some(&session));
        self.wait_reply(id, method)
    }

    /// Reads events for `d` (they land in [`Browser::events`]).
    pub fn pump(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.recv();
        }
    }

    /// Opens `url` and waits for its load event.
    pub fn goto(&mut self, url: &str) {
        let seen = self.events.len();
        let r = self.call("Page.navigate", json!({ "url": url }));
        if let Some(err) = r.get("errorText") {
            panic!("navigate {url}: {err}");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.events[seen..]
                .iter()
                .any(|e| e["method"] == "Page.loadEventFired")
            {
                return;
            }
            assert!(Instant::now() < deadline, "{url}: no load event in 20 s");
            self.recv();
        }
    }

    /// Evaluates `expr` in the page (promises awaited); its JSON value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("evaluate {expr}: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is JSON `true`.
    pub fn wait_js(&mut self, expr: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.eval(expr) == json!(true) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            self.pump(Duration::from_millis(100));
        }
    }

    /// Clicks the first element matching `selector` (panics when there is none) and,
    /// when the click navigates, waits for the new page's load event.
    pub fn click(&mut self, selector: &str, navigates: bool) {
        let seen = self.events.len();
        let sel = serde_json::to_string(selector).expect("selector");
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.click(); return true; }})()"
        ));
        assert_eq!(found, json!(true), "no element matches {selector}");
        if navigates {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !self.events[seen..]
                .iter()
                .any(|e| e["method"] == "Page.loadEventFired")
            {
                assert!(
                    Instant::now() < deadline,
                    "click {selector}: no load in 20 s"
                );
                self.recv();
            }
        }
    }

    /// Sets an input's value as typing would (input + change events).
    pub fn fill(&mut self, selector: &str, value: &str) {
        let sel = serde_json::to_string(selector).expect("selector");
        let val = serde_json::to_string(value).expect("value");
        let ok = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.focus(); e.value = {val};
               e.dispatchEvent(new Event('input', {{bubbles: true}})); e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()"
        ));
        assert_eq!(ok, json!(true), "no input matches {selector}");
    }

    /// The whole page as PNG, written to `path`. The clip is the page's own size: without
    /// it Chrome drops the vertical scrollbar for the capture but keeps the narrower width,
    /// cutting off the right edge.
    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let size = self.call("Page.getLayoutMetrics", json!({}))["cssContentSize"].clone();
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true, "clip": {
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1 } }),
        );
        let data = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, data).expect("write screenshot");
    }

    /// Console errors, uncaught exceptions and browser log errors (CSP violations,
    /// failed loads) since event `from`, as readable lines.
    pub fn errors_since(&self, from: usize) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.events[from.min(self.events.len())..] {
            let p = &e["params"];
            match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => out.push(format!(
                    "exception: {}",
                    p["exceptionDetails"]["exception"]["description"]
                        .as_str()
                        .unwrap_or_else(|| p["exceptionDetails"]["text"].as_str().unwrap_or("?"))
                )),
                Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                    out.push(format!("console.error: {}", p["args"]))
                }
                Some("Log.entryAdded") if p["entry"]["level"] == "error" => out.push(format!(
                    "log: {} {}",
                    p["entry"]["text"].as_str().unwrap_or("?"),
                    p["entry"]["url"].as_str().unwrap_or("")
                )),
                _ => {}
            }
        }
        out
    }

    /// URLs of the requests the page started since event `from`.
    pub fn requests_since(&self, from: usize) -> Vec<String> {
        self.events[from.min(self.events.len())..]
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `ip netns exec` execs chromium, so the child is chromium itself; its helpers
        // (zygote, renderers) die with it. Give them a moment before removing the profile.
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
