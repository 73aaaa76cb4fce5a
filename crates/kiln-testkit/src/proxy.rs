//! A fault-injecting HTTP/1.1 proxy: sits between a client and a registry
//! on a loopback port and, for the requests its rules match, answers errors,
//! cuts or stalls transfers, or strips `Range`. Keep-alive connections are
//! forwarded request by request over one upstream connection each.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::background::Background;
use crate::http1::{
    BodyReader, Framing, Head, read_head, request_framing, response, response_framing,
};

/// What a matched request gets instead of a clean pass.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer `status` without asking upstream (with `Retry-After` if
    /// given, seconds or an HTTP date) and a distribution-style error body.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// Forward the request; pass the response head and `after` body bytes,
    /// then close both connections.
    DropResponse { after: u64 },
    /// Forward the request; pass the response head and `after` body bytes,
    /// then pass nothing for `duration`, then the rest.
    StallResponse { after: u64, duration: Duration },
    /// Hold the request for `duration` without forwarding it, then close.
    /// Upstream never sees it.
    StallRequest { duration: Duration },
    /// Read the request head and `after` body bytes from the client, then
    /// close, never forwarding it: a client-side drop behind a proxy that
    /// buffers request bodies (nginx's default). Upstream never sees it.
    DropRequest { after: u64 },
    /// Forward the request head and `after` body bytes upstream, then close
    /// both connections: upstream sees a client that vanished mid-body.
    CutRequest { after: u64 },
    /// Remove the `Range` header: upstream answers with the whole body, as
    /// servers that ignore ranges do.
    IgnoreRange,
    /// Forward the request; hold upstream's answer for `duration` before
    /// passing any of it: the request has taken effect, the client does not
    /// know yet (a slow answer to a `PUT` that landed).
    HoldResponse { duration: Duration },
}

/// Which requests a [`Fault`] applies to: method and path substring, the
/// first `skip` matches let through, then `times` faults.
#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<String>,
    path: Option<String>,
    skip: u32,
    times: u32,
    fault: Fault,
}

impl Rule {
    /// Applies `fault` once to any request; narrow it with the setters.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            method: None,
            path: None,
            skip: 0,
            times: 1,
            fault,
        }
    }

    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Matches requests whose target (path and query) contains `part`.
    pub fn path(mut self, part: &str) -> Rule {
        self.path = Some(part.to_string());
        self
    }

    /// Lets the first `n` matching requests through.
    pub fn skip(mut self, n: u32) -> Rule {
        self.skip = n;
        self
    }

    /// Fires for `n` matching requests (after the skipped ones). Default 1.
    pub fn times(mut self, n: u32) -> Rule {
        self.times = n;
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.path.as_deref().is_none_or(|p| target.contains(p))
    }
}

/// The rules of a [`FaultProxy`], tried in order; the first that fires wins.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Vec<Rule>,
}

impl Faults {
    pub fn new() -> Faults {
        Faults::default()
    }

    pub fn rule(mut self, rule: Rule) -> Faults {
        self.rules.push(rule);
        self
    }
}

/// Traffic through a [`FaultProxy`] so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests read from clients.
    pub requests: u64,
    /// Request body bytes read from clients (what they sent, faults included).
    pub request_body_bytes: u64,
    /// Response body bytes written to clients.
    pub response_body_bytes: u64,
}

/// One request that went through, as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The status the client got, if it got one.
    pub status: Option<u16>,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
}

struct RuleState {
    rule: Rule,
    seen: AtomicU32,
    fired: AtomicU32,
}

struct State {
    upstream: SocketAddr,
    rules: Vec<RuleState>,
    requests: AtomicU64,
    request_body_bytes: AtomicU64,
    response_body_bytes: AtomicU64,
    log: Mutex<Vec<Exchange>>,
}

impl State {
    fn fault_for(&self, method: &str, target: &str) -> Option<Fault> {
        for r in &self.rules {
            if !r.rule.matches(method, target) {
                continue;
            }
            let seen = r.seen.fetch_add(1, Ordering::SeqCst);
            if seen >= r.rule.skip && r.fired.load(Ordering::SeqCst) < r.rule.times {
                r.fired.fetch_add(1, Ordering::SeqCst);
                return Some(r.rule.fault.clone());
            }
        }
        None
    }

    fn record(&self, exchange: Exchange) -> usize {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.push(exchange);
        log.len() - 1
    }

