//! The overlay between the nodes, set up by the adapter on its own node (it needs root in the
//! node's network namespace, as dockerd does): a Linux bridge `busbar0` that the Docker network
//! `busbar` uses, and a VXLAN port on it whose flood list holds every other live node (head-end
//! replication for broadcasts and ARP; the kernel learns where each container's MAC lives).
//! All nodes' bridges form one L2 segment with one subnet (the pool); each node's gateway on it
//! is its own (`pool + index`).
//!
//! Nothing here persists: the adapter runs it at every start (idempotently) and keeps the
//! flood list in step with `P/hosts/live/` in etcd. Commands are iproute2's `ip` and `bridge`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Command;

use crate::pool::Pool;

/// The bridge the Docker network `busbar` uses.
pub const BRIDGE: &str = "busbar0";
/// The VXLAN port on it.
pub const VXLAN: &str = "busbar-vx0";
/// VXLAN's own overhead (outer IP, UDP, VXLAN headers, inner Ethernet).
pub const VXLAN_OVERHEAD: u32 = 50;
/// How long one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why setting up the overlay failed.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("`{command}`: {reason}")]
    Command { command: String, reason: String },
    #[error(
        "no interface of this node has the address {0} (give --underlay an address of this node)"
    )]
    NoInterface(Ipv4Addr),
    #[error("the Docker network busbar exists with subnet {subnet:?} and gateway {gateway:?}; this node needs {want_subnet} and {want_gateway} (remove it with `docker network rm busbar` once no container uses it)")]
    Mismatch {
        subnet: String,
        gateway: String,
        want_subnet: String,
        want_gateway: String,
    },
}

/// The overlay's settings.
#[derive(Debug, Clone)]
pub struct Overlay {
    pub vni: u32,
    pub port: u16,
    /// This node's address on the network between the nodes.
    pub underlay: Ipv4Addr,
    /// The MTU of the underlay interface.
    pub mtu: u32,
}

