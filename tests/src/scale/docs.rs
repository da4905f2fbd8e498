//! The documents a SIMULATED engine answers with (`busbar-simnodes`): synthetic, deterministic
//! `/info`, `/version` and `/containers/json` bodies shaped like Docker Engine 20.10.24's
//! (API 1.41), so the gateway parses and merges documents of realistic size and structure.
//!
//! Nothing here talks to a real engine. Every node is marked as simulated: its `/info` carries
//! the engine label `busbar.simulated=true` and its `/version` platform name says so.

use serde_json::{json, Value};

/// The engine version the simulated engines claim (the test bed's real engine's version).
pub const ENGINE_VERSION: &str = "20.10.24";
/// The API version they speak.
pub const API_VERSION: &str = "1.41";
/// Every simulated container was created this many seconds after the epoch, minus a minute
/// per index (fixed, so that every run answers the same bytes).
const CREATED_BASE: i64 = 1_763_700_000;

/// Every body one simulated node answers with, serialized once at startup.
pub struct NodeDocs {
    pub info: Vec<u8>,
    pub version: Vec<u8>,
    /// `GET /containers/json?all=1`.
    pub containers_all: Vec<u8>,
    /// `GET /containers/json` (running only).
    pub containers_running: Vec<u8>,
    /// The agent's chain status (`Describe`'s `chain_status_json`): as an agent following
    /// etcd that runs one global chain document.
    pub chain_status: Vec<u8>,
}

