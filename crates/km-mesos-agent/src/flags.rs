//! Parsing of the agent's Mesos-style flag values: `--resources`,
//! `--attributes`, `--master`, and the detection of the resources a machine
//! has when `--resources` leaves some out (as Mesos's containerizer does).
//!
//! Syntax (apache/mesos `Resources::parse`, `Attributes::parse`):
//!
//! - resources: `name(role):value;…`, value a number (SCALAR), `[a-b,c-d]`
//!   (RANGES) or `{x,y}` (SET); no role means `*` (unreserved). A role other
//!   than `*` is a static reservation, written in the post-refinement format
//!   (`reservations: [{type: STATIC, role}]`) that agents with the
//!   RESERVATION_REFINEMENT capability use.
//! - attributes: `name:value;…`, value a number (SCALAR), `[..]` (RANGES),
//!   `{..}` (SET), anything else TEXT.

use km_mesos::v1::{self, Attribute, Resource, Value, value};

/// A flag value that does not parse; names the flag and the bad token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --{flag} '{token}': {problem}")]
pub struct FlagError {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// The offending token (one `;`-separated element, or the whole value).
    pub token: String,
    /// What is wrong with it.
    pub problem: String,
}

fn err(flag: &'static str, token: &str, problem: impl Into<String>) -> FlagError {
    FlagError { flag, token: token.to_owned(), problem: problem.into() }
}

fn ranges(r: &[(u64, u64)]) -> value::Ranges {
    value::Ranges { range: r.iter().map(|&(begin, end)| value::Range { begin, end }).collect() }
}

/// Builds a resource with the given role (`*` = unreserved).
pub fn resource(name: &str, role: &str, value: Value) -> Resource {
    let mut r = Resource { name: name.to_owned(), ..Resource::default() };
    r.r#type = value.r#type;
    r.scalar = value.scalar;
    r.ranges = value.ranges;
    r.set = value.set;
    if role != "*" {
        let mut reservation =
            v1::resource::ReservationInfo { role: Some(role.to_owned()), ..Default::default() };
        reservation.set_type(v1::resource::reservation_info::Type::Static);
        r.reservations.push(reservation);
    }
    r
}

/// A scalar `Value`.
pub fn scalar(v: f64) -> Value {
    let mut value = Value { scalar: Some(value::Scalar { value: v }), ..Value::default() };
    value.set_type(value::Type::Scalar);
    value
}

/// A ranges `Value`.
pub fn ranges_value(r: &[(u64, u64)]) -> Value {
    let mut value = Value { ranges: Some(ranges(r)), ..Value::default() };
    value.set_type(value::Type::Ranges);
    value
}

/// The role of a resource: the last reservation's, else `role`, else `*`.
#[allow(deprecated)]
pub fn role_of(r: &Resource) -> &str {
    r.reservations.last().and_then(|res| res.role.as_deref()).or(r.role.as_deref()).unwrap_or("*")
}

/// Parses `--resources` (Mesos syntax, see [`km_mesos::flags`]). Empty input gives no resources.
pub fn parse_resources(input: &str) -> Result<Vec<Resource>, FlagError> {
    km_mesos::flags::parse_resources(input).map_err(|e| err("resources", &e.entry, e.problem))
}

/// Parses `--attributes` (Mesos syntax, see [`km_mesos::flags`]).
pub fn parse_attributes(input: &str) -> Result<Vec<Attribute>, FlagError> {
    km_mesos::flags::parse_attributes(input).map_err(|e| err("attributes", &e.entry, e.problem))
}

/// Normalises `--master` (`host:port` or `http://host:port[/]`) to a base
/// URL without trailing slash.
pub fn parse_master(input: &str) -> Result<String, FlagError> {
    let s = input.trim();
    if s.starts_with("https://") {
        return Err(err("master", input, "https is not supported (km is built without TLS)"));
    }
    let rest = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| err("master", input, "expected host:port or http://host:port"))?;
    if host.is_empty() || host.contains('/') {
        return Err(err("master", input, "expected host:port or http://host:port"));
    }
    port.parse::<u16>()
        .map_err(|_| err("master", input, format!("'{port}' is not a port number")))?;
    Ok(format!("http://{rest}"))
}

