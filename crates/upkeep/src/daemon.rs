//! The CLI and the running daemon.
//!
//! At start `upkeep serve` writes a **local credential** beside the master key
//! (`<key file stem>.daemon.key`, e.g. `upkeep.daemon.key`, mode 0600): a random
//! 256-bit key, the address the daemon listens on and its pid. Only the key's digest is
//! registered, in the daemon's memory, as an `admin` key: it is not a stored API key
//! (`apikey list` does not show it) and it dies with the daemon. `status`, `token`,
//! `exec`, `renew` and `reload` read the file and ask the daemon; with no daemon
//! running they say so once on stderr and work on the store.
//!
//! The credential is only sent to a loopback address or the configured `[server]
//! listen` address, never through a proxy, never after a redirect, and only when the
//! file is a regular file of this user with no access for group or others.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use upkeep_core::Secret;
use upkeep_core::config::Config;

use crate::commands::UsageError;

/// Where the daemon of `config` writes its local credential: beside the master key
/// file, named after it (`upkeep.key` -> `upkeep.daemon.key`), so instances with their
/// own key files side by side do not share one.
pub fn credential_path(config: &Config) -> PathBuf {
    let key = &config.store.key_file;
    let stem = key
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "upkeep".into());
    key.with_file_name(format!("{stem}.daemon.key"))
}

/// The credential the daemon wrote; removed again when the daemon stops.
pub struct LocalCredential {
    path: PathBuf,
    key: Secret,
}