/// SplitMix64: a tiny deterministic generator, for IDs that look random but never change.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 64 lowercase hex digits: a container, image or network ID.
    fn id64(&mut self) -> String {
        (0..4).map(|_| format!("{:016x}", self.next())).collect()
    }

    /// An engine ID as dockerd makes them: 12 groups of 4 base32 characters.
    fn engine_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        (0..12)
            .map(|_| {
                let v = self.next();
                (0..4)
                    .map(|k| ALPHABET[((v >> (k * 5)) & 31) as usize] as char)
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Whether container `j` of a node is running (two in three are; the others exited).
fn running(j: usize) -> bool {
    j % 3 != 2
}

/// The documents of simulated node `index` (named `name`) with `containers` containers.
pub fn node_docs(index: usize, name: &str, containers: usize) -> NodeDocs {
    let mut mix = Mix(0x5EED_0000_0000_0000 ^ index as u64);
    let image_id = "sha256:638ac8057ea704c4c6abd0ac9cd5d4176aef62e9e717aec9980f9db812e03ca6";
    let network_id = mix.id64();
    let list: Vec<(bool, Value)> = (0..containers)
        .map(|j| {
            let up = running(j);
            let id = mix.id64();
            let ip = 2 + (j % 250);
            let (state, status) = if up {
                ("running", format!("Up {} hours", 1 + j % 23))
            } else {
                ("exited", format!("Exited (0) {} hours ago", 1 + j % 23))
            };
            let bridge = if up {
                json!({
                    "IPAMConfig": null, "Links": null, "Aliases": null,
                    "NetworkID": network_id, "EndpointID": mix.id64(),
                    "Gateway": "172.17.0.1", "IPAddress": format!("172.17.0.{ip}"), "IPPrefixLen": 16,
                    "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                    "MacAddress": format!("02:42:ac:11:00:{ip:02x}"), "DriverOpts": null
                })
            } else {
                json!({
                    "IPAMConfig": null, "Links": null, "Aliases": null,
                    "NetworkID": network_id, "EndpointID": "",
                    "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                    "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                    "MacAddress": "", "DriverOpts": null
                })
            };
            let doc = json!({
                "Id": id,
                "Names": [format!("/c{j}")],
                "Image": "busybox",
                "ImageID": image_id,
                "Command": "sleep 86400",
                "Created": CREATED_BASE - 60 * j as i64,
                "Ports": [],
                "Labels": {},
                "State": state,
                "Status": status,
                "HostConfig": {"NetworkMode": "default"},
                "NetworkSettings": {"Networks": {"bridge": bridge}},
                "Mounts": []
            });
            (up, doc)
        })
        .collect();
    let all: Vec<&Value> = list.iter().map(|(_, d)| d).collect();
    let up: Vec<&Value> = list.iter().filter(|(r, _)| *r).map(|(_, d)| d).collect();
    let n_running = up.len();

    let kernel = "6.1.0-28-amd64";
    let info = json!({
        "ID": mix.engine_id(),
        "Containers": containers,
        "ContainersRunning": n_running,
        "ContainersPaused": 0,
        "ContainersStopped": containers - n_running,
        "Images": 1,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"], ["Native Overlay Diff", "true"], ["userxattr", "false"]],
        "Plugins": {
            "Volume": ["local"],
            "Network": ["bridge", "host", "ipvlan", "macvlan", "null", "overlay"],
            "Authorization": null,
            "Log": ["awslogs", "fluentd", "gcplogs", "gelf", "journald", "json-file", "local", "logentries", "splunk", "syslog"]
        },
        "MemoryLimit": true, "SwapLimit": false, "KernelMemory": true, "KernelMemoryTCP": true,
        "CpuCfsPeriod": true, "CpuCfsQuota": true, "CPUShares": true, "CPUSet": true, "PidsLimit": true,
        "IPv4Forwarding": true, "BridgeNfIptables": true, "BridgeNfIp6tables": true,
        "Debug": false, "NFd": 24 + 2 * n_running, "OomKillDisable": false, "NGoroutines": 33 + 2 * n_running,
        "SystemTime": "2026-11-22T04:00:00.000000000Z"
    });
    // Two macros: one would exceed json!'s recursion limit.
    let rest = json!({
        "LoggingDriver": "json-file", "CgroupDriver": "systemd", "CgroupVersion": "2",
        "NEventsListener": 0,
        "KernelVersion": kernel,
        "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
        "OSVersion": "12",
        "OSType": "linux",
        "Architecture": "x86_64",
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {"docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": true, "Official": true}},
            "Mirrors": []
        },
        // A t2.micro, as each of the 1,000 nodes of Swarm's 2015 scale test.
        "NCPU": 1,
        "MemTotal": 1_073_741_824u64,
        "GenericResources": null,
        "DockerRootDir": "/var/lib/docker",
        "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
        "Name": name,
        "Labels": ["busbar.simulated=true"],
        "ExperimentalBuild": false,
        "ServerVersion": ENGINE_VERSION,
        "Runtimes": {"io.containerd.runc.v2": {"path": "runc"}, "io.containerd.runtime.v1.linux": {"path": "runc"}, "runc": {"path": "runc"}},
        "DefaultRuntime": "runc",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": false,
        "Isolation": "",
        "InitBinary": "docker-init",
        "ContainerdCommit": {"ID": "1.6.20~ds1-1+b1", "Expected": "1.6.20~ds1-1+b1"},
        "RuncCommit": {"ID": "1.1.5+ds1-1+b1", "Expected": "1.1.5+ds1-1+b1"},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": ["name=seccomp,profile=default", "name=cgroupns"],
        "Warnings": null
    });
    let mut info = info;
    if let (Some(head), Value::Object(tail)) = (info.as_object_mut(), rest) {
        head.extend(tail);
    }
    let version = json!({
        "Platform": {"Name": "Docker Engine (simulated by busbar-simnodes)"},
        "Components": [
            {"Name": "Engine", "Version": ENGINE_VERSION, "Details": {
                "ApiVersion": API_VERSION, "Arch": "amd64", "BuildTime": "2023-04-04T08:21:15.000000000+00:00",
                "Experimental": "false", "GitCommit": "5d6db84", "GoVersion": "go1.19.8",
                "KernelVersion": kernel, "MinAPIVersion": "1.12", "Os": "linux"}},
            {"Name": "containerd", "Version": "1.6.20~ds1", "Details": {"GitCommit": "1.6.20~ds1-1+b1"}},
            {"Name": "runc", "Version": "1.1.5+ds1", "Details": {"GitCommit": "1.1.5+ds1-1+b1"}},
            {"Name": "docker-init", "Version": "0.19.0", "Details": {"GitCommit": ""}}
        ],
        "Version": ENGINE_VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": "1.12",
        "GitCommit": "5d6db84",
        "GoVersion": "go1.19.8",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": kernel,
        "BuildTime": "2023-04-04T08:21:15.000000000+00:00"
    });
    let bytes = |v: &Value| serde_json::to_vec(v).expect("a JSON value serializes");
    NodeDocs {
        info: bytes(&info),
        version: bytes(&version),
        containers_all: bytes(&json!(all)),
        containers_running: bytes(&json!(up)),
        chain_status: bytes(&json!({
            "node": name, "revision": 1, "scopes": {"global": 1}, "source": "etcd", "updated_at": CREATED_BASE
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_counts() {
        let docs = node_docs(7, "sim7", 30);
        let all: Vec<Value> = serde_json::from_slice(&docs.containers_all).unwrap();
        let up: Vec<Value> = serde_json::from_slice(&docs.containers_running).unwrap();
        assert_eq!((all.len(), up.len()), (30, 20));
        assert_eq!(all[0]["Id"].as_str().unwrap().len(), 64);
        assert_eq!(all[3]["Names"], json!(["/c3"]));
        let info: Value = serde_json::from_slice(&docs.info).unwrap();
        assert_eq!(
            (
                info["Containers"].as_i64(),
                info["ContainersRunning"].as_i64()
            ),
            (Some(30), Some(20))
        );
        assert_eq!(info["Name"], "sim7");
        // Deterministic, and different per node.
        assert_eq!(node_docs(7, "sim7", 30).containers_all, docs.containers_all);
        assert_ne!(node_docs(8, "sim8", 30).containers_all, docs.containers_all);
    }
}
