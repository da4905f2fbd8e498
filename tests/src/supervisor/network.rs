//! A host's network: its addresses (all derived from its slot S) and, for namespaced hosts, the
//! namespace `bbtS` joined to the root namespace by a veth pair.
//!
//! ```text
//!  root namespace                       namespace bbtS
//!  bbtS 10.77.S.1/24  <--- veth --->   eth0 10.77.S.2/24, default via 10.77.S.1
//!  route 172.20.S.0/24 via 10.77.S.2    docker0 172.20.S.1/24 (the engine's --bip)
//!  route POOL via 10.77.S.2             networks from POOL (--default-address-pool)
//! ```
//!
//! The root namespace plays the physical network: with IPv4 forwarding on there, hosts reach
//! each other and each other's containers. A host in the root
//! namespace instead gets a bridge `bbtS` with 172.20.S.1/24 that its engine uses as its
//! default bridge (two engines cannot share `docker0`).

use std::fs;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};

use super::slots::slot_name;
use super::sys::{self, run};

/// The addresses of the host in slot `slot`.
#[derive(Debug, Clone, Copy)]
pub struct HostNet {
    pub slot: u8,
    pub netns: bool,
}

impl HostNet {
    /// The namespace, root-side link and cgroup name.
    pub fn name(&self) -> String {
        slot_name(self.slot)
    }

    pub fn netns_name(&self) -> Option<String> {
        self.netns.then(|| self.name())
    }

    /// The host's address (inside its namespace).
    pub fn addr(&self) -> Option<IpAddr> {
        self.netns
            .then(|| IpAddr::V4(Ipv4Addr::new(10, 77, self.slot, 2)))
    }

    /// The root namespace's end of the host's link.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.netns
            .then(|| IpAddr::V4(Ipv4Addr::new(10, 77, self.slot, 1)))
    }

    /// The engine's default bridge address and subnet (`--bip`).
    pub fn bip(&self) -> String {
        format!("172.20.{}.1/24", self.slot)
    }

    /// The host's own /18 of 100.64.0.0/10 for `docker network create`, so user networks never
    /// overlap across hosts (and can be routed to their host).
    pub fn address_pool(&self) -> String {
        let s = u32::from(self.slot);
        format!("100.{}.{}.0/18", 64 + s / 4, (s % 4) * 64)
    }

    /// Creates the namespace and veth pair (or, in the root namespace, the bridge).
    pub fn setup(&self) -> Result<()> {
        let name = self.name();
        let s = self.slot;
        if !self.netns {
            run("ip", &["link", "add", &name, "type", "bridge"])?;
            run("ip", &["addr", "add", &self.bip(), "dev", &name])?;
            run("ip", &["link", "set", &name, "up"])?;
            return Ok(());
        }
        let pool = self.address_pool();
        let steps = [
            format!("netns add {name}"),
            format!("link add {name} type veth peer name eth0 netns {name}"),
            format!("addr add 10.77.{s}.1/24 dev {name}"),
            format!("link set {name} up"),
            format!("-n {name} addr add 10.77.{s}.2/24 dev eth0"),
            format!("-n {name} link set eth0 up"),
            format!("-n {name} link set lo up"),
            format!("-n {name} route add default via 10.77.{s}.1"),
            format!("route add 172.20.{s}.0/24 via 10.77.{s}.2"),
            format!("route add {pool} via 10.77.{s}.2"),
        ];
        for step in &steps {
            let args: Vec<&str> = step.split_whitespace().collect();
            run("ip", &args).with_context(|| format!("setting up the network of host slot {s}"))?;
        }
        Ok(())
    }

    /// Deletes the namespace and link (their routes go with them).
    pub fn teardown(&self) {
        sys::delete_netns_and_link(&self.name());
    }

    /// Brings the host's link up or down: down is a network partition of the host.
    pub fn set_link(&self, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        run("ip", &["link", "set", &self.name(), state]).map(|_| ())
    }
}

/// Lets the root namespace route between hosts: IPv4 forwarding on, and, if the FORWARD policy
/// drops (as a dockerd in the root namespace sets it), an ACCEPT rule for traffic between `bbt`
/// links. Both are left in place at teardown: other beds may rely on them, and they only
/// concern `bbt*` links.
pub fn enable_forwarding() -> Result<()> {
    fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling net.ipv4.ip_forward")?;
    let rules = run("iptables", &["-S", "FORWARD"]).unwrap_or_default();
    let accept = ["FORWARD", "-i", "bbt+", "-o", "bbt+", "-j", "ACCEPT"];
    if rules.contains("-P FORWARD DROP")
        && run("iptables", &[&["-C"], &accept[..]].concat()).is_err()
    {
        run(
            "iptables",
            &[&["-I"], &accept[..1], &["1"], &accept[1..]].concat(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_slot() {
        let net = HostNet {
            slot: 7,
            netns: true,
        };
        assert_eq!(net.name(), "bbt7");
        assert_eq!(net.addr().unwrap().to_string(), "10.77.7.2");
        assert_eq!(net.gateway().unwrap().to_string(), "10.77.7.1");
        assert_eq!(net.bip(), "172.20.7.1/24");
        assert_eq!(net.address_pool(), "100.65.192.0/18");
        assert_eq!(
            HostNet {
                slot: 254,
                netns: false
            }
            .address_pool(),
            "100.127.128.0/18"
        );
        assert_eq!(
            HostNet {
                slot: 1,
                netns: false
            }
            .addr(),
            None
        );
    }
}
