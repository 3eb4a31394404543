//! Per-pod back-off: the delay doubles from the initial value up to the cap with every failed
//! attempt, and each delay is jittered into `[delay/2, delay]` so that pods that failed together
//! do not all come back together. The jitter comes from a seeded generator, so a core replays
//! the same delays for the same inputs.

use std::time::Duration;

/// xorshift64*: small, fast, deterministic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (zero is replaced, xorshift cannot leave it).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The un-jittered delay after `failures` failed attempts (1 → `initial`).
pub fn delay(initial: Duration, max: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
    initial.checked_mul(factor).map_or(max, |d| d.min(max))
}

/// [`delay`] jittered into `[delay/2, delay]`.
pub fn jittered(initial: Duration, max: Duration, failures: u32, rng: &mut Rng) -> Duration {
    let d = delay(initial, max, failures);
    let half = d / 2;
    half + half.mul_f64(rng.unit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_to_the_cap() {
        let max = Duration::from_secs(60);
        let seq: Vec<u64> = (0..9).map(|f| delay(S, max, f).as_secs()).collect();
        assert_eq!(seq, vec![0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(delay(S, max, u32::MAX), max);
    }

    #[test]
    fn jitter_stays_in_bounds_and_is_reproducible() {
        let max = Duration::from_secs(60);
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for f in 1..20 {
            let d = delay(S, max, f);
            let j = jittered(S, max, f, &mut a);
            assert!(j >= d / 2 && j <= d, "{j:?} outside [{:?}, {d:?}]", d / 2);
            assert_eq!(j, jittered(S, max, f, &mut b));
        }
    }
}
