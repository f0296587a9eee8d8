//! The controller's HTTP endpoint as a kubelet and Prometheus use it: a GET
//! over a plain connection, and `/metrics` parsed by Prometheus's own scrape
//! parser (`tests/promparse`, a Go program around
//! github.com/prometheus/prometheus `model/textparse.New`, which picks the
//! parser by the response's Content-Type as the scrape loop does), so an
//! exposition Prometheus would refuse fails the test.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

use super::gobuild;

const GO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/promparse");

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` from `address` (HTTP/1.0: the server closes when done).
pub async fn get(address: &str, path: &str) -> Response {
    let (address, path) = (address.to_string(), path.to_string());
    tokio::task::spawn_blocking(move || {
        let addr = address
            .parse()
            .unwrap_or_else(|e| panic!("not an address {address}: {e}"));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connecting to {address}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a timeout");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("sending the request");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("reading the response");
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP response: {raw}"));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status: {head}"));
        let content_type = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-type")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_default();
        Response {
            status,
            content_type,
            body: body.to_string(),
        }
    })
    .await
    .expect("the request's thread")
}

/// One series of a scrape.
#[derive(Debug, Clone, Deserialize)]
pub struct Sample {
    pub name: String,
    /// The family's TYPE: gauge, counter, histogram…
    #[serde(rename = "type")]
    pub kind: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape of `/metrics`.
#[derive(Debug)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub body: String,
}

impl Scrape {
    /// Series of `name` whose labels include `labels`.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one series of `name` with exactly `labels`; panics if there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self
            .series(name, labels)
            .into_iter()
            .filter(|s| s.labels.len() == labels.len())
            .collect();
        match found.as_slice() {
            [one] => one.value,
            _ => panic!("{} series {name}{labels:?} in:\n{}", found.len(), self.body),
        }
    }

    /// The sum over the series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name, labels).iter().map(|s| s.value).sum()
    }
}

/// Scrapes `/metrics` at `address` and parses it as Prometheus would.
pub async fn scrape(address: &str) -> Scrape {
    let response = get(address, "/metrics").await;
    assert_eq!(response.status, 200, "{response:?}");
    let samples = parse(&response.content_type, &response.body)
        .unwrap_or_else(|e| panic!("Prometheus refuses the scrape: {e}\n{}", response.body));
    Scrape {
        samples,
        body: response.body,
    }
}

/// Parses a scrape's body by its Content-Type with Prometheus's parser.
pub fn parse(content_type: &str, body: &str) -> Result<Vec<Sample>, String> {
    let mut child = Command::new(binary())
        .arg(content_type)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promparse");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(body.as_bytes())
        .expect("writing to promparse");
    let output = child.wait_with_output().expect("waiting for promparse");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("promparse wrote {l}: {e}")))
        .collect())
}

fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| gobuild::build_cached("promparse", Path::new(GO_DIR), &["-trimpath", "-ldflags", "-s -w"]))
}
