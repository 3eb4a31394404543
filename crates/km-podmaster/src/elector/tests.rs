//! Unit tests of the decision core: time is an input, so every case is deterministic.

use super::*;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn timing() -> Timing {
    Timing { sleep: 5 * SEC, ttl: 30 * SEC }
}

fn error(msg: &str) -> Observation {
    Observation::EtcdError { error: msg.to_owned(), orphan: None }
}

/// An elector that became master with lease 7 (TTL 30 s) requested at `t0`.
fn master(t0: Instant) -> Elector {
    let mut e = Elector::new(timing());
    let d = e.observe(t0 + 10 * MS, Observation::Acquired { lease: 7, ttl: 30 * SEC, sent_at: t0 });
    assert_eq!(d.events, [Event::BecameMaster { lease: 7, ttl: 30 * SEC }]);
    assert_eq!(d.actions, [Action::SyncDest]);
    e
}

#[test]
fn margin_is_a_tenth_of_the_ttl_but_at_least_a_second() {
    assert_eq!(fence_margin(2 * SEC), SEC);
    assert_eq!(fence_margin(10 * SEC), SEC);
    assert_eq!(fence_margin(30 * SEC), 3 * SEC);
    assert_eq!(fence_margin(300 * SEC), 30 * SEC);
}

#[test]
fn renew_interval_is_sleep_unless_the_ttl_needs_three_renewals_per_window() {
    assert_eq!(timing().renew_interval(30 * SEC), 5 * SEC);
    // ttl 30 s, margin 3 s: window 27 s, at most 9 s between renewals.
    assert_eq!(Timing { sleep: 20 * SEC, ttl: 30 * SEC }.renew_interval(30 * SEC), 9 * SEC);
    let tight = Timing { sleep: 200 * MS, ttl: 2 * SEC };
    assert_eq!(tight.renew_interval(2 * SEC), 200 * MS);
}

#[test]
fn a_new_elector_campaigns_and_keeps_dest_absent() {
    let t0 = Instant::now();
    let mut e = Elector::new(timing());
    assert_eq!(e.next_step(), Step::Campaign { revoke_first: None });
    assert_eq!(e.fence_at(), None);
    let d = e.observe(t0, Observation::NotAcquired { holder: Some("node-b".into()) });
    assert_eq!(d.actions, [Action::RemoveDest]);
    assert_eq!(d.events, [Event::Following { holder: "node-b".into() }]);
    assert!(!e.is_master());
}

#[test]
fn the_holder_is_reported_once_per_change() {
    let t0 = Instant::now();
    let mut e = Elector::new(timing());
    let held_by = |h: &str| Observation::NotAcquired { holder: Some(h.into()) };
    assert_eq!(e.observe(t0, held_by("a")).events.len(), 1);
    assert!(e.observe(t0 + 5 * SEC, held_by("a")).events.is_empty());
    assert_eq!(
        e.observe(t0 + 10 * SEC, held_by("b")).events,
        [Event::Following { holder: "b".into() }]
    );
    assert!(e.observe(t0 + 15 * SEC, Observation::NotAcquired { holder: None }).events.is_empty());
}

#[test]
fn a_master_syncs_after_every_renewal() {
    let t0 = Instant::now();
    let mut e = master(t0);
    assert_eq!(e.next_step(), Step::Renew { lease: 7 });
    let d = e.observe(
        t0 + 5 * SEC,
        Observation::Renewed { lease: 7, ttl: 30 * SEC, sent_at: t0 + 5 * SEC },
    );
    assert_eq!(d.actions, [Action::SyncDest]);
    assert!(d.events.is_empty());
}

#[test]
fn fence_deadline_counts_from_the_send_time_of_the_last_acknowledged_renewal() {
    let t0 = Instant::now();
    let mut e = master(t0);
    assert_eq!(e.fence_at(), Some(t0 + 27 * SEC));
    // The answer arrived late; only the send time counts.
    e.observe(
        t0 + 9 * SEC,
        Observation::Renewed { lease: 7, ttl: 30 * SEC, sent_at: t0 + 5 * SEC },
    );
    assert_eq!(e.fence_at(), Some(t0 + 32 * SEC));
    // A reordered older acknowledgement does not move the deadline back.
    e.observe(
        t0 + 10 * SEC,
        Observation::Renewed { lease: 7, ttl: 30 * SEC, sent_at: t0 + 4 * SEC },
    );
    assert_eq!(e.fence_at(), Some(t0 + 32 * SEC));
}

