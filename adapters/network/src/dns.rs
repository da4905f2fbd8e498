//! The node's DNS server, as weaveDNS was: it listens on the node's `busbar` gateway address
//! (port 53, UDP), where the pre-hook points every cluster container (`HostConfig.Dns`), and
//! answers the names of the cluster's running containers from etcd (`P/dns/`, mirrored in
//! memory). `web` and `web.<domain>` (`--dns-domain`, default `busbar.local`) both resolve.
//!
//! Docker's embedded resolver (127.0.0.11 in every container on a user network) answers the
//! names of containers on the same node first and forwards the rest here. A name that is not
//! a cluster container's: in the cluster's domain, an authoritative NXDOMAIN; anything else is
//! forwarded to the node's own resolvers (`--dns-upstream`, by default the `nameserver`s of
//! `/etc/resolv.conf`), or REFUSED when there are none, so that Docker tries the container's
//! next server (`--dns` given by the client comes after this one).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The default cluster domain.
pub const DEFAULT_DOMAIN: &str = "busbar.local";
/// The TTL of an answer: short, since a name moves with its container.
const TTL: u32 = 5;
/// How long a forwarded query waits for an upstream's answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The running containers' names (lower case) and addresses.
pub type Names = Arc<RwLock<HashMap<String, Ipv4Addr>>>;

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send this answer.
    Answer(Vec<u8>),
    /// Not a cluster name: ask the upstream resolvers.
    Forward,
}

/// The answer to the DNS message `packet`, from `names`; `None` for a packet that is not a
/// DNS message (dropped, as resolvers do).
pub fn answer(packet: &[u8], names: &HashMap<String, Ipv4Addr>, domain: &str) -> Option<Reply> {
    let query = Message::from_vec(packet).ok()?;
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut rsp = Message::response(query.metadata.id, query.metadata.op_code);
    rsp.metadata.recursion_desired = query.metadata.recursion_desired;
    rsp.metadata.recursion_available = true;
    if query.metadata.op_code != OpCode::Query || query.queries.len() != 1 {
        rsp.metadata.response_code = if query.metadata.op_code != OpCode::Query {
            ResponseCode::NotImp
        } else {
            ResponseCode::FormErr
        };
        rsp.queries = query.queries.clone();
        return rsp.to_vec().ok().map(Reply::Answer);
    }
    let q = &query.queries[0];
    let full = q.name().to_ascii().to_ascii_lowercase();
    let full = full.trim_end_matches('.');
    let domain = domain.trim_matches('.').to_ascii_lowercase();
    let in_zone = full == domain || full.ends_with(&format!(".{domain}"));
    let short = full
        .strip_suffix(&format!(".{domain}"))
        .unwrap_or(full)
        .to_owned();
    let found = names.get(full).or_else(|| names.get(&short)).copied();
    rsp.queries = query.queries.clone();
    match found {
        Some(ip) => {
            rsp.metadata.authoritative = true;
            if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
                rsp.answers
                    .push(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
            }
        }
        None if in_zone => {
            rsp.metadata.authoritative = true;
            rsp.metadata.response_code = ResponseCode::NXDomain;
        }
        None => return Some(Reply::Forward),
    }
    rsp.to_vec().ok().map(Reply::Answer)
}

/// REFUSED for `packet` (no upstream could answer it).
pub fn refused(packet: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(packet).ok()?;
    let mut rsp = Message::error_msg(
        query.metadata.id,
        query.metadata.op_code,
        ResponseCode::Refused,
    );
    rsp.metadata.recursion_desired = query.metadata.recursion_desired;
    rsp.queries = query.queries;
    rsp.to_vec().ok()
}