    fn set_status(&self, index: usize, status: u16) {
        if let Some(e) = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(index)
        {
            e.status = Some(status);
        }
    }
}

/// A fault-injecting proxy on a free loopback port, stopped on drop.
///
/// ```no_run
/// use kiln_testkit::{FaultProxy, Faults, Fault, Rule};
/// let proxy = FaultProxy::start(
///     "127.0.0.1:5000",
///     Faults::new().rule(
///         Rule::new(Fault::Status { status: 503, retry_after: Some("1".into()) })
///             .method("GET")
///             .path("/manifests/")
///             .times(2),
///     ),
/// );
/// // point the client at proxy.host() instead of the registry
/// assert_eq!(proxy.fired(0), 0);
/// ```
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    _background: Background,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`).
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let upstream: SocketAddr = upstream
            .parse()
            .or_else(|_| {
                std::net::ToSocketAddrs::to_socket_addrs(upstream)
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or(())
            })
            .unwrap_or_else(|()| panic!("upstream {upstream:?} is not host:port"));
        let state = Arc::new(State {
            upstream,
            rules: faults
                .rules
                .into_iter()
                .map(|rule| RuleState {
                    rule,
                    seen: AtomicU32::new(0),
                    fired: AtomicU32::new(0),
                })
                .collect(),
            requests: AtomicU64::new(0),
            request_body_bytes: AtomicU64::new(0),
            response_body_bytes: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        });
        let background = Background::start("kiln-fault-proxy");
        let listener = background.bind();
        let addr = listener.local_addr().expect("proxy address");
        let accept_state = state.clone();
        background.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                tokio::spawn(serve(client, accept_state.clone()));
            }
        });
        FaultProxy {
            addr,
            state,
            _background: background,
        }
    }

    /// `127.0.0.1:PORT`: use it as the registry host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many times rule `index` (in the order added) fired.
    pub fn fired(&self, index: usize) -> u32 {
        self.state.rules[index].fired.load(Ordering::SeqCst)
    }

    /// How many faults fired in all.
    pub fn total_fired(&self) -> u32 {
        self.state
            .rules
            .iter()
            .map(|r| r.fired.load(Ordering::SeqCst))
            .sum()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            requests: self.state.requests.load(Ordering::SeqCst),
            request_body_bytes: self.state.request_body_bytes.load(Ordering::SeqCst),
            response_body_bytes: self.state.response_body_bytes.load(Ordering::SeqCst),
        }
    }

    /// Every request so far, in arrival order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.state
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

type Upstream = (BufReader<OwnedReadHalf>, OwnedWriteHalf);

/// Serves one client connection, request by request.
async fn serve(client: TcpStream, state: Arc<State>) {
    let (read, mut client_w) = client.into_split();
    let mut client_r = BufReader::new(read);
    let mut upstream: Option<Upstream> = None;
    while let Ok(Some(request)) = read_head(&mut client_r).await {
        let keep = exchange(request, &mut client_r, &mut client_w, &mut upstream, &state).await;
        if !matches!(keep, Ok(true)) {
            break;
        }
    }
    let _ = client_w.shutdown().await;
}

/// One request and its response; `Ok(true)` to keep the connection.
async fn exchange(
    mut request: Head,
    client_r: &mut BufReader<OwnedReadHalf>,
    client_w: &mut OwnedWriteHalf,
    upstream: &mut Option<Upstream>,
    state: &State,
) -> std::io::Result<bool> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let method = request.method().to_string();
    let target = request.target().to_string();
    let fault = state.fault_for(&method, &target);
    let index = state.record(Exchange {
        method: method.clone(),
        target: target.clone(),
        status: None,
        fault: fault.clone(),
    });
    let framing = request_framing(&request);
    // The proxy answers `Expect: 100-continue` itself, so that it can read
    // the body before upstream answers.
    if request
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        request.remove("expect");
        client_w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let close_after = request.wants_close();

    match &fault {
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            drain(client_r, framing, u64::MAX, state).await?;
            let mut headers = vec![("Content-Type", "application/json".to_string())];
            if let Some(after) = retry_after {
                headers.push(("Retry-After", after.clone()));
            }
            let body = format!(
                r#"{{"errors":[{{"code":"UNAVAILABLE","message":"fault proxy answered {status}"}}]}}"#
            );
            client_w
                .write_all(&response(*status, "Fault", &headers, body.as_bytes()))
                .await?;
            state.set_status(index, *status);
            return Ok(!close_after);
        }
        Some(Fault::StallRequest { duration }) => {
            tokio::time::sleep(*duration).await;
            return Ok(false);
        }
        Some(Fault::DropRequest { after }) => {
            drain(client_r, framing, *after, state).await?;
            return Ok(false);
        }
        Some(Fault::IgnoreRange) => request.remove("range"),
        _ => {}
    }

    // Forward the head, reconnecting if the kept-alive upstream went away.
    let head = request.to_bytes();
    let mut sent = false;
    for _ in 0..2 {
        if upstream.is_none() {
            let stream = TcpStream::connect(state.upstream).await?;
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            *upstream = Some((BufReader::new(r), w));
        }
        let (_, up_w) = upstream.as_mut().expect("connected");
        if up_w.write_all(&head).await.is_ok() {
            sent = true;
            break;
        }
        *upstream = None;
    }
    if !sent {
        return Ok(false);
    }
    let (up_r, up_w) = upstream.as_mut().expect("connected");

    // The request body.
    let cut = match &fault {
        Some(Fault::CutRequest { after }) => Some(*after),
        _ => None,
    };
    let mut body = BodyReader::new(framing);
    let mut forwarded = 0u64;
    while let Some(piece) = body.next(client_r).await? {
        state
            .request_body_bytes
            .fetch_add(piece.len() as u64, Ordering::SeqCst);
        if let Some(limit) = cut {
            let room = usize::try_from(limit.saturating_sub(forwarded)).unwrap_or(usize::MAX);
            if piece.len() >= room {
                up_w.write_all(&piece[..room]).await?;
                up_w.flush().await?;
                *upstream = None;
                return Ok(false);
            }
        }
        up_w.write_all(&piece).await?;
        forwarded += piece.len() as u64;
    }
    if cut.is_some() {
        // The whole body fitted under the cut: cut before the response.
        *upstream = None;
        return Ok(false);
    }

    // The response (skipping interim 1xx answers).
    let response_head = loop {
        let Some(head) = read_head(up_r).await? else {
            *upstream = None;
            return Ok(false);
        };
        if (100..200).contains(&head.status()) && head.status() != 101 {
            continue;
        }
        break head;
    };
    state.set_status(index, response_head.status());
    if let Some(Fault::HoldResponse { duration }) = &fault {
        tokio::time::sleep(*duration).await;
    }
    client_w.write_all(&response_head.to_bytes()).await?;
    let response_framing = response_framing(&response_head, &method);
    let (limit, stall) = match &fault {
        Some(Fault::DropResponse { after }) => (Some(*after), None),
        Some(Fault::StallResponse { after, duration }) => (Some(*after), Some(*duration)),
        _ => (None, None),
    };
    let mut body = BodyReader::new(response_framing);
    let mut passed = 0u64;
    let mut stalled = false;
    while let Some(piece) = body.next(up_r).await? {
        let mut piece = &piece[..];
        if let Some(limit) = limit
            && !stalled
        {
            let room = usize::try_from(limit.saturating_sub(passed)).unwrap_or(usize::MAX);
            if piece.len() >= room {
                client_w.write_all(&piece[..room]).await?;
                client_w.flush().await?;
                state
                    .response_body_bytes
                    .fetch_add(room as u64, Ordering::SeqCst);
                passed += room as u64;
                piece = &piece[room..];
                match stall {
                    None => {
                        *upstream = None;
                        return Ok(false);
                    }
                    Some(duration) => {
                        stalled = true;
                        tokio::time::sleep(duration).await;
                    }
                }
            }
        }
        client_w.write_all(piece).await?;
        state
            .response_body_bytes
            .fetch_add(piece.len() as u64, Ordering::SeqCst);
        passed += piece.len() as u64;
    }
    client_w.flush().await?;
    if response_framing == Framing::UntilClose || response_head.wants_close() {
        *upstream = None;
        return Ok(false);
    }
    Ok(!close_after)
}

/// Reads up to `limit` bytes of a request body from the client, unforwarded.
async fn drain(
    client_r: &mut BufReader<OwnedReadHalf>,
    framing: Framing,
    limit: u64,
    state: &State,
) -> std::io::Result<()> {
    let mut body = BodyReader::new(framing);
    let mut read = 0u64;
    while read < limit {
        let Some(piece) = body.next(client_r).await? else {
            break;
        };
        read += piece.len() as u64;
        state
            .request_body_bytes
            .fetch_add(piece.len() as u64, Ordering::SeqCst);
    }
    Ok(())
}
