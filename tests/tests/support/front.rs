//! What the no-bypass tests (`paths`, `bodies`) share: busbar in front of a test-bed engine
//! with one chain file (a standalone agent, or a gateway and an agent across the gRPC hop),
//! raw calls to the engine's own socket (to ask it what it did), and a seeded generator.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;
use testbed::{unique_name, Host, Testbed};

use super::{make_certs, tls_args, Process, TempDir};

/// The engine's unix socket path.
pub fn engine_socket(host: &Host) -> String {
    host.docker_url()
        .strip_prefix("unix://")
        .expect("a unix engine socket")
        .to_owned()
}

/// One HTTP/1.0 call to the engine's socket (a JSON `body` when given): status and JSON answer
/// (null when the answer is not JSON).
pub fn engine_call(socket: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let s = UnixStream::connect(socket).expect("the engine's socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    call(s, method, path, body)
}

/// The same call to busbar on a loopback `port`.
pub fn busbar_call(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("busbar's port");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    call(s, method, path, body)
}

fn call(mut s: impl Read + Write, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: docker\r\n");
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A standalone agent in front of `host`'s engine, running `chains` (an `adapters.yml`).
pub fn agent(host: &Host, chains: &str) -> (Process, TempDir) {
    let dir = TempDir::new();
    let config = dir.join("adapters.yml");
    std::fs::write(&config, chains).unwrap();
    let agent = Process::agent(&host.docker_url(), &["--config", config.to_str().unwrap()]);
    (agent, dir)
}

/// A gateway in front of an agent in `host`'s namespace (as node1, over the gRPC hop with
/// mutual TLS), the agent running `chains`. Adapters must listen where the namespace
/// reaches them: `host.gateway_addr()`. The gateway is the first process.
pub fn gateway(bed: &Testbed, host: &Host, chains: &str) -> (Process, Process, TempDir) {
    let certs = bed.dir().join(unique_name("front-certs"));
    let addr = host.addr().unwrap().to_string();
    make_certs(&certs, &[("node1", &addr)]);
    let dir = TempDir::new();
    let config = dir.join("adapters.yml");
    std::fs::write(&config, chains).unwrap();
    let (agent, agent_addr) = Process::agent_in(
        host,
        "node1",
        &certs,
        &["--config", config.to_str().unwrap()],
    );
    let mut args = vec!["--agent".to_string(), format!("node1={agent_addr}")];
    args.extend(tls_args(&certs, "gateway"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Process::gateway(&args), agent, dir)
}

/// A small deterministic generator (xorshift64*): reproducible from its printed seed.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from the environment variable `var` when set, else at random.
    pub fn from_env(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| testbed::util::random_u64() | 1);
        eprintln!("{var}={seed}");
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}
