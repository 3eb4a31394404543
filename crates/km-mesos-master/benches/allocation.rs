//! Allocation cycle time of `km mesos-master`'s allocator (the pure core, no
//! IO): one run over N agents for F frameworks, all agents free. Compare with
//! Mesos's allocator benchmarks (≈0.1–0.2 s per cycle at 1,000 agents).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use km_mesos_master::bench::Cluster;

fn allocation(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocation_cycle");
    group.sample_size(10);
    for (agents, frameworks) in [(1_000, 1), (1_000, 100), (10_000, 1), (10_000, 1_000)] {
        let mut cluster = Cluster::new(agents, frameworks);
        let offers = cluster.allocate();
        assert_eq!(offers, agents, "every free agent is offered once per cycle");
        group.throughput(Throughput::Elements(offers as u64));
        group.bench_function(BenchmarkId::new(format!("{frameworks}_frameworks"), agents), |b| {
            b.iter(|| cluster.allocate());
        });
    }
    group.finish();
}

criterion_group!(benches, allocation);
criterion_main!(benches);
