//! Pod → demand conversion details not covered by the plan fixtures.

use km_offer_matcher::{Config, HostPort, InvalidPod, Matcher, PodKey, ScalarKind, Scalars};

use crate::fixture::parse;

fn demand(pod_line: &str, config_line: &str) -> Result<km_offer_matcher::PodDemand, InvalidPod> {
    let f = parse(&format!("{config_line}\n{pod_line}\n"));
    let m = Matcher::new(f.config).unwrap();
    m.demand(&f.pods[0])
}

#[test]
fn defaults_apply_per_resource() {
    let d = demand("pod p cpu=2", "").unwrap();
    assert_eq!(d.key, PodKey::new("default", "p"));
    assert_eq!(d.resources.get(ScalarKind::Cpus).milli(), 2000);
    assert_eq!(d.resources.get(ScalarKind::Mem).milli(), 64_000);
    let d = demand("pod p", "config default-cpu=0.1 default-mem=32").unwrap();
    assert_eq!(
        d.resources,
        Scalars::cpus_mem(
            km_offer_matcher::Scalar::from_milli(100),
            km_offer_matcher::Scalar::from_units(32)
        )
    );
}

#[test]
fn ports_and_mapping() {
    let d = demand("pod p port=80:0 port=8080 container=b port=81:0", "").unwrap();
    let hp: Vec<HostPort> = d.ports.iter().map(|p| p.host_port).collect();
    assert_eq!(hp, vec![HostPort::Any, HostPort::Fixed(8080), HostPort::Any]);
    assert_eq!(d.wildcard_ports(), 2);
    let d = demand("pod p port=80:0 port=8080", "config mapping=fixed").unwrap();
    assert_eq!(d.ports.len(), 1);
    assert_eq!(
        demand("pod p port=80:-1", ""),
        Err(InvalidPod::BadHostPort { container: "main".into(), port: -1 })
    );
}

#[test]
fn roles_are_trimmed_deduplicated_and_filtered() {
    let d = demand("pod p roles=,prod,*,prod,ops", "config framework-roles=*,prod").unwrap();
    assert_eq!(d.roles, vec!["prod".to_owned(), "*".to_owned()]);
    assert!(matches!(
        demand("pod p roles=ops", "config framework-roles=*,prod"),
        Err(InvalidPod::NoUsableRole { .. })
    ));
}

#[test]
fn wants_public_by_role_or_attribute() {
    let cfg = "config framework-roles=*,slave_public public-attr=public_ip";
    assert!(demand("pod p roles=slave_public", cfg).unwrap().wants_public);
    assert!(demand("pod p select=@public_ip=true", cfg).unwrap().wants_public);
    assert!(demand("pod p affinity=@public_ip:Exists", cfg).unwrap().wants_public);
    assert!(!demand("pod p", cfg).unwrap().wants_public);
}

#[test]
fn missing_name_and_bad_quantities_are_invalid() {
    let mut pod = parse("pod p\n").pods.remove(0);
    pod.metadata.name = None;
    let m = Matcher::new(Config::default()).unwrap();
    assert_eq!(m.demand(&pod), Err(InvalidPod::MissingName));
    let e = demand("pod p overhead-cpu=x", "").unwrap_err();
    assert_eq!(e.to_string(), "pod overhead: cpu overhead: \"x\" is not a quantity");
    let e = demand("pod p init=setup limit-mem=-1Gi", "").unwrap_err();
    assert_eq!(e.to_string(), "init container \"setup\": memory limits: \"-1Gi\" is negative");
}

#[test]
fn creation_time_and_priority() {
    let d = demand("pod p prio=7 created=42", "").unwrap();
    assert_eq!(d.priority, 7);
    assert_eq!(
        d.created,
        Some(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(42))
    );
}