#[test]
fn a_master_keeps_its_belief_through_etcd_errors_until_the_fence_deadline() {
    let t0 = Instant::now();
    let mut e = master(t0);
    let d = e.observe(t0 + 5 * SEC, error("connection refused"));
    assert_eq!(d.events, [Event::EtcdUnreachable { error: "connection refused".into() }]);
    assert_eq!(d.actions, [Action::SyncDest]);
    assert!(e.is_master());

    // Further errors are not reported again.
    assert!(e.observe(t0 + 10 * SEC, error("connection refused")).events.is_empty());
    assert!(e.tick(t0 + 27 * SEC - MS).actions.is_empty());

    let d = e.tick(t0 + 27 * SEC);
    assert_eq!(d.actions, [Action::RemoveDest]);
    assert_eq!(
        d.events,
        [Event::LostMastership { reason: LossReason::Fenced { since: 27 * SEC } }]
    );
    assert!(!e.is_master());
    // The lease may still be alive in etcd: revoke it before campaigning again.
    assert_eq!(e.next_step(), Step::Campaign { revoke_first: Some(7) });
}

#[test]
fn an_exchange_that_ends_past_the_deadline_fences_even_if_it_failed() {
    let t0 = Instant::now();
    let mut e = master(t0);
    let d = e.observe(t0 + 28 * SEC, error("timed out"));
    assert_eq!(d.actions, [Action::RemoveDest]);
    assert!(matches!(
        d.events.as_slice(),
        [
            Event::EtcdUnreachable { .. },
            Event::LostMastership { reason: LossReason::Fenced { .. } }
        ]
    ));
}

#[test]
fn a_renewal_acknowledged_late_but_sent_in_time_keeps_mastership() {
    let t0 = Instant::now();
    let mut e = master(t0);
    // Sent at 20 s, acknowledged at 27.5 s: etcd restarted the TTL at or
    // after 20 s, so the lease lives until at least 50 s.
    let d = e.observe(
        t0 + 27 * SEC + 500 * MS,
        Observation::Renewed { lease: 7, ttl: 30 * SEC, sent_at: t0 + 20 * SEC },
    );
    assert_eq!(d.actions, [Action::SyncDest]);
    assert_eq!(e.fence_at(), Some(t0 + 47 * SEC));
}

#[test]
fn losing_the_lease_or_key_in_etcd_removes_dest_at_once() {
    let t0 = Instant::now();
    let mut e = master(t0);
    let d = e.observe(
        t0 + 5 * SEC,
        Observation::Lost { lease: 7, reason: "the key was deleted".into() },
    );
    assert_eq!(d.actions, [Action::RemoveDest]);
    assert_eq!(
        d.events,
        [Event::LostMastership { reason: LossReason::Etcd("the key was deleted".into()) }]
    );
    assert_eq!(e.next_step(), Step::Campaign { revoke_first: Some(7) });

    let d = e.observe(t0 + 6 * SEC, Observation::Revoked { lease: 7 });
    assert_eq!(d.actions, [Action::RemoveDest]);
    assert_eq!(e.next_step(), Step::Campaign { revoke_first: None });
}

#[test]
fn observations_about_other_leases_are_ignored() {
    let t0 = Instant::now();
    let mut e = master(t0);
    e.observe(t0 + SEC, Observation::Lost { lease: 99, reason: "stale".into() });
    assert!(e.is_master());
    e.observe(
        t0 + 2 * SEC,
        Observation::Renewed { lease: 99, ttl: 30 * SEC, sent_at: t0 + 2 * SEC },
    );
    assert_eq!(e.fence_at(), Some(t0 + 27 * SEC));
}

#[test]
fn reachability_changes_are_reported_once_each_way() {
    let t0 = Instant::now();
    let mut e = Elector::new(timing());
    let mut events = Vec::new();
    for i in 0..5 {
        events.extend(e.observe(t0 + i * SEC, error("refused")).events);
    }
    for i in 5..10 {
        events.extend(
            e.observe(t0 + i * SEC, Observation::NotAcquired { holder: Some("x".into()) }).events,
        );
    }
    assert_eq!(
        events,
        [
            Event::EtcdUnreachable { error: "refused".into() },
            Event::EtcdReachable,
            Event::Following { holder: "x".into() },
        ]
    );
}

