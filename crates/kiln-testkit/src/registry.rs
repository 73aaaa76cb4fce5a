//! The real Distribution registry (`docker-registry serve`), on a free
//! loopback port with filesystem storage in a temporary directory.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::need::{Tool, need};
use crate::pki::{IssuedCert, TestCa};
use crate::token::{TOKEN_ISSUER, TOKEN_SERVICE, TokenAuth, TokenServer};

/// How to run the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Basic auth with one account (an htpasswd file made with `htpasswd -B`).
    pub htpasswd: Option<(String, String)>,
    /// Serve HTTPS with a certificate from a fresh test CA.
    pub tls: Option<TlsOptions>,
    /// Bearer token auth against a [`TokenServer`] started with the registry.
    pub token_auth: Option<TokenAuth>,
}

/// HTTPS for the registry.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The names the certificate is valid for (`127.0.0.1` and `localhost`
    /// are always added).
    pub dns_names: Vec<String>,
    /// Require a client certificate signed by the same CA; one is issued
    /// and given by [`Registry::client_cert`].
    pub client_auth: bool,
}

/// A running registry, killed (and its files removed) on drop.
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    tls: bool,
    client_cert: Option<IssuedCert>,
    token_server: Option<TokenServer>,
}

impl Registry {
    /// Starts a registry and waits until `/v2/` answers. `None` when no
    /// registry binary is installed: the test is skipped, by the rule of
    /// [`need`](crate::need).
    pub fn start(options: RegistryOptions) -> Option<Registry> {
        let binary = need(Tool::Registry)?;
        if options.htpasswd.is_some() {
            need(Tool::Htpasswd)?;
        }
        // A port picked free may be taken before the registry binds it: try again.
        let mut last = String::new();
        for _ in 0..3 {
            match Registry::try_start(&binary, &options) {
                Ok(r) => return Some(r),
                Err(e) => last = e,
            }
        }
        panic!("the registry did not start: {last}");
    }

    fn try_start(binary: &Path, options: &RegistryOptions) -> Result<Registry, String> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-registry-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let root = dir.path();
        let write = |name: &str, text: &str| -> Result<PathBuf, String> {
            let p = root.join(name);
            fs_err::write(&p, text).map_err(|e| e.to_string())?;
            Ok(p)
        };

        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: kiln-testkit-secret\n",
            data = root.join("data").display(),
        );
        let mut client_cert = None;
        if let Some(tls) = &options.tls {
            let ca = TestCa::new();
            let mut names: Vec<&str> = tls.dns_names.iter().map(String::as_str).collect();
            names.extend(["localhost", "127.0.0.1"]);
            let cert = ca.issue(&names);
            write("ca.pem", ca.cert_pem())?;
            let cert_path = write("server.pem", &cert.cert_pem)?;
            let key_path = write("server-key.pem", &cert.key_pem)?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert_path.display(),
                key_path.display()
            ));
            if tls.client_auth {
                config.push_str(&format!(
                    "    clientcas:\n      - {}\n",
                    root.join("ca.pem").display()
                ));
                client_cert = Some(ca.issue_client("kiln-test-client"));
            }
        }
        let mut token_server = None;
        if let Some((user, password)) = &options.htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .map_err(|e| format!("htpasswd: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "htpasswd: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let path = write("htpasswd", &String::from_utf8_lossy(&out.stdout))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-testkit\n    path: {}\n",
                path.display()
            ));
        } else if let Some(auth) = &options.token_auth {
            let server = TokenServer::start(auth.clone());
            let bundle = write("token-root.pem", server.root_cert_pem())?;
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                server.realm(),
                bundle.display()
            ));
            token_server = Some(server);
        }
        let config_path = write("config.yml", &config)?;
        let log = fs_err::File::create(root.join("registry.log")).map_err(|e| e.to_string())?;
        let log_err = log.file().try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.into_parts().0))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let mut registry = Registry {
            child,
            addr,
            dir,
            tls: options.tls.is_some(),
            client_cert,
            token_server,
        };
        registry.wait_ready()?;
        Ok(registry)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.log()));
            }
            if self.answers() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("no answer on {} in 20s: {}", self.addr, self.log()))
    }

    /// Whether `/v2/` answers (any HTTP status); for TLS, whether the port
    /// accepts connections.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
        else {
            return false;
        };
        if self.tls {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.")
    }

    /// `127.0.0.1:PORT`, as in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM file) that signed the registry's certificate,
    /// when it serves HTTPS.
    pub fn ca_pem(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("ca.pem"))
    }

    /// The client certificate the registry accepts, when it asks for one
    /// ([`TlsOptions::client_auth`]).
    pub fn client_cert(&self) -> Option<&IssuedCert> {
        self.client_cert.as_ref()
    }

    /// The token server, when the registry uses token auth.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }

    /// The registry's files: `config.yml`, `registry.log`, `data/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the registry logged so far.
    pub fn log(&self) -> String {
        fs_err::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
