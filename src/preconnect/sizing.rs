//! How many connections to keep ready: the recent rate of new clients, and the rule that turns it into a count.
//! Pure arithmetic, apart from the clock and the sockets.

use std::time::Duration;

use crate::config::Preconnect as Settings;

/// How often the rate is sampled (and the ready connections looked over).
pub const TICK: Duration = Duration::from_millis(250);

/// How many ticks the rate is averaged over: 2 s, so a burst of clients turns preconnecting on within one tick
/// and a pause turns it off within two seconds.
const WINDOW_TICKS: usize = 8;

/// New clients counted per tick over the last [`WINDOW_TICKS`] ticks.
#[derive(Debug, Default)]
pub struct ArrivalRate {
    per_tick: [u64; WINDOW_TICKS],
    next: usize,
    /// The running total of arrivals at the last tick.
    seen: u64,
}

impl ArrivalRate {
    /// Records a tick at which `total` clients have arrived since the proxy started.
    pub fn tick(&mut self, total: u64) {
        self.per_tick[self.next] = total.saturating_sub(self.seen);
        self.seen = total;
        self.next = (self.next + 1) % WINDOW_TICKS;
    }

    /// New clients per second over the window.
    pub fn per_second(&self) -> f64 {
        let arrivals: u64 = self.per_tick.iter().sum();
        arrivals as f64 / (TICK.as_secs_f64() * WINDOW_TICKS as f64)
    }
}

/// The rate below which nothing is opened ahead: one new client a second, two in the window, so that a lone
/// client after a quiet spell opens nothing that would then wait in vain.
const MIN_RATE: f64 = 1.0;

/// How many connections to keep ready at `rate` new clients per second: as many as the clients arriving in half
/// a connection's `max_age`, up to `max`; none below [`MIN_RATE`].
///
/// Taken oldest first, a connection then waits half its age on average, so at a steady rate few expire: expiry
/// (which the server counts as an aborted connect) mostly follows a drop in the rate; the pool itself closes at
/// most `max` unused between two clients (`Preconnect::fill`).
pub fn wanted(rate: f64, settings: Settings) -> usize {
    if rate < MIN_RATE {
        return 0;
    }
    let arriving = rate * settings.max_age().as_secs_f64() / 2.0;
    // `as` saturates: a huge rate gives `usize::MAX`, then `max`.
    (arriving.floor() as usize).min(settings.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: usize, max_age_ms: u64) -> Settings {
        Settings { max, max_age_ms }
    }

    #[test]
    fn the_rate_is_the_arrivals_of_the_window_per_second() {
        let mut rate = ArrivalRate::default();
        rate.tick(10);
        assert_eq!(rate.per_second(), 5.0, "10 arrivals in a 2 s window");
        for _ in 0..WINDOW_TICKS - 1 {
            rate.tick(10);
        }
        assert_eq!(rate.per_second(), 5.0, "still inside the window");
        rate.tick(10);
        assert_eq!(rate.per_second(), 0.0, "the burst has left the window");
    }

    #[test]
    fn the_rate_follows_a_steady_stream() {
        let mut rate = ArrivalRate::default();
        for tick in 1..=20 {
            rate.tick(tick * 25);
        }
        assert_eq!(rate.per_second(), 100.0);
    }

    #[test]
    fn rare_clients_turn_preconnecting_off() {
        let defaults = Settings::default();
        assert_eq!(wanted(0.0, defaults), 0);
        assert_eq!(wanted(0.5, defaults), 0, "one client in the window");
        assert_eq!(wanted(1.0, defaults), 2, "two");
    }

    #[test]
    fn the_count_is_the_clients_of_half_an_age_up_to_max() {
        assert_eq!(wanted(1.0, settings(8, 5000)), 2);
        assert_eq!(wanted(2.0, settings(8, 5000)), 5);
        assert_eq!(wanted(100.0, settings(8, 5000)), 8);
        assert_eq!(wanted(f64::MAX, settings(8, 5000)), 8);
        assert_eq!(wanted(100.0, settings(0, 5000)), 0, "max = 0 is off");
        assert_eq!(wanted(5.0, settings(8, 200)), 0, "a short age needs a faster stream");
        assert_eq!(wanted(10.0, settings(8, 200)), 1);
    }
}
