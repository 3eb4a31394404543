//! Service ClusterIPs and NodePorts. Each allocated address or port is its
//! own etcd key (`/registry/allocations/serviceips/<ip>`,
//! `/registry/allocations/nodeports/<port>`), claimed with a create-if-absent
//! transaction, so allocations never contend on a shared bitmap and a
//! released value is one delete.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, Cause};
use crate::registry::Kind;
use crate::storage::{Storage, StorageError};

const IP_PREFIX: &str = "/registry/allocations/serviceips/";
const PORT_PREFIX: &str = "/registry/allocations/nodeports/";

/// An IPv4 CIDR from which ClusterIPs are handed out (network and
/// broadcast addresses excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    base: u32,
    size: u32,
}

impl IpRange {
    pub fn parse(cidr: &str) -> Result<IpRange, String> {
        let (ip, bits) = cidr.split_once('/').ok_or_else(|| format!("{cidr:?} is not a CIDR"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{cidr:?}: {e}"))?;
        let bits: u32 = bits.parse().map_err(|e| format!("{cidr:?}: {e}"))?;
        if !(8..=30).contains(&bits) {
            return Err(format!("{cidr:?}: prefix length must be between 8 and 30"));
        }
        let mask = u32::MAX << (32 - bits);
        let network = u32::from(ip) & mask;
        Ok(IpRange { base: network + 1, size: (1u32 << (32 - bits)) - 2 })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n >= self.base && n < self.base + self.size
    }

    /// The range's first address: the `kubernetes` Service's.
    pub fn first(&self) -> Ipv4Addr {
        self.nth(0)
    }

    fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + i % self.size)
    }
}

/// A port range such as `30000-32767`.
pub fn parse_port_range(range: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = range
        .split_once('-')
        .ok_or_else(|| format!("{range:?} is not a range like 30000-32767"))?;
    let lo: u16 = lo.trim().parse().map_err(|e| format!("{range:?}: {e}"))?;
    let hi: u16 = hi.trim().parse().map_err(|e| format!("{range:?}: {e}"))?;
    if lo == 0 || hi < lo {
        return Err(format!("{range:?} is empty"));
    }
    Ok((lo, hi))
}

/// Allocation settings.
#[derive(Debug, Clone, Copy)]
pub struct Ranges {
    pub cluster_ips: IpRange,
    pub node_ports: (u16, u16),
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges { cluster_ips: IpRange { base: 0x0a00_0001, size: 254 }, node_ports: (30000, 32767) }
    }
}

fn start_offset(size: u32) -> u32 {
    use rand::Rng;
    rand::rng().random_range(0..size.max(1))
}

