//! Scenario M of `docs/benchmarks.md`: the offer-matcher core alone.
//!
//! Agents: `cpus:4; mem:16384; disk:100000; ports:[31000-32000]`, attributes `rack` (10
//! racks) and `zone` (3 zones), one offer each; every second agent already runs the current
//! executor. Pods: mixed sizes (0.1/0.25/0.5/1 cpu at 40/30/20/10 %, 128–1024 MiB), 5 % with
//! the fixed host port 31080, 10 % with one wildcard port, 20 % with a nodeSelector on rack or
//! zone. Sizes: small 1,000 × 100, M 10,000 × 1,000, large 100,000 × 10,000.
//!
//! Run: `cargo bench -p km-offer-matcher` (set `KM_BENCH_LARGE=0` to skip the large one;
//! `KM_BENCH_SUMMARY_RUNS=N` sets how many plans the on-CPU summary line averages).
//!
//! Profiling: `KM_BENCH_PROFILE=binpack|spread_agents|spread_rack` (optionally
//! `KM_BENCH_PROFILE_RUNS=N`, default 1) skips criterion and plans scenario M N times, so an
//! instruction counter sees little besides the matcher, e.g.
//! `valgrind --tool=callgrind --toggle-collect='*Matcher::plan*' target/release/deps/plan-…`.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, criterion_group};
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use km_offer_matcher::{
    Attribute, Config, HostPort, Matcher, Offer, Outcome, PodDemand, PodKey, PortRequest, Resource,
    Scalar, Scalars, Strategy,
};

/// xorshift64*: deterministic input without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const EXECUTOR: &str = "km-bench";

fn offers(n: usize) -> Vec<Offer> {
    (0..n)
        .map(|i| {
            let mut o = Offer::new(
                format!("o{i:06}"),
                format!("a{i:06}"),
                format!("h{i:06}"),
                vec![
                    Resource::scalar("cpus", 4.0),
                    Resource::scalar("mem", 16384.0),
                    Resource::scalar("disk", 100_000.0),
                    Resource::ranges("ports", [(31000, 32000)]),
                ],
            );
            o.attributes = vec![
                Attribute::text("rack", format!("r{}", i % 10)),
                Attribute::text("zone", format!("z{}", i % 3)),
            ];
            if i % 2 == 0 {
                o.executor_ids = vec![EXECUTOR.to_owned()];
            }
            o
        })
        .collect()
}

struct PodSpecLite {
    name: String,
    cpu_milli: i64,
    mem_mib: i64,
    fixed_port: bool,
    wildcard_port: bool,
    selector: Option<(String, String)>,
}

fn pod_specs(n: usize, seed: u64) -> Vec<PodSpecLite> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let cpu_milli = match rng.below(10) {
                0..=3 => 100,
                4..=6 => 250,
                7..=8 => 500,
                _ => 1000,
            };
            let mem_mib = 128 << rng.below(4);
            let port = rng.below(100);
            let sel = rng.below(100);
            let selector = match sel {
                0..=9 => Some((
                    "k8s.mesosphere.io/attribute-rack".to_owned(),
                    format!("r{}", rng.below(10)),
                )),
                10..=19 => Some((
                    "k8s.mesosphere.io/attribute-zone".to_owned(),
                    format!("z{}", rng.below(3)),
                )),
                _ => None,
            };
            PodSpecLite {
                name: format!("pod-{i:06}"),
                cpu_milli,
                mem_mib,
                fixed_port: port < 5,
                wildcard_port: (5..15).contains(&port),
                selector,
            }
        })
        .collect()
}

fn demands(specs: &[PodSpecLite]) -> Vec<PodDemand> {
    specs
        .iter()
        .map(|s| {
            let mut d = PodDemand::new(
                PodKey::new("bench", s.name.clone()),
                Scalars::cpus_mem(Scalar::from_milli(s.cpu_milli), Scalar::from_units(s.mem_mib)),
            );
            let port = |host_port| PortRequest {
                container: "main".into(),
                container_port: 8080,
                protocol: "TCP".into(),
                name: None,
                host_port,
            };
            if s.fixed_port {
                d.ports.push(port(HostPort::Fixed(31080)));
            }
            if s.wildcard_port {
                d.ports.push(port(HostPort::Any));
            }
            if let Some(sel) = &s.selector {
                d.node_selector = vec![sel.clone()];
            }
            d
        })
        .collect()
}

fn pods(specs: &[PodSpecLite]) -> Vec<Pod> {
    specs
        .iter()
        .map(|s| {
            let mut requests = std::collections::BTreeMap::new();
            requests.insert("cpu".to_owned(), Quantity(format!("{}m", s.cpu_milli)));
            requests.insert("memory".to_owned(), Quantity(format!("{}Mi", s.mem_mib)));
            let mut ports = Vec::new();
            if s.fixed_port {
                ports.push(ContainerPort {
                    container_port: 8080,
                    host_port: Some(31080),
                    ..Default::default()
                });
            }
            if s.wildcard_port {
                ports.push(ContainerPort {
                    container_port: 8080,
                    host_port: Some(0),
                    ..Default::default()
                });
            }
            Pod {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some("bench".to_owned()),
                    ..Default::default()
                },
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "main".to_owned(),
                        resources: Some(ResourceRequirements {
                            requests: Some(requests),
                            ..Default::default()
                        }),
                        ports: Some(ports),
                        ..Default::default()
                    }],
                    node_selector: s.selector.clone().map(|(k, v)| [(k, v)].into_iter().collect()),
                    ..Default::default()
                }),
                status: None,
            }
        })
        .collect()
}

