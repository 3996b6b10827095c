//! A circuit breaker per connector: after [`FAILURES_TO_OPEN`] retryable failures in a row
//! (the provider is down or refusing us), sends pause for a cool-down instead of each
//! burning its retries; then one attempt probes, and a success closes the circuit. Messages
//! wait in the durable outbox meanwhile, so nothing is lost. Errors that are a message's
//! own fault (a 4xx the provider will never accept) do not count.

use std::time::{Duration, Instant};

use confab_engine::port::CircuitState;

/// Consecutive retryable failures that open the circuit.
pub const FAILURES_TO_OPEN: u32 = 5;

#[derive(Debug)]
pub struct Circuit {
    cool_down: Duration,
    failures: u32,
    open_until: Option<Instant>,
}

impl Circuit {
    pub fn new(cool_down: Duration) -> Self {
        Self {
            cool_down,
            failures: 0,
            open_until: None,
        }
    }

    /// How long a send must wait before its next attempt (zero when closed or probing).
    pub fn wait(&self, now: Instant) -> Duration {
        self.open_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    /// An attempt succeeded; true when this closed an open circuit.
    pub fn success(&mut self) -> bool {
        self.failures = 0;
        self.open_until.take().is_some()
    }

    /// Closed, open (sends pause) or half-open (the cool-down is over: the next attempt
    /// probes).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.open_until {
            None => CircuitState::Closed,
            Some(until) if now < until => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        }
    }

    /// Opens at once, whatever the count (the provider refuses our credentials: every
    /// attempt would fail alike); true when this opened a closed circuit.
    pub fn trip(&mut self, now: Instant) -> bool {
        self.failures = self.failures.max(FAILURES_TO_OPEN);
        let was_open = self.open_until.is_some();
        self.open_until = Some(now + self.cool_down);
        !was_open
    }

    /// Closes without a success (the channel was reconfigured); true when it was open.
    pub fn reset(&mut self) -> bool {
        self.failures = 0;
        self.open_until.take().is_some()
    }

    /// An attempt failed retryably; true when this opened a closed circuit.
    pub fn failure(&mut self, now: Instant) -> bool {
        self.failures = self.failures.saturating_add(1);
        if self.failures < FAILURES_TO_OPEN {
            return false;
        }
        // A failed probe re-opens for another cool-down.
        let was_open = self.open_until.is_some();
        self.open_until = Some(now + self.cool_down);
        !was_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_closes_on_success() {
        let t0 = Instant::now();
        let mut circuit = Circuit::new(Duration::from_secs(10));
        for _ in 1..FAILURES_TO_OPEN {
            assert!(!circuit.failure(t0));
        }
        assert_eq!(circuit.wait(t0), Duration::ZERO);
        assert!(circuit.failure(t0), "the fifth failure opens it");
        assert!(circuit.is_open());
        assert_eq!(circuit.wait(t0), Duration::from_secs(10));
        assert_eq!(
            circuit.wait(t0 + Duration::from_secs(4)),
            Duration::from_secs(6)
        );
        // The probe after the cool-down fails: open again, not newly opened.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(circuit.wait(later), Duration::ZERO);
        assert!(!circuit.failure(later));
        assert_eq!(circuit.wait(later), Duration::from_secs(10));
        assert!(circuit.success(), "a success closes it");
        assert!(!circuit.is_open());
        assert!(!circuit.failure(later), "the count starts over");
    }

    #[test]
    fn a_trip_opens_at_once_and_half_opens_after_the_cool_down() {
        let t0 = Instant::now();
        let mut circuit = Circuit::new(Duration::from_secs(10));
        assert_eq!(circuit.state(t0), CircuitState::Closed);
        assert!(circuit.trip(t0));
        assert_eq!(circuit.state(t0), CircuitState::Open);
        assert_eq!(
            circuit.state(t0 + Duration::from_secs(10)),
            CircuitState::HalfOpen
        );
        assert!(!circuit.trip(t0), "already open");
        assert!(circuit.reset());
        assert_eq!(circuit.state(t0), CircuitState::Closed);
    }
}
