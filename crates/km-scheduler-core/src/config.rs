//! The core's policy: timings of offers, back-off and reconciliation, and the matcher's
//! configuration. The binary fills it from flags and the `--scheduler-config` file.

use std::time::Duration;

/// How pods are launched onto offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LaunchPolicy {
    /// Pack as many pods per offer as fit (one ACCEPT per agent with many LAUNCHes).
    #[default]
    Pack,
    /// The original k8sm policy, kept as a measurable baseline: at most one pod per agent per
    /// planning round, unused resources refused for `refuse_seconds`.
    OnePodPerOffer,
}

/// Configuration of the decision core.
#[derive(Clone, Debug)]
pub struct Config {
    /// Pods whose `spec.schedulerName` equals this are ours (`default-scheduler`).
    pub scheduler_name: String,
    /// Life of an unused offer held while pods wait (`offer-ttl`, 5 s).
    pub offer_ttl: Duration,
    /// How long the ID of an offer that was used, declined, expired or rescinded is remembered;
    /// an offer arriving again with such an ID is ignored (`offer-linger-ttl`, 2 min).
    pub offer_linger: Duration,
    /// Minimum pause between two re-evaluations of pods in back-off against new offers
    /// (`listener-delay`, 1 s).
    pub listener_delay: Duration,
    /// `refuse_seconds` of declines (`refuse-seconds`, 5 s as Mesos's default).
    pub refuse_seconds: f64,
    /// First per-pod back-off (`initial-pod-backoff`, 1 s).
    pub initial_backoff: Duration,
    /// Back-off cap (`max-pod-backoff`, 60 s).
    pub max_backoff: Duration,
    /// Implicit reconciliation period (`--reconcile-interval`, 300 s); zero disables it.
    pub reconcile_interval: Duration,
    /// Minimum gap between two reconciliation runs not caused by a (re)subscription
    /// (`--reconcile-cooldown`, at least 15 s).
    pub reconcile_cooldown: Duration,
    /// First implicit reconciliation after subscribing (`initial-implicit-reconciliation-delay`, 15 s).
    pub initial_implicit_delay: Duration,
    /// Cap of the retry back-off of an explicit reconciliation
    /// (`explicit-reconciliation-max-backoff`, 2 min).
    pub explicit_max_backoff: Duration,
    /// An explicit reconciliation still missing answers after this long is abandoned; the next
    /// implicit one covers what is left (`explicit-reconciliation-abort-timeout`, 30 s).
    pub explicit_abort: Duration,
    /// How long a launched task may go without any status update before it is reconciled.
    pub launch_timeout: Duration,
    /// How long after a kill's grace period the kill is sent again if the task still runs.
    pub kill_retry: Duration,
    /// Grace period used when a pod gives none (`terminationGracePeriodSeconds` default, 30 s).
    pub default_grace: Duration,
    /// Launch policy.
    pub launch_policy: LaunchPolicy,
    /// The matcher: resources, roles, executor, ports, strategy.
    pub matcher: km_offer_matcher::Config,
    /// Seed of the back-off jitter (fixed in tests, random in the binary).
    pub seed: u64,
}

impl Default for Config {
    /// The original's defaults.
    fn default() -> Config {
        Config {
            scheduler_name: "default-scheduler".to_owned(),
            offer_ttl: Duration::from_secs(5),
            offer_linger: Duration::from_secs(120),
            listener_delay: Duration::from_secs(1),
            refuse_seconds: 5.0,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            reconcile_interval: Duration::from_secs(300),
            reconcile_cooldown: Duration::from_secs(15),
            initial_implicit_delay: Duration::from_secs(15),
            explicit_max_backoff: Duration::from_secs(120),
            explicit_abort: Duration::from_secs(30),
            launch_timeout: Duration::from_secs(60),
            kill_retry: Duration::from_secs(15),
            default_grace: Duration::from_secs(30),
            launch_policy: LaunchPolicy::Pack,
            matcher: km_offer_matcher::Config::default(),
            seed: 0x6b6d_5f73_6368_6564,
        }
    }
}
