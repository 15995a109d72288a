//! [`RetryPolicy`]: when an attempt that did not succeed is tried again. Pure.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde::{Deserialize, Serialize};

use crate::call::CallOutcome;
use crate::error::{Error, Result};

/// Upper bound on `max_attempts` accepted from users.
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;

/// Most entries in [`RetryPolicy::delays`].
pub const MAX_RETRY_DELAYS: usize = 20;

/// Shortest delay accepted in [`RetryPolicy::delays`] (1 s).
pub const MIN_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Longest delay accepted in [`RetryPolicy::delays`] (7 days).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// When and whether to retry a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts allowed, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Delay before the first retry.
    #[serde(with = "millis")]
    pub base_delay: Duration,
    /// Factor applied per further retry.
    pub multiplier: f64,
    /// Delays never exceed this.
    #[serde(with = "millis")]
    pub max_delay: Duration,
    /// Fraction of the delay that is randomised (0.0 = none, 0.2 = ±20 %).
    pub jitter: f64,
    /// Retry when nobody answered.
    pub retry_on_no_answer: bool,
    /// Retry when the line was busy.
    pub retry_on_busy: bool,
    /// Retry when voicemail answered.
    pub retry_on_voicemail: bool,
    /// Retry when the dial failed with a retryable error or a dial error outcome.
    pub retry_on_dial_error: bool,
    /// Retry when a connected call broke off with an error.
    pub retry_on_error: bool,
    /// Explicit delays before each retry: retry `n` waits `delays[n - 1]`, the
    /// last entry repeating for later retries (jitter still applies; `max_delay`
    /// does not cap them). Empty: exponential backoff from `base_delay`.
    #[serde(default, with = "millis_list", skip_serializing_if = "Vec::is_empty")]
    pub delays: Vec<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_secs(60),
            multiplier: 2.0,
            max_delay: Duration::from_secs(60 * 60),
            jitter: 0.2,
            retry_on_no_answer: true,
            retry_on_busy: true,
            retry_on_voicemail: false,
            retry_on_dial_error: true,
            retry_on_error: false,
            delays: Vec::new(),
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryDecision {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Do not retry (outcome not retryable, or attempts used up).
    GiveUp,
}

impl RetryPolicy {
    /// Checks the policy's numbers.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(Error::validation(
                "maxAttempts",
                format!("max attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(Error::validation(
                "retryPolicy",
                "multiplier must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::validation(
                "retryPolicy",
                "jitter must be between 0 and 1",
            ));
        }
        if self.delays.len() > MAX_RETRY_DELAYS {
            return Err(Error::validation(
                "retryDelays",
                format!("at most {MAX_RETRY_DELAYS} retry delays are allowed"),
            ));
        }
        if let Some(i) = self
            .delays
            .iter()
            .position(|d| *d < MIN_RETRY_DELAY || *d > MAX_RETRY_DELAY)
        {
            return Err(Error::validation(
                format!("retryDelays[{i}]"),
                "each retry delay must be between 1 second and 7 days",
            ));
        }
        if self.max_delay < self.base_delay {
            return Err(Error::validation(
                "retryPolicy",
                "max delay must not be shorter than the base delay",
            ));
        }
        Ok(())
    }

    /// Whether this outcome may be retried at all.
    pub fn retries_outcome(&self, outcome: CallOutcome) -> bool {
        match outcome {
            CallOutcome::NoAnswer => self.retry_on_no_answer,
            CallOutcome::Busy => self.retry_on_busy,
            CallOutcome::Voicemail => self.retry_on_voicemail,
            CallOutcome::DialError => self.retry_on_dial_error,
            CallOutcome::Error => self.retry_on_error,
            CallOutcome::Answered | CallOutcome::Canceled | CallOutcome::Stale => false,
        }
    }

    /// The delay before retry number `retry` (1 = the first retry), with jitter drawn
    /// from `rng`.
    /// With explicit [`RetryPolicy::delays`], retry `n` uses `delays[min(n - 1,
    /// len - 1)]` instead of the exponential backoff.
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let factor = if self.jitter > 0.0 {
            1.0 + rng.random_range(-self.jitter..=self.jitter)
        } else {
            1.0
        };
        let index = (retry.saturating_sub(1) as usize).min(self.delays.len().saturating_sub(1));
        let secs = match self.delays.get(index) {
            Some(d) => (d.as_secs_f64() * factor).max(0.0),
            None => {
                let exp = self.multiplier.powi(retry.saturating_sub(1).min(64) as i32);
                let base = (self.base_delay.as_secs_f64() * exp).min(self.max_delay.as_secs_f64());
                (base * factor).clamp(0.0, self.max_delay.as_secs_f64())
            }
        };
        Duration::from_millis((secs * 1000.0).round() as u64)
    }

    /// Decides what follows an attempt that ended with `outcome` after `attempts_made`
    /// attempts. `retry_after` (from the provider) is a floor on the delay.
    pub fn decide(
        &self,
        outcome: CallOutcome,
        attempts_made: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> RetryDecision {
        if !self.retries_outcome(outcome) || attempts_made >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let delay = self.backoff(attempts_made, rng);
        let floor = retry_after.map(crate::time::clamp_retry_after);
        RetryDecision::RetryAfter(floor.map_or(delay, |ra| ra.max(delay)))
    }
}

