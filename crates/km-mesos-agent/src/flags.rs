//! Parsing of the agent's Mesos-style flag values: `--resources`,
//! `--attributes`, `--master`, and the detection of the resources a machine
//! has when `--resources` leaves some out (as Mesos's containerizer does).
//!
//! `--resources` and `--attributes` use Mesos's text syntax, parsed by
//! `km_resources` into km's resource model; the agent converts them to the
//! wire (post-refinement reservations) when it registers.

use km_resources::{Attribute, Resource};

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

/// Parses `--resources` (Mesos syntax, see [`km_resources::parse_resources`]).
/// Empty input gives no resources.
pub fn parse_resources(input: &str) -> Result<Vec<Resource>, FlagError> {
    km_resources::parse_resources(input)
        .map_err(|e| err("resources", &e.entry, e.problem.to_string()))
}

/// Parses `--attributes` (Mesos syntax, see [`km_resources::parse_attributes`]).
pub fn parse_attributes(input: &str) -> Result<Vec<Attribute>, FlagError> {
    km_resources::parse_attributes(input)
        .map_err(|e| err("attributes", &e.entry, e.problem.to_string()))
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

/// Parses a size as stout writes one (`512MB`, `8GB`, `1.5GB`, `100B`; units `B`, `KB`,
/// `MB`, `GB`, `TB`, each 1024 times the one before) for flag `flag`. The result is in bytes
/// and must fit in a `u64`.
pub fn parse_bytes(flag: &'static str, input: &str) -> Result<u64, FlagError> {
    const UNITS: &[(&str, f64)] = &[
        ("B", 1.0),
        ("KB", 1024.0),
        ("MB", 1_048_576.0),
        ("GB", 1_073_741_824.0),
        ("TB", 1_099_511_627_776.0),
    ];
    let s = input.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, unit) = (s[..split].trim(), &s[split..]);
    let (_, scale) = UNITS.iter().find(|(name, _)| *name == unit).ok_or_else(|| {
        err(flag, input, "expected a number and a unit: B, KB, MB, GB or TB (e.g. 8GB)")
    })?;
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| err(flag, input, "not a number"))?;
    if value < 0.0 || number.starts_with('-') {
        return Err(err(flag, input, "must not be negative"));
    }
    let bytes = (value * scale).round();
    if bytes >= u64::MAX as f64 {
        return Err(err(flag, input, "too large"));
    }
    Ok(bytes as u64)
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
        resources.push(Resource::scalar("cpus", machine.cpus.unwrap_or(1) as f64));
    }
    if !has(resources, "mem") {
        let mb = machine
            .mem_bytes
            .map_or(1024, |m| if m >= 2 * GIB { (m - GIB) / MIB } else { m / 2 / MIB });
        resources.push(Resource::scalar("mem", mb as f64));
    }
    if !has(resources, "disk") {
        let mb = machine
            .disk_bytes
            .map_or(10_240, |d| if d >= 10 * GIB { (d - 5 * GIB) / MIB } else { d / 2 / MIB });
        resources.push(Resource::scalar("disk", mb as f64));
    }
    if !has(resources, "ports") {
        resources.push(Resource::ranges("ports", [(31_000, 32_000)]));
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

#[cfg(test)]
mod tests {
    use super::*;
    use km_resources::{Ranges, Scalar};

    fn scalar_of(rs: &[Resource], name: &str) -> Scalar {
        rs.iter().find(|r| r.name == name).and_then(Resource::as_scalar).unwrap()
    }

    #[test]
    fn parses_the_documented_example() {
        let rs = parse_resources("cpus:4;mem(web):8192;disk:20000;ports:[31000-32000]").unwrap();
        assert_eq!(rs.len(), 4);
        assert_eq!(scalar_of(&rs, "cpus"), Scalar::from_units(4));
        assert_eq!(rs[1].role(), "web");
        assert_eq!(rs[3].as_ranges(), Some(&Ranges::from_pairs([(31000, 32000)])));
        let attrs = parse_attributes("rack:r1;level:3").unwrap();
        assert_eq!(attrs[0], Attribute::text("rack", "r1"));
    }

    #[test]
    fn errors_name_flag_and_token() {
        let e = parse_resources("cpus:4;mem:lots").unwrap_err();
        assert_eq!((e.flag, e.token.as_str()), ("resources", "mem:lots"));
        assert_eq!(
            e.to_string(),
            "invalid --resources 'mem:lots': 'lots' is not a number, [ranges] or {set}"
        );
        assert_eq!(parse_resources("cpus(web:1").unwrap_err().token, "cpus(web:1");
        assert_eq!(
            parse_resources("cpus( bad role):1").unwrap_err().problem,
            "role \"bad role\" contains a space"
        );
        assert!(
            parse_resources("ports:[5-1]").unwrap_err().problem.contains("ends before it begins")
        );
        let e = parse_attributes("rack:r1;zone").unwrap_err();
        assert_eq!((e.flag, e.token.as_str()), ("attributes", "zone"));
        assert!(parse_attributes("rack:").is_err());
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
        assert_eq!(scalar_of(&rs, "cpus"), Scalar::from_units(2));
        assert_eq!(scalar_of(&rs, "mem"), Scalar::from_units(15 * 1024));
        assert_eq!(scalar_of(&rs, "disk"), Scalar::from_units(95 * 1024));
        let ports = rs.iter().find(|r| r.name == "ports").unwrap();
        assert_eq!(ports, &Resource::ranges("ports", [(31000, 32000)]));

        let small = Machine { cpus: None, mem_bytes: Some(GIB), disk_bytes: Some(8 * GIB) };
        let mut rs = Vec::new();
        fill_defaults(&mut rs, small);
        assert_eq!(scalar_of(&rs, "cpus"), Scalar::from_units(1));
        assert_eq!(scalar_of(&rs, "mem"), Scalar::from_units(512));
        assert_eq!(scalar_of(&rs, "disk"), Scalar::from_units(4096));
        assert!(rs.iter().all(|r| r.reservations.is_empty()), "defaults are unreserved");
        let mut rs = parse_resources("mem(web):100").unwrap();
        fill_defaults(&mut rs, Machine { cpus: Some(1), mem_bytes: None, disk_bytes: None });
        assert_eq!(
            rs.iter().filter(|r| r.name == "mem").count(),
            1,
            "a reserved mem counts as given"
        );
        assert_eq!(scalar_of(&rs, "disk"), Scalar::from_units(10240));
    }

    #[test]
    fn sizes_in_stout_units() {
        assert_eq!(parse_bytes("f", "100B"), Ok(100));
        assert_eq!(parse_bytes("f", "2KB"), Ok(2048));
        assert_eq!(parse_bytes("f", "512MB"), Ok(512 << 20));
        assert_eq!(parse_bytes("f", "8GB"), Ok(8 << 30));
        assert_eq!(parse_bytes("f", "1.5GB"), Ok(3 << 29));
        assert_eq!(parse_bytes("f", "1TB"), Ok(1 << 40));
        assert_eq!(parse_bytes("f", "0B"), Ok(0));
        for bad in ["8", "8gb", "GB", "-1GB", "xGB", "NaNGB", "99999999999TB", "8 GiB"] {
            let e = parse_bytes("fetcher_max_size", bad).unwrap_err();
            assert_eq!((e.flag, e.token.as_str()), ("fetcher_max_size", bad));
        }
        assert!(parse_bytes("f", "-1GB").unwrap_err().problem.contains("negative"));
        assert!(parse_bytes("f", "99999999999TB").unwrap_err().problem.contains("too large"));
    }
}