fn matcher(strategy: Strategy) -> Matcher {
    let mut config = Config { strategy, ..Config::default() };
    config.executor.id = EXECUTOR.to_owned();
    Matcher::new(config).expect("valid config")
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// On-CPU time of this thread (Linux `schedstat`), so figures survive a machine shared with
/// other builds; `None` elsewhere.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok().map(Duration::from_nanos)
}

/// Placed / unplaced counts and the mean on-CPU time per plan, printed once per scenario so the
/// figures can be read next to criterion's wall-clock time.
#[expect(clippy::print_stderr, reason = "a benchmark reports its scenario on stderr")]
fn summary(label: &str, m: &Matcher, d: &[PodDemand], o: &[Offer]) {
    let runs = std::env::var("KM_BENCH_SUMMARY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((200_000 / d.len().max(1)).clamp(3, 50) as u32);
    let before = thread_cpu();
    for _ in 0..runs {
        black_box(m.plan(d, o, &[], now()));
    }
    if let (Some(b), Some(a)) = (before, thread_cpu()) {
        eprintln!(
            "{label}: on-CPU {:.2} ms per plan (mean of {runs})",
            (a - b).as_secs_f64() * 1e3 / f64::from(runs)
        );
    }
    placement(label, m, d, o);
}

/// Placed / unplaced pods and offers used, with one example explanation.
#[expect(clippy::print_stderr, reason = "a benchmark reports its scenario on stderr")]
fn placement(label: &str, m: &Matcher, d: &[PodDemand], o: &[Offer]) {
    let plan = m.plan(d, o, &[], now());
    let unplaced =
        plan.outcomes.iter().filter(|x| matches!(x.outcome, Outcome::Unplaced(_))).count();
    let offers_used: usize = plan.launches.iter().map(|l| l.offer_ids.len()).sum();
    eprintln!(
        "{label}: {} pods, {} offers -> {} placed, {unplaced} unplaced, {offers_used} offers used",
        d.len(),
        o.len(),
        plan.placed()
    );
    if let Some(x) = plan.outcomes.iter().find(|x| matches!(x.outcome, Outcome::Unplaced(_)))
        && let Outcome::Unplaced(why) = &x.outcome
    {
        eprintln!("  e.g. {}: {why}", x.pod);
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    g.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let sizes: &[(&str, usize, usize)] =
        &[("small_1k_x_100", 1_000, 100), ("M_10k_x_1k", 10_000, 1_000)];
    for &(label, n_pods, n_offers) in sizes {
        let specs = pod_specs(n_pods, 42);
        let d = demands(&specs);
        let o = offers(n_offers);
        for (name, strategy) in [
            ("binpack", Strategy::Binpack),
            ("spread_agents", Strategy::Spread { by: None }),
            ("spread_rack", Strategy::Spread { by: Some("rack".to_owned()) }),
        ] {
            let m = matcher(strategy);
            summary(&format!("{label}/{name}"), &m, &d, &o);
            g.bench_function(format!("{label}/{name}"), |b| {
                b.iter(|| black_box(m.plan(&d, &o, &[], now())))
            });
        }
    }
    // M including the conversion of k8s Pods into demands.
    let specs = pod_specs(10_000, 42);
    let p = pods(&specs);
    let o = offers(1_000);
    let m = matcher(Strategy::Binpack);
    g.bench_function("M_10k_x_1k/binpack_from_k8s_pods", |b| {
        b.iter_batched(
            || (),
            |()| black_box(m.plan_pods(&p, &o, &[], now())),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    if std::env::var("KM_BENCH_LARGE").as_deref() != Ok("0") {
        let mut g = c.benchmark_group("plan_large");
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(10));
        let specs = pod_specs(100_000, 42);
        let d = demands(&specs);
        let o = offers(10_000);
        for (name, strategy) in [
            ("binpack", Strategy::Binpack),
            ("spread_rack", Strategy::Spread { by: Some("rack".to_owned()) }),
        ] {
            let m = matcher(strategy);
            summary(&format!("large_100k_x_10k/{name}"), &m, &d, &o);
            g.bench_function(format!("large_100k_x_10k/{name}"), |b| {
                b.iter(|| black_box(m.plan(&d, &o, &[], now())))
            });
        }
        g.finish();
    }
}

/// `KM_BENCH_PROFILE`: scenario M without criterion (see the module docs).
fn profile(strategy: &str) {
    let strategy = match strategy {
        "binpack" => Strategy::Binpack,
        "spread_agents" => Strategy::Spread { by: None },
        "spread_rack" => Strategy::Spread { by: Some("rack".to_owned()) },
        other => panic!("KM_BENCH_PROFILE={other:?}: binpack, spread_agents or spread_rack"),
    };
    let runs: usize =
        std::env::var("KM_BENCH_PROFILE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let (label, n_pods, n_offers) = match std::env::var("KM_BENCH_PROFILE_SIZE").as_deref() {
        Ok("small") => ("small_1k_x_100", 1_000, 100),
        Ok("large") => ("large_100k_x_10k", 100_000, 10_000),
        _ => ("M_10k_x_1k", 10_000, 1_000),
    };
    let d = demands(&pod_specs(n_pods, 42));
    let o = offers(n_offers);
    let m = matcher(strategy);
    for _ in 0..runs {
        black_box(m.plan(&d, &o, &[], now()));
    }
    placement(label, &m, &d, &o);
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(strategy) = std::env::var("KM_BENCH_PROFILE") {
        profile(&strategy);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