/// The `nameserver`s of a `resolv.conf`, on port 53.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Serves DNS on `socket` until `shutdown`.
pub async fn serve(
    socket: UdpSocket,
    names: Names,
    domain: String,
    upstreams: Vec<SocketAddr>,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let upstreams = Arc::new(upstreams);
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "DNS: receive failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let packet = buf[..len].to_vec();
        let reply = {
            let names = names.read().unwrap_or_else(|e| e.into_inner());
            answer(&packet, &names, &domain)
        };
        match reply {
            None => debug!(%peer, "DNS: not a query; dropped"),
            Some(Reply::Answer(bytes)) => {
                let _ = socket.send_to(&bytes, peer).await;
            }
            Some(Reply::Forward) => {
                let socket = socket.clone();
                let upstreams = upstreams.clone();
                tokio::spawn(async move {
                    let bytes = match forward(&packet, &upstreams).await {
                        Some(bytes) => Some(bytes),
                        None => refused(&packet),
                    };
                    if let Some(bytes) = bytes {
                        let _ = socket.send_to(&bytes, peer).await;
                    }
                });
            }
        }
    }
}

/// Asks each upstream in turn; the first answer.
async fn forward(packet: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            "0.0.0.0:0".parse().expect("an address")
        } else {
            "[::]:0".parse().expect("an address")
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(packet, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv_from(&mut buf)).await {
            Ok(Ok((len, from))) if from == *up => return Some(buf[..len].to_vec()),
            _ => debug!(upstream = %up, "DNS: no answer from the upstream"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn names() -> HashMap<String, Ipv4Addr> {
        [("web".to_string(), Ipv4Addr::new(10, 232, 1, 9))].into()
    }

    fn parsed(r: Option<Reply>) -> Message {
        match r {
            Some(Reply::Answer(b)) => Message::from_vec(&b).unwrap(),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn answers_cluster_names_bare_and_in_the_domain() {
        for name in ["web", "web.", "WEB.busbar.local.", "web.busbar.local"] {
            let m = parsed(answer(
                &query(name, RecordType::A),
                &names(),
                DEFAULT_DOMAIN,
            ));
            assert_eq!(m.metadata.id, 4242);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert_eq!(m.answers.len(), 1, "{name}");
            assert_eq!(
                m.answers[0].data,
                RData::A(A(Ipv4Addr::new(10, 232, 1, 9))),
                "{name}"
            );
            assert_eq!(m.queries.len(), 1);
        }
        // AAAA of a known name: no record, no error (the resolver then uses the A answer).
        let m = parsed(answer(
            &query("web", RecordType::AAAA),
            &names(),
            DEFAULT_DOMAIN,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn unknown_names_are_nxdomain_in_the_zone_and_forwarded_outside() {
        let m = parsed(answer(
            &query("gone.busbar.local", RecordType::A),
            &names(),
            DEFAULT_DOMAIN,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            answer(
                &query("example.org", RecordType::A),
                &names(),
                DEFAULT_DOMAIN
            ),
            Some(Reply::Forward)
        );
        assert_eq!(
            answer(&query("other", RecordType::A), &names(), DEFAULT_DOMAIN),
            Some(Reply::Forward)
        );
        let r = Message::from_vec(&refused(&query("other", RecordType::A)).unwrap()).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert_eq!(r.metadata.id, 4242);
    }

    #[test]
    fn garbage_is_dropped_and_odd_queries_are_refused_politely() {
        assert_eq!(answer(b"", &names(), DEFAULT_DOMAIN), None);
        assert_eq!(answer(b"\x01\x02\x03", &names(), DEFAULT_DOMAIN), None);
        assert_eq!(answer(&[0xff; 600], &names(), DEFAULT_DOMAIN), None);
        let mut two = Message::query();
        two.add_query(Query::query(Name::from_ascii("a").unwrap(), RecordType::A));
        two.add_query(Query::query(Name::from_ascii("b").unwrap(), RecordType::A));
        let m = parsed(answer(&two.to_vec().unwrap(), &names(), DEFAULT_DOMAIN));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // An answer is not a question.
        let rsp = Message::response(1, OpCode::Query).to_vec().unwrap();
        assert_eq!(answer(&rsp, &names(), DEFAULT_DOMAIN), None);
    }

    #[test]
    fn reads_resolv_conf() {
        let text = "# c\nnameserver 127.0.0.53\nsearch x\nnameserver  fd00::1\nnameserver bad\n";
        assert_eq!(
            resolv_conf_servers(text),
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[fd00::1]:53".parse().unwrap()
            ]
        );
    }
}