#[test]
fn a_standby_removes_dest_even_when_etcd_is_down() {
    let t0 = Instant::now();
    let mut e = Elector::new(timing());
    assert_eq!(e.observe(t0, error("refused")).actions, [Action::RemoveDest]);
}

#[test]
fn a_lease_granted_in_a_failed_exchange_is_revoked_before_the_next_campaign() {
    let t0 = Instant::now();
    let mut e = Elector::new(timing());
    e.observe(t0, Observation::EtcdError { error: "timed out".into(), orphan: Some(12) });
    assert_eq!(e.next_step(), Step::Campaign { revoke_first: Some(12) });
}

#[test]
fn shutdown_of_a_master_removes_dest_before_revoking() {
    let t0 = Instant::now();
    let mut e = master(t0);
    let d = e.shutdown();
    assert_eq!(d.actions, [Action::RemoveDest, Action::RevokeLease(7)]);
    assert_eq!(d.events, [Event::LostMastership { reason: LossReason::Shutdown }]);
}

#[test]
fn shutdown_of_a_standby_removes_dest_and_revokes_a_stale_lease() {
    let t0 = Instant::now();
    let mut e = Elector::new(timing());
    assert_eq!(e.shutdown().actions, [Action::RemoveDest]);

    let mut e = master(t0);
    e.tick(t0 + 60 * SEC);
    assert_eq!(e.shutdown().actions, [Action::RemoveDest, Action::RevokeLease(7)]);
}

#[test]
fn the_next_exchange_follows_the_role() {
    let t0 = Instant::now();
    let tight = Timing { sleep: 5 * SEC, ttl: 2 * SEC };
    let mut e = Elector::new(tight);
    assert_eq!(e.next_exchange_at(t0), t0 + 5 * SEC);
    e.observe(t0, Observation::Acquired { lease: 1, ttl: 2 * SEC, sent_at: t0 });
    // ttl 2 s, margin 1 s: renew every 333 ms.
    assert_eq!(e.next_exchange_at(t0), t0 + SEC / 3);
}

/// Two electors sharing one simulated etcd never both hold mastership, even
/// when one is cut off, as long as the cut-off one fences on time and the
/// other can only acquire after the lease expired in etcd.
#[test]
fn simulated_partition_never_yields_two_masters() {
    let t0 = Instant::now();
    let ttl = 3 * SEC;
    let timing = Timing { sleep: 250 * MS, ttl };
    let mut a = Elector::new(timing);
    let mut b = Elector::new(timing);
    // etcd: (holder, lease, expires_at)
    let mut key: Option<(char, LeaseId, Instant)> = None;
    let mut next_lease = 1;
    let step = 50 * MS;
    let mut now = t0;
    while now < t0 + 20 * SEC {
        if key.is_some_and(|(_, _, exp)| now >= exp) {
            key = None;
        }
        // `a` is partitioned from etcd between 5 s and 12 s.
        let a_cut = now >= t0 + 5 * SEC && now < t0 + 12 * SEC;
        for (name, e, cut) in [('a', &mut a, a_cut), ('b', &mut b, false)] {
            e.tick(now);
            let obs = if cut {
                error("partitioned")
            } else {
                match (e.next_step(), key) {
                    (Step::Renew { lease }, Some((h, l, _))) if h == name && l == lease => {
                        key = Some((h, l, now + ttl));
                        Observation::Renewed { lease, ttl, sent_at: now }
                    }
                    (Step::Renew { lease }, _) => {
                        Observation::Lost { lease, reason: "gone".into() }
                    }
                    (Step::Campaign { .. }, Some((h, _, _))) => {
                        Observation::NotAcquired { holder: Some(h.into()) }
                    }
                    (Step::Campaign { .. }, None) => {
                        next_lease += 1;
                        key = Some((name, next_lease, now + ttl));
                        Observation::Acquired { lease: next_lease, ttl, sent_at: now }
                    }
                }
            };
            e.observe(now, obs);
        }
        assert!(!(a.is_master() && b.is_master()), "two masters at {:?}", now - t0);
        if now < t0 + 5 * SEC {
            assert!(a.is_master(), "a won the first campaign");
        }
        if now == t0 + 11 * SEC {
            assert!(b.is_master(), "b took over during the partition");
        }
        now += step;
    }
    assert!(b.is_master(), "b keeps the key after the partition heals");
}