async fn claim<S: Storage>(storage: &S, key: &str) -> Result<bool, StorageError> {
    match storage.create(key, bytes::Bytes::from_static(b"{}"), None).await {
        Ok(_) => Ok(true),
        Err(StorageError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn invalid(kind: &Kind, name: &str, field: &str, value: &Value, why: &str) -> ApiError {
    ApiError::invalid(kind, name, vec![Cause::invalid(field, value, why)])
}

/// Values claimed for one service, released again if its write fails.
#[derive(Debug, Default)]
pub struct Claimed {
    pub ips: Vec<String>,
    pub ports: Vec<u16>,
}

impl Ranges {
    /// Fills in `spec.clusterIP(s)` and node ports of a service, claiming
    /// them. Values already present in `old` (an update) are kept.
    pub async fn allocate<S: Storage>(
        &self,
        storage: &S,
        kind: &Kind,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<Claimed> {
        let mut claimed = Claimed::default();
        match self.allocate_inner(storage, kind, svc, old, &mut claimed).await {
            Ok(()) => Ok(claimed),
            Err(e) => {
                self.release(storage, &claimed).await;
                Err(e)
            }
        }
    }

    async fn allocate_inner<S: Storage>(
        &self,
        storage: &S,
        kind: &Kind,
        svc: &mut Value,
        old: Option<&Value>,
        claimed: &mut Claimed,
    ) -> ApiResult<()> {
        let name = svc["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let backend = |e| ApiError::storage(kind, &name, e);
        let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP").to_owned();
        let old_ip = old
            .and_then(|o| o["spec"]["clusterIP"].as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let requested =
            svc["spec"]["clusterIP"].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        if ty != "ExternalName" {
            match (old_ip, requested) {
                (Some(old), None) => svc["spec"]["clusterIP"] = json!(old),
                (Some(old), Some(new)) if old != new => {
                    return Err(invalid(
                        kind,
                        &name,
                        "spec.clusterIP",
                        &json!(new),
                        "field is immutable",
                    ));
                }
                (Some(_), Some(_)) => {}
                (None, Some(ip)) if ip == "None" => {}
                (None, Some(ip)) => {
                    let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                        invalid(
                            kind,
                            &name,
                            "spec.clusterIP",
                            &json!(ip),
                            "must be a valid IP address, (e.g. 10.9.8.7)",
                        )
                    })?;
                    if !self.cluster_ips.contains(parsed) {
                        return Err(invalid(
                            kind,
                            &name,
                            "spec.clusterIP",
                            &json!(ip),
                            "provided IP is not in the valid range. The range of valid IPs is the service cluster IP range",
                        ));
                    }
                    if !claim(storage, &format!("{IP_PREFIX}{ip}")).await.map_err(backend)? {
                        return Err(invalid(
                            kind,
                            &name,
                            "spec.clusterIP",
                            &json!(ip),
                            "provided IP is already allocated",
                        ));
                    }
                    claimed.ips.push(ip);
                }
                (None, None) => {
                    let start = start_offset(self.cluster_ips.size);
                    let mut found = None;
                    for i in 0..self.cluster_ips.size {
                        let ip = self.cluster_ips.nth(start + i).to_string();
                        if claim(storage, &format!("{IP_PREFIX}{ip}")).await.map_err(backend)? {
                            found = Some(ip);
                            break;
                        }
                    }
                    let ip = found.ok_or_else(|| {
                        ApiError::Internal("the service cluster IP range is full".into())
                    })?;
                    svc["spec"]["clusterIP"] = json!(ip);
                    claimed.ips.push(ip);
                }
            }
            let ip = svc["spec"]["clusterIP"].clone();
            if svc["spec"]["clusterIPs"].is_null() {
                svc["spec"]["clusterIPs"] = json!([ip]);
            }
        }
        if ty != "NodePort" && ty != "LoadBalancer" {
            return Ok(());
        }
        let old_ports: Vec<(i64, i64)> = old
            .and_then(|o| o["spec"]["ports"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["port"].as_i64()?, p["nodePort"].as_i64()?)))
            .collect();
        let (lo, hi) = self.node_ports;
        let span = u32::from(hi - lo) + 1;
        let count = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..count {
            let port = &svc["spec"]["ports"][i];
            let field = format!("spec.ports[{i}].nodePort");
            let kept = old_ports
                .iter()
                .find(|(p, _)| Some(*p) == port["port"].as_i64())
                .map(|(_, np)| *np);
            match port["nodePort"].as_i64() {
                Some(np) if Some(np) == kept || old_ports.iter().any(|(_, o)| *o == np) => {}
                Some(np) => {
                    let valid = u16::try_from(np).ok().filter(|p| (lo..=hi).contains(p));
                    let Some(np) = valid else {
                        return Err(invalid(
                            kind,
                            &name,
                            &field,
                            &json!(np),
                            &format!(
                                "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                            ),
                        ));
                    };
                    if !claim(storage, &format!("{PORT_PREFIX}{np}")).await.map_err(backend)? {
                        return Err(invalid(
                            kind,
                            &name,
                            &field,
                            &json!(np),
                            "provided port is already allocated",
                        ));
                    }
                    claimed.ports.push(np);
                }
                None if kept.is_some() => svc["spec"]["ports"][i]["nodePort"] = json!(kept),
                None => {
                    let start = start_offset(span);
                    let mut found = None;
                    for j in 0..span {
                        let np = lo + ((start + j) % span) as u16;
                        if claim(storage, &format!("{PORT_PREFIX}{np}")).await.map_err(backend)? {
                            found = Some(np);
                            break;
                        }
                    }
                    let np = found
                        .ok_or_else(|| ApiError::Internal("the node port range is full".into()))?;
                    svc["spec"]["ports"][i]["nodePort"] = json!(np);
                    claimed.ports.push(np);
                }
            }
        }
        Ok(())
    }

    /// Releases what a deleted (or failed) service held.
    pub async fn release<S: Storage>(&self, storage: &S, claimed: &Claimed) {
        for ip in &claimed.ips {
            let _ = storage.delete(&format!("{IP_PREFIX}{ip}"), None).await;
        }
        for port in &claimed.ports {
            let _ = storage.delete(&format!("{PORT_PREFIX}{port}"), None).await;
        }
    }

    /// What a stored service holds (for release on delete), minus what
    /// `keep` (its replacement) still holds.
    pub fn held(svc: &Value, keep: Option<&Value>) -> Claimed {
        let ips = |v: &Value| -> Vec<String> {
            v["spec"]["clusterIP"]
                .as_str()
                .filter(|s| !s.is_empty() && *s != "None")
                .map(str::to_owned)
                .into_iter()
                .collect()
        };
        let ports = |v: &Value| -> Vec<u16> {
            v["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()))
                .collect()
        };
        let (keep_ips, keep_ports) = keep.map(|k| (ips(k), ports(k))).unwrap_or_default();
        Claimed {
            ips: ips(svc).into_iter().filter(|i| !keep_ips.contains(i)).collect(),
            ports: ports(svc).into_iter().filter(|p| !keep_ports.contains(p)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        let r = IpRange::parse("10.10.10.0/24").expect("cidr");
        assert!(r.contains("10.10.10.1".parse().expect("ip")));
        assert!(r.contains("10.10.10.254".parse().expect("ip")));
        assert!(!r.contains("10.10.10.255".parse().expect("ip")));
        assert!(!r.contains("10.10.10.0".parse().expect("ip")));
        assert_eq!(r.nth(0), Ipv4Addr::new(10, 10, 10, 1));
        assert!(IpRange::parse("10.0.0.0").is_err());
        assert_eq!(parse_port_range("30000-32767"), Ok((30000, 32767)));
        assert!(parse_port_range("5-1").is_err());
    }
}