/// What the machine has, for the resources `--resources` leaves out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Machine {
    /// Host CPUs.
    pub cpus: Option<usize>,
    /// Total RAM in bytes.
    pub mem_bytes: Option<u64>,
    /// Size of the work_dir filesystem in bytes.
    pub disk_bytes: Option<u64>,
}

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Adds `cpus`, `mem`, `disk` and `ports` when no resource of that name was
/// given, as Mesos computes them (role `*`).
pub fn fill_defaults(resources: &mut Vec<Resource>, machine: Machine) {
    let has = |rs: &[Resource], n: &str| rs.iter().any(|r| r.name == n);
    if !has(resources, "cpus") {
        resources.push(resource("cpus", "*", scalar(machine.cpus.unwrap_or(1) as f64)));
    }
    if !has(resources, "mem") {
        let mb = machine
            .mem_bytes
            .map_or(1024, |m| if m >= 2 * GIB { (m - GIB) / MIB } else { m / 2 / MIB });
        resources.push(resource("mem", "*", scalar(mb as f64)));
    }
    if !has(resources, "disk") {
        let mb = machine
            .disk_bytes
            .map_or(10_240, |d| if d >= 10 * GIB { (d - 5 * GIB) / MIB } else { d / 2 / MIB });
        resources.push(resource("disk", "*", scalar(mb as f64)));
    }
    if !has(resources, "ports") {
        resources.push(resource("ports", "*", ranges_value(&[(31_000, 32_000)])));
    }
}

/// Looks at this machine: CPUs, `/proc/meminfo` and the work_dir filesystem.
pub fn detect_machine(work_dir: &std::path::Path) -> Machine {
    let cpus = std::thread::available_parallelism().ok().map(usize::from);
    let mem_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let disk_bytes =
        nix::sys::statvfs::statvfs(work_dir).ok().map(|s| s.blocks() * s.fragment_size());
    Machine { cpus, mem_bytes, disk_bytes }
}

