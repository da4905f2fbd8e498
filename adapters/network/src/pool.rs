//! The cluster's address pool (`--pool`, default `10.232.0.0/16`) and its plan, pure:
//!
//! | offsets in the pool | use |
//! | --- | --- |
//! | `0` | the network address (never given) |
//! | `1` ..= `254` | one gateway per node: node index *i* has `pool + i`, its `busbar` bridge's address (and the DNS server's) |
//! | `256` .. last - 1 | containers, allocated cluster-wide in etcd (skipping `x.x.x.0` and `x.x.x.255`) |
//! | last | the broadcast address (never given) |

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The most nodes a pool serves (one gateway address each in the pool's first /24).
pub const MAX_NODES: u8 = 254;

/// Why a `--pool` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("--pool {0:?}: expected an IPv4 network in CIDR form, e.g. 10.232.0.0/16")]
    Syntax(String),
    #[error("--pool {0}: the prefix length must be between 8 and 22 (the first /24 holds the nodes' gateways)")]
    Size(String),
    #[error("--pool {given}: host bits are set (did you mean {net}?)")]
    HostBits { given: String, net: String },
}

/// An IPv4 pool in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    base: u32,
    len: u8,
}

impl FromStr for Pool {
    type Err = PoolError;

    fn from_str(s: &str) -> Result<Pool, PoolError> {
        let (addr, len) = s.split_once('/').ok_or(PoolError::Syntax(s.into()))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| PoolError::Syntax(s.into()))?;
        let len: u8 = len.parse().map_err(|_| PoolError::Syntax(s.into()))?;
        if !(8..=22).contains(&len) {
            return Err(PoolError::Size(s.into()));
        }
        let mask = u32::MAX << (32 - len);
        let base = u32::from(addr);
        if base & !mask != 0 {
            return Err(PoolError::HostBits {
                given: s.into(),
                net: format!("{}/{len}", Ipv4Addr::from(base & mask)),
            });
        }
        Ok(Pool { base, len })
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.len)
    }
}

impl Pool {
    /// The number of addresses in the pool.
    pub fn size(&self) -> u32 {
        1u32 << (32 - self.len)
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The address at `offset` (must be below [`Pool::size`]).
    pub fn addr(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + offset)
    }

    /// Where `ip` sits in the pool, if it does.
    pub fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let o = u32::from(ip).wrapping_sub(self.base);
        (u32::from(ip) >= self.base && o < self.size()).then_some(o)
    }

    /// Node index `index`'s gateway (`1 ..= 254`).
    pub fn gateway(&self, index: u8) -> Ipv4Addr {
        self.addr(u32::from(index))
    }

    /// Whether `ip` is one the allocator gives to containers.
    pub fn allocatable(&self, ip: Ipv4Addr) -> bool {
        let Some(o) = self.offset(ip) else {
            return false;
        };
        let low = u32::from(ip) & 0xff;
        o >= 256 && o < self.size() - 1 && low != 0 && low != 255
    }

    /// The first address from `start` on (wrapping around the container range) that is not
    /// `used`, preferring one that is not `avoid` either (an address remembered for another
    /// container name). `None`: the pool is full.
    pub fn next_free(
        &self,
        start: u32,
        used: &HashSet<Ipv4Addr>,
        avoid: &HashSet<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        let first = 256;
        let count = self.size() - 1 - first;
        let start = if (first..self.size() - 1).contains(&start) {
            start
        } else {
            first
        };
        for strict in [true, false] {
            for i in 0..count {
                let o = first + (start - first + i) % count;
                let ip = self.addr(o);
                if self.allocatable(ip) && !used.contains(&ip) && !(strict && avoid.contains(&ip)) {
                    return Some(ip);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        "10.232.0.0/16".parse().unwrap()
    }

    #[test]
    fn parses_and_shows_a_pool() {
        assert_eq!(pool().to_string(), "10.232.0.0/16");
        assert_eq!(pool().size(), 65536);
        assert_eq!(pool().gateway(3), Ipv4Addr::new(10, 232, 0, 3));
        assert_eq!(
            "10.232.0.1/16".parse::<Pool>(),
            Err(PoolError::HostBits {
                given: "10.232.0.1/16".into(),
                net: "10.232.0.0/16".into()
            })
        );
        for bad in [
            "10.232.0.0",
            "x/16",
            "10.232.0.0/24",
            "10.0.0.0/4",
            "10.232.0.0/a",
        ] {
            assert!(bad.parse::<Pool>().is_err(), "{bad}");
        }
    }

    #[test]
    fn gateways_network_and_broadcast_are_never_allocated() {
        let p = pool();
        for ip in [
            "10.232.0.0",
            "10.232.0.1",
            "10.232.0.254",
            "10.232.0.255",
            "10.232.1.0",
            "10.232.1.255",
            "10.232.255.255",
            "10.233.1.1",
            "10.231.255.1",
        ] {
            assert!(!p.allocatable(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.232.1.1", "10.232.255.254", "10.232.7.77"] {
            assert!(p.allocatable(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn next_free_skips_used_prefers_unremembered_and_wraps() {
        let p = pool();
        let used: HashSet<Ipv4Addr> = ["10.232.1.1", "10.232.1.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let avoid: HashSet<Ipv4Addr> = ["10.232.1.3".parse().unwrap()].into();
        assert_eq!(
            p.next_free(0, &used, &avoid),
            Some("10.232.1.4".parse().unwrap())
        );
        // From near the end, it wraps to the start of the container range.
        let last = p.offset("10.232.255.254".parse().unwrap()).unwrap();
        let used_last: HashSet<Ipv4Addr> = ["10.232.255.254".parse().unwrap()].into();
        assert_eq!(
            p.next_free(last, &used_last, &HashSet::new()),
            Some("10.232.1.1".parse().unwrap())
        );
        // A remembered address is still given when nothing else is free.
        let small: Pool = "10.9.0.0/22".parse().unwrap();
        let mut all: HashSet<Ipv4Addr> = HashSet::new();
        for o in 256..1023 {
            all.insert(small.addr(o));
        }
        let keep = "10.9.2.9".parse().unwrap();
        all.remove(&keep);
        assert_eq!(small.next_free(0, &all, &[keep].into()), Some(keep));
        all.insert(keep);
        assert_eq!(small.next_free(0, &all, &HashSet::new()), None);
    }
}