/// A deterministic RNG for one call's attempt: the same seed, call and attempt give
/// the same jitter, whichever process or event order computes it.
pub fn attempt_rng(seed: u64, call_id: crate::CallId, attempt: u32) -> SmallRng {
    let id = call_id.as_uuid().as_u128();
    let mixed = seed ^ (id as u64) ^ ((id >> 64) as u64).rotate_left(17) ^ u64::from(attempt);
    SmallRng::seed_from_u64(mixed)
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod millis_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            d.iter()
                .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<u64>::deserialize(d).map(|v| v.into_iter().map(Duration::from_millis).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> RetryPolicy {
        RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let p = RetryPolicy {
            max_delay: Duration::from_secs(300),
            ..no_jitter()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let d: Vec<u64> = (1..=5).map(|r| p.backoff(r, &mut rng).as_secs()).collect();
        assert_eq!(d, vec![60, 120, 240, 300, 300]);
    }

    #[test]
    fn jitter_stays_in_bounds_and_is_seeded() {
        let p = RetryPolicy::default();
        for seed in 0..200 {
            let a = p.backoff(1, &mut SmallRng::seed_from_u64(seed));
            let b = p.backoff(1, &mut SmallRng::seed_from_u64(seed));
            assert_eq!(a, b);
            assert!(
                a >= Duration::from_secs(48) && a <= Duration::from_secs(72),
                "{a:?}"
            );
        }
    }

    #[test]
    fn decide_follows_switches_and_attempts() {
        let p = no_jitter();
        let mut rng = SmallRng::seed_from_u64(0);
        assert_eq!(
            p.decide(CallOutcome::NoAnswer, 1, None, &mut rng),
            RetryDecision::RetryAfter(Duration::from_secs(60))
        );
        assert_eq!(
            p.decide(CallOutcome::Busy, 2, None, &mut rng),
            RetryDecision::RetryAfter(Duration::from_secs(120))
        );
        assert_eq!(
            p.decide(CallOutcome::NoAnswer, 3, None, &mut rng),
            RetryDecision::GiveUp
        );
        assert_eq!(
            p.decide(CallOutcome::Voicemail, 1, None, &mut rng),
            RetryDecision::GiveUp
        );
        assert_eq!(
            p.decide(CallOutcome::Answered, 1, None, &mut rng),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = no_jitter();
        let mut rng = SmallRng::seed_from_u64(0);
        assert_eq!(
            p.decide(
                CallOutcome::DialError,
                1,
                Some(Duration::from_secs(600)),
                &mut rng
            ),
            RetryDecision::RetryAfter(Duration::from_secs(600))
        );
        assert_eq!(
            p.decide(
                CallOutcome::DialError,
                1,
                Some(Duration::from_secs(5)),
                &mut rng
            ),
            RetryDecision::RetryAfter(Duration::from_secs(60))
        );
    }

    #[test]
    fn explicit_delays_are_used_per_retry_with_the_last_repeating() {
        let p = RetryPolicy {
            delays: vec![Duration::from_secs(30), Duration::from_secs(7200)],
            ..no_jitter()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let d: Vec<u64> = (1..=4).map(|r| p.backoff(r, &mut rng).as_secs()).collect();
        // The two-hour delay is not capped by the one-hour max_delay.
        assert_eq!(d, vec![30, 7200, 7200, 7200]);
        assert_eq!(
            p.decide(CallOutcome::Busy, 1, None, &mut rng),
            RetryDecision::RetryAfter(Duration::from_secs(30))
        );
        // Jitter still applies, within its bounds, seeded.
        let jittered = RetryPolicy {
            delays: vec![Duration::from_secs(100)],
            ..RetryPolicy::default()
        };
        for seed in 0..100 {
            let a = jittered.backoff(3, &mut SmallRng::seed_from_u64(seed));
            assert_eq!(a, jittered.backoff(3, &mut SmallRng::seed_from_u64(seed)));
            assert!(a >= Duration::from_secs(80) && a <= Duration::from_secs(120));
        }
    }

    #[test]
    fn delays_are_bounded_and_round_trip_as_milliseconds() {
        let mut p = RetryPolicy {
            delays: vec![Duration::from_secs(60); MAX_RETRY_DELAYS],
            ..RetryPolicy::default()
        };
        assert!(p.validate().is_ok());
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(json["delays"][0], 60_000);
        assert_eq!(
            serde_json::from_value::<RetryPolicy>(json).expect("back"),
            p
        );
        p.delays.push(Duration::from_secs(60));
        assert_eq!(p.validate().expect_err("21").field(), Some("retryDelays"));
        p.delays = vec![Duration::from_secs(5), Duration::from_millis(500)];
        assert_eq!(
            p.validate().expect_err("too short").field(),
            Some("retryDelays[1]")
        );
        p.delays = vec![MAX_RETRY_DELAY + Duration::from_secs(1)];
        assert!(p.validate().is_err());
        // A policy stored before `delays` existed still reads, with none.
        let mut old = serde_json::to_value(RetryPolicy::default()).expect("json");
        old.as_object_mut().expect("object").remove("delays");
        assert!(
            serde_json::from_value::<RetryPolicy>(old)
                .expect("old")
                .delays
                .is_empty()
        );
    }

    #[test]
    fn validate_bounds_attempts() {
        assert!(RetryPolicy::default().validate().is_ok());
        let e = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        }
        .validate()
        .expect_err("zero attempts");
        assert_eq!(e.field(), Some("maxAttempts"));
        assert!(
            RetryPolicy {
                max_attempts: MAX_ATTEMPTS_LIMIT + 1,
                ..RetryPolicy::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn a_huge_retry_after_is_capped_at_a_day() {
        let p = no_jitter();
        let mut rng = SmallRng::seed_from_u64(0);
        assert_eq!(
            p.decide(
                CallOutcome::DialError,
                1,
                Some(Duration::from_secs(u64::MAX)),
                &mut rng
            ),
            RetryDecision::RetryAfter(crate::time::MAX_RETRY_AFTER)
        );
        let e = crate::Error::unavailable("busy").with_retry_after(Duration::MAX);
        assert_eq!(e.retry_after(), Some(crate::time::MAX_RETRY_AFTER));
    }
}