/// The machine's hostname (Mesos's default for `--hostname`).
pub fn machine_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Renders a value as Mesos's `/state` does (`4`, `[31000-32000]`, `{a,b}`).
pub fn render_value(
    ty: i32,
    s: Option<&value::Scalar>,
    r: Option<&value::Ranges>,
    set: Option<&value::Set>,
    t: Option<&value::Text>,
) -> serde_json::Value {
    match value::Type::try_from(ty).ok() {
        Some(value::Type::Scalar) => serde_json::json!(s.map_or(0.0, |s| s.value)),
        Some(value::Type::Ranges) => {
            let items: Vec<String> = r
                .map(|r| r.range.iter().map(|x| format!("{}-{}", x.begin, x.end)).collect())
                .unwrap_or_default();
            serde_json::json!(format!("[{}]", items.join(", ")))
        }
        Some(value::Type::Set) => {
            serde_json::json!(format!("{{{}}}", set.map(|s| s.item.join(", ")).unwrap_or_default()))
        }
        Some(value::Type::Text) => {
            serde_json::json!(t.map(|t| t.value.clone()).unwrap_or_default())
        }
        None => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_of(rs: &[Resource], name: &str) -> f64 {
        rs.iter().find(|r| r.name == name).and_then(|r| r.scalar.as_ref()).map(|s| s.value).unwrap()
    }

    #[test]
    fn parses_the_documented_example() {
        let rs = parse_resources("cpus:4;mem:8192;disk:20000;ports:[31000-32000]").unwrap();
        assert_eq!(rs.len(), 4);
        assert_eq!(scalar_of(&rs, "cpus"), 4.0);
        assert_eq!(scalar_of(&rs, "mem"), 8192.0);
        let ports = rs.iter().find(|r| r.name == "ports").unwrap();
        assert_eq!(ports.r#type, value::Type::Ranges as i32);
        assert_eq!(
            ports.ranges.as_ref().unwrap().range,
            vec![value::Range { begin: 31000, end: 32000 }]
        );
        assert!(rs.iter().all(|r| r.reservations.is_empty() && role_of(r) == "*"));
    }

    #[test]
    fn roles_ranges_and_sets() {
        let rs =
            parse_resources("cpus(web):2.5; ports(eng/backend):[1-2, 10-20]; gpus_ids:{a,b} ;")
                .unwrap();
        assert_eq!(role_of(&rs[0]), "web");
        assert_eq!(
            rs[0].reservations[0].r#type,
            Some(v1::resource::reservation_info::Type::Static as i32)
        );
        assert_eq!(scalar_of(&rs, "cpus"), 2.5);
        assert_eq!(role_of(&rs[1]), "eng/backend");
        assert_eq!(rs[1].ranges.as_ref().unwrap().range.len(), 2);
        assert_eq!(rs[2].set.as_ref().unwrap().item, vec!["a", "b"]);
        assert_eq!(role_of(&rs[2]), "*");
        let star = parse_resources("mem(*):1").unwrap();
        assert!(star[0].reservations.is_empty());
    }

    #[test]
    fn resource_errors_name_flag_and_token() {
        let e = parse_resources("cpus:4;mem:lots").unwrap_err();
        assert_eq!(e.flag, "resources");
        assert_eq!(e.token, "mem:lots");
        assert!(e.to_string().starts_with("invalid --resources 'mem:lots':"), "{e}");
        assert_eq!(parse_resources("cpus").unwrap_err().token, "cpus");
        assert_eq!(parse_resources("cpus(web:1").unwrap_err().token, "cpus(web:1");
        assert!(parse_resources("cpus( bad role):1").is_err());
        assert!(
            parse_resources("ports:[5-1]").unwrap_err().problem.contains("ends before it begins")
        );
        assert!(parse_resources("ports:[1-x]").is_err());
        assert!(parse_resources("ports:[1-2").is_err());
        assert!(parse_resources("cpus:-1").is_err());
        assert!(parse_resources(":1").is_err());
        assert!(parse_resources("cpus(-x):1").is_err());
    }

    #[test]
    fn attributes_get_their_types() {
        let a = parse_attributes("rack:r1;zone:a;level:3;ids:[1-5];tags:{x,y};ver:1.2.3").unwrap();
        let ty = |i: usize| value::Type::try_from(a[i].r#type).unwrap();
        assert_eq!((ty(0), a[0].text.as_ref().unwrap().value.as_str()), (value::Type::Text, "r1"));
        assert_eq!(ty(1), value::Type::Text);
        assert_eq!((ty(2), a[2].scalar.unwrap().value), (value::Type::Scalar, 3.0));
        assert_eq!(ty(3), value::Type::Ranges);
        assert_eq!(ty(4), value::Type::Set);
        assert_eq!(ty(5), value::Type::Text);
        let e = parse_attributes("rack:r1;zone").unwrap_err();
        assert_eq!((e.flag, e.token.as_str()), ("attributes", "zone"));
        assert!(parse_attributes("rack:").is_err());
        assert!(parse_attributes("ids:[1-").is_err());
    }

    #[test]
    fn master_spellings() {
        assert_eq!(parse_master("127.0.0.1:5050").unwrap(), "http://127.0.0.1:5050");
        assert_eq!(parse_master("http://m1:5050/").unwrap(), "http://m1:5050");
        assert!(parse_master("m1").unwrap_err().to_string().contains("--master 'm1'"));
        assert!(parse_master("m1:x").is_err());
        assert!(parse_master("https://m1:5050").is_err());
    }

    #[test]
    fn defaults_follow_mesos() {
        let machine =
            Machine { cpus: Some(8), mem_bytes: Some(16 * GIB), disk_bytes: Some(100 * GIB) };
        let mut rs = parse_resources("cpus:2").unwrap();
        fill_defaults(&mut rs, machine);
        assert_eq!(scalar_of(&rs, "cpus"), 2.0);
        assert_eq!(scalar_of(&rs, "mem"), 15.0 * 1024.0);
        assert_eq!(scalar_of(&rs, "disk"), 95.0 * 1024.0);
        let ports = rs.iter().find(|r| r.name == "ports").unwrap();
        assert_eq!(
            ports.ranges.as_ref().unwrap().range,
            vec![value::Range { begin: 31000, end: 32000 }]
        );

        let small = Machine { cpus: None, mem_bytes: Some(GIB), disk_bytes: Some(8 * GIB) };
        let mut rs = Vec::new();
        fill_defaults(&mut rs, small);
        assert_eq!(scalar_of(&rs, "cpus"), 1.0);
        assert_eq!(scalar_of(&rs, "mem"), 512.0);
        assert_eq!(scalar_of(&rs, "disk"), 4096.0);
        let mut rs = parse_resources("mem(web):100").unwrap();
        fill_defaults(&mut rs, Machine { cpus: Some(1), mem_bytes: None, disk_bytes: None });
        assert_eq!(
            rs.iter().filter(|r| r.name == "mem").count(),
            1,
            "a reserved mem counts as given"
        );
        assert_eq!(scalar_of(&rs, "disk"), 10240.0);
    }

    #[test]
    fn renders_values_like_state_json() {
        let rs = parse_resources("ports:[1-2,5-6];cpus:1.5").unwrap();
        let r = &rs[0];
        assert_eq!(
            render_value(r.r#type, None, r.ranges.as_ref(), None, None),
            serde_json::json!("[1-2, 5-6]")
        );
        let c = &rs[1];
        assert_eq!(
            render_value(c.r#type, c.scalar.as_ref(), None, None, None),
            serde_json::json!(1.5)
        );
    }
}