/// Runs one command; its stdout, or an error with its stderr.
pub async fn run(program: &str, args: &[&str]) -> Result<String, OverlayError> {
    let command = format!("{program} {}", args.join(" "));
    let out = tokio::time::timeout(
        COMMAND_TIMEOUT,
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| OverlayError::Command {
        command: command.clone(),
        reason: format!("did not finish within {COMMAND_TIMEOUT:?}"),
    })?
    .map_err(|e| OverlayError::Command {
        command: command.clone(),
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(OverlayError::Command {
            command,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The interface holding `ip` and its MTU, from `ip -o addr show` / `ip -o link show`.
pub async fn interface_of(ip: Ipv4Addr) -> Result<(String, u32), OverlayError> {
    let addrs = run("ip", &["-o", "-4", "addr", "show"]).await?;
    let dev = interface_in(&addrs, ip).ok_or(OverlayError::NoInterface(ip))?;
    let link = run("ip", &["-o", "link", "show", "dev", &dev]).await?;
    Ok((dev, mtu_in(&link).unwrap_or(1500)))
}

/// The interface of `ip -o -4 addr show` output that holds `ip`.
pub fn interface_in(addrs: &str, ip: Ipv4Addr) -> Option<String> {
    addrs.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let at = f.iter().position(|w| *w == "inet")?;
        let addr = f.get(at + 1)?.split('/').next()?;
        (addr.parse::<Ipv4Addr>().ok()? == ip)
            .then(|| {
                f.get(1).map(|d| {
                    d.trim_end_matches(':')
                        .split('@')
                        .next()
                        .unwrap_or(d)
                        .to_owned()
                })
            })
            .flatten()
    })
}

/// The `mtu N` of an `ip -o link show` line.
pub fn mtu_in(link: &str) -> Option<u32> {
    let f: Vec<&str> = link.split_whitespace().collect();
    let at = f.iter().position(|w| *w == "mtu")?;
    f.get(at + 1)?.parse().ok()
}

/// The flood entries (`00:00:00:00:00:00 dst IP`) of `bridge fdb show dev VXLAN` output.
pub fn flood_entries(fdb: &str) -> BTreeSet<Ipv4Addr> {
    fdb.lines()
        .filter(|l| l.starts_with("00:00:00:00:00:00"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let at = f.iter().position(|w| *w == "dst")?;
            f.get(at + 1)?.parse().ok()
        })
        .collect()
}

impl Overlay {
    /// The MTU containers get: the underlay's less VXLAN's overhead.
    pub fn inner_mtu(&self) -> u32 {
        self.mtu.saturating_sub(VXLAN_OVERHEAD)
    }

    /// Creates what is missing of the bridge and the VXLAN port, and brings them up. The
    /// bridge gets a fixed MAC ([`bridge_mac`]): a Linux bridge left to itself takes the lowest
    /// MAC of its ports, so it would change as containers come and go, and the containers'
    /// cached ARP entry for their gateway (their DNS server) would go stale.
    pub async fn ensure_links(&self, dev: &str, gateway: Ipv4Addr) -> Result<(), OverlayError> {
        let mtu = self.inner_mtu().to_string();
        if run("ip", &["link", "show", "dev", VXLAN]).await.is_err() {
            let (vni, port, local) = (
                self.vni.to_string(),
                self.port.to_string(),
                self.underlay.to_string(),
            );
            run(
                "ip",
                &[
                    "link", "add", VXLAN, "type", "vxlan", "id", &vni, "dstport", &port, "local",
                    &local, "dev", dev,
                ],
            )
            .await?;
        }
        run("ip", &["link", "set", "dev", VXLAN, "mtu", &mtu]).await?;
        if run("ip", &["link", "show", "dev", BRIDGE]).await.is_err() {
            run("ip", &["link", "add", BRIDGE, "type", "bridge"]).await?;
        }
        let mac = bridge_mac(gateway);
        run("ip", &["link", "set", "dev", BRIDGE, "address", &mac]).await?;
        run("ip", &["link", "set", "dev", VXLAN, "master", BRIDGE]).await?;
        run("ip", &["link", "set", "dev", VXLAN, "up"]).await?;
        run("ip", &["link", "set", "dev", BRIDGE, "up"]).await?;
        Ok(())
    }

    /// Makes the flood list exactly `peers` (the other live nodes' underlay addresses).
    pub async fn set_peers(&self, peers: &BTreeSet<Ipv4Addr>) -> Result<(), OverlayError> {
        let now = flood_entries(&run("bridge", &["fdb", "show", "dev", VXLAN]).await?);
        for p in peers.difference(&now) {
            let p = p.to_string();
            run(
                "bridge",
                &[
                    "fdb",
                    "append",
                    "00:00:00:00:00:00",
                    "dev",
                    VXLAN,
                    "dst",
                    &p,
                ],
            )
            .await?;
        }
        for p in now.difference(peers) {
            let p = p.to_string();
            run(
                "bridge",
                &["fdb", "del", "00:00:00:00:00:00", "dev", VXLAN, "dst", &p],
            )
            .await?;
        }
        Ok(())
    }
}

/// The bridge's MAC on the node whose gateway is `gateway`: locally administered, derived
/// from the gateway address (unique in the cluster), never a container's (Docker's are
/// `02:42:` + the address).
pub fn bridge_mac(gateway: Ipv4Addr) -> String {
    let [a, b, c, d] = gateway.octets();
    format!("02:62:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The `POST /networks/create` document of the `busbar` network on the node with `gateway`.
/// Docker's own allocation (a container joined without the label) is confined to the gateway
/// itself, which is taken, so only the cluster's addresses are ever used on it.
pub fn network_doc(pool: Pool, gateway: Ipv4Addr, mtu: u32) -> Value {
    json!({
        "Name": crate::NETWORK,
        "Driver": "bridge",
        "CheckDuplicate": true,
        "IPAM": {
            "Driver": "default",
            "Config": [{
                "Subnet": pool.to_string(),
                "Gateway": gateway.to_string(),
                "IPRange": format!("{gateway}/32"),
            }],
        },
        "Options": {
            "com.docker.network.bridge.name": BRIDGE,
            "com.docker.network.driver.mtu": mtu.to_string(),
        },
        "Labels": {"busbar.net": "cluster"},
    })
}

/// Whether an existing `busbar` network (its inspect document) is this node's.
pub fn network_matches(doc: &Value, pool: Pool, gateway: Ipv4Addr) -> Result<(), OverlayError> {
    let config = &doc["IPAM"]["Config"][0];
    let subnet = config["Subnet"].as_str().unwrap_or("").to_owned();
    let gw = config["Gateway"].as_str().unwrap_or("").to_owned();
    if subnet == pool.to_string() && gw == gateway.to_string() {
        return Ok(());
    }
    Err(OverlayError::Mismatch {
        subnet,
        gateway: gw,
        want_subnet: pool.to_string(),
        want_gateway: gateway.to_string(),
    })
}

/// Sends one gratuitous ARP from inside the container (its network namespace, through the
/// host's `nsenter`): the container's MAC may have lived on another node a moment ago, and
/// this one frame re-points every bridge and VXLAN port of the cluster at its new place.
/// Uses `arping` (iputils or busybox) from the host.
pub async fn announce(pid: u32, ip: Ipv4Addr, arping: &[String]) -> Result<(), OverlayError> {
    let ns = format!("--net=/proc/{pid}/ns/net");
    let ip = ip.to_string();
    let mut args: Vec<&str> = vec![&ns, "--"];
    args.extend(arping.iter().map(String::as_str));
    args.extend(["-U", "-c", "1", "-I", "eth0", &ip]);
    run("nsenter", &args).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_iproute2_output() {
        let addrs = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                     2: eth0    inet 10.77.1.2/24 scope global eth0\\       valid_lft forever\n\
                     5: busbar0    inet 10.232.0.1/16 brd 10.232.255.255 scope global busbar0\n";
        assert_eq!(
            interface_in(addrs, Ipv4Addr::new(10, 77, 1, 2)).as_deref(),
            Some("eth0")
        );
        assert_eq!(interface_in(addrs, Ipv4Addr::new(10, 77, 1, 3)), None);
        let link = "2: eth0@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP";
        assert_eq!(mtu_in(link), Some(1500));
        assert_eq!(
            bridge_mac(Ipv4Addr::new(10, 232, 0, 2)),
            "02:62:0a:e8:00:02"
        );
        let fdb = "00:00:00:00:00:00 dst 10.77.2.2 self permanent\n\
                   02:42:0a:e8:01:05 dst 10.77.3.2 self\n\
                   00:00:00:00:00:00 dst 10.77.3.2 self permanent\n";
        assert_eq!(
            flood_entries(fdb),
            [Ipv4Addr::new(10, 77, 2, 2), Ipv4Addr::new(10, 77, 3, 2)].into()
        );
    }

    #[test]
    fn the_network_document_and_its_check() {
        let pool: Pool = "10.232.0.0/16".parse().unwrap();
        let gw = Ipv4Addr::new(10, 232, 0, 2);
        let doc = network_doc(pool, gw, 1450);
        assert_eq!(doc["IPAM"]["Config"][0]["IPRange"], "10.232.0.2/32");
        assert_eq!(doc["Options"]["com.docker.network.driver.mtu"], "1450");
        let inspect =
            json!({"IPAM": {"Config": [{"Subnet": "10.232.0.0/16", "Gateway": "10.232.0.2"}]}});
        assert!(network_matches(&inspect, pool, gw).is_ok());
        let err = network_matches(&inspect, pool, Ipv4Addr::new(10, 232, 0, 3)).unwrap_err();
        assert!(
            err.to_string().contains("docker network rm busbar"),
            "{err}"
        );
    }
}