impl LocalCredential {
    /// Makes a fresh key, writes the file (0600, atomically) and returns it with the
    /// digest the daemon accepts.
    pub fn create(path: &Path, address: SocketAddr) -> Result<(Self, [u8; 32])> {
        let raw: [u8; 32] = rand::random();
        let key = Secret::new(format!(
            "upkl_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        ));
        let digest: [u8; 32] = sha2::Sha256::digest(key.expose().as_bytes()).into();
        let body = json!({
            "address": address.to_string(),
            "pid": std::process::id(),
            "key": key.expose(),
        });
        upkeep_store::write_atomic(path, body.to_string().as_bytes())
            .with_context(|| format!("cannot write the local credential {}", path.display()))?;
        Ok((
            Self {
                path: path.to_path_buf(),
                key,
            },
            digest,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it still holds this daemon's key (a second daemon started on
    /// the same files may have replaced it).
    pub fn remove(&self) {
        let ours = std::fs::read(&self.path).ok().and_then(|b| {
            serde_json::from_slice::<Value>(&b)
                .ok()
                .map(|v| v["key"].as_str() == Some(self.key.expose()))
        });
        if ours == Some(true) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A client of the running daemon's API, holding the local credential.
pub struct DaemonClient {
    base: String,
    key: Secret,
    http: reqwest::Client,
}

/// What the CLI found when it looked for the daemon.
pub enum Found {
    Running(DaemonClient),
    /// No daemon to ask; the reason, for the one line on stderr.
    NotRunning(String),
}

impl Found {
    /// The client, or `None` after saying on stderr (once per command) why the store is
    /// read instead.
    pub fn or_say(self) -> Option<DaemonClient> {
        match self {
            Found::Running(c) => Some(c),
            Found::NotRunning(why) => {
                eprintln!("upkeep: {why}: reading the store");
                None
            }
        }
    }
}

/// The current user id (the owner of `/proc/self`), without unsafe code.
fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Reads the credential file and checks that the daemon answers. A file that others
/// could read or write, or that belongs to another user, is an error (not silently
/// skipped: it means someone tampered with it).
pub async fn find(config: &Config) -> Result<Found> {
    let path = credential_path(config);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Found::NotRunning(format!(
                "no daemon running (no {})",
                path.display()
            )));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mode = meta.permissions().mode() & 0o777;
    if !meta.file_type().is_file() {
        return Err(UsageError(format!(
            "refusing to read the local credential {}: not a regular file; remove it and restart the daemon",
            path.display()
        ))
        .into());
    }
    if mode & 0o077 != 0 || current_uid().is_some_and(|uid| uid != meta.uid()) {
        return Err(UsageError(format!(
            "refusing to read the local credential {}: mode {mode:o}, owner uid {}; it must be \
             0600 and yours (the daemon writes it so): remove it and restart the daemon",
            path.display(),
            meta.uid()
        ))
        .into());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "{} is not a local credential ({e}); remove it and restart the daemon",
            path.display()
        ))
    })?;
    let (Some(address), Some(key)) = (v["address"].as_str(), v["key"].as_str()) else {
        return Err(UsageError(format!(
            "{} lacks the address or key; remove it and restart the daemon",
            path.display()
        ))
        .into());
    };
    if let Some(pid) = v["pid"].as_u64()
        && Path::new("/proc/self").exists()
        && !Path::new(&format!("/proc/{pid}")).exists()
    {
        return Ok(Found::NotRunning(format!(
            "no daemon running (pid {pid}, which wrote {}, is gone)",
            path.display()
        )));
    }
    let address = allowed_address(address, config)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(2))
        .build()
        .context("cannot build the HTTP client")?;
    let client = DaemonClient {
        base: format!("http://{address}"),
        key: Secret::new(key),
        http,
    };
    // A cheap call that proves the daemon takes this credential.
    match client
        .call(
            reqwest::Method::GET,
            "/api/v1/scheduler",
            Some(Duration::from_secs(5)),
        )
        .await
    {
        Ok(_) => Ok(Found::Running(client)),
        Err(e) => match api_error(&e) {
            Some(a) if a.status == 401 => Ok(Found::NotRunning(format!(
                "the daemon on {address} does not take the local credential in {} (written by \
                 another daemon?)",
                path.display()
            ))),
            Some(_) => Err(e),
            None => Ok(Found::NotRunning(format!(
                "no daemon running (nothing answers on {address})"
            ))),
        },
    }
}

/// The address the credential may be sent to: loopback, or the configured listen
/// address. An unspecified address (`0.0.0.0`) means this host's loopback.
fn allowed_address(recorded: &str, config: &Config) -> Result<SocketAddr> {
    let mut addr: SocketAddr = recorded.parse().map_err(|_| {
        UsageError(format!(
            "the local credential names `{recorded}`, not an address:port; remove it and restart the daemon"
        ))
    })?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let configured = config.server.listen;
    if addr.ip().is_loopback() || configured == addr {
        Ok(addr)
    } else {
        Err(UsageError(format!(
            "the local credential names {addr}, which is neither loopback nor [server] listen \
             ({configured}); not sending the credential there"
        ))
        .into())
    }
}

/// An error answer of the API: its HTTP status and message.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for ApiError {}

impl DaemonClient {
    pub fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.key.expose());
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("the daemon on {} did not answer", self.address()))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let err = &body["error"];
        Err(ApiError {
            status: status.as_u16(),
            message: err["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("the daemon answered {status}")),
        }
        .into())
    }

    /// Opens a websocket on the daemon (`path` with its query), with the local credential.
    pub async fn websocket(
        &self,
        path: &str,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    > {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let url = format!("ws://{}{path}", self.address());
        let mut req = url
            .as_str()
            .into_client_request()
            .with_context(|| format!("{url} is not a websocket URL"))?;
        let auth = format!("Bearer {}", self.key.expose())
            .parse()
            .context("the local credential is not a valid header value")?;
        req.headers_mut().insert("authorization", auth);
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body: Value = resp
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err(ApiError {
                    status: resp.status().as_u16(),
                    message: body["error"]["message"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("the daemon answered {}", resp.status())),
                }
                .into())
            }
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("the daemon on {} did not answer", self.address()))),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, Some(Duration::from_secs(15)))
            .await
    }

    /// A POST that may take long (a renewal answers with its outcome).
    pub async fn post(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::POST, path, None).await
    }
}

/// The API error inside `e`, if the daemon answered with one.
pub fn api_error(e: &anyhow::Error) -> Option<&ApiError> {
    e.downcast_ref::<ApiError>()
}
