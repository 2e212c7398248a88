//! `--run-between`: the daily hours in which `migrate` may copy, such as the night, so that a copy running for days
//! leaves the servers to learners during the day.
//!
//! A window is read in a time zone: the one named after the hours (`22:00-06:00 Europe/Paris`), or the process's
//! own (the `TZ` variable, then `/etc/localtime`, then UTC, as the C library does).

use std::fmt;
use std::str::FromStr;

use jiff::civil::Time;
use jiff::tz::TimeZone;

/// Daily hours from `start` (included) to `end` (excluded); a window whose end is not after its start runs past
/// midnight (`22:00-06:00`).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    start: Time,
    end: Time,
    /// The zone named in the window, if any.
    zone_name: Option<String>,
    zone: TimeZone,
}

impl Window {
    /// Whether `time` (of day, in the window's zone) is inside the window.
    pub fn contains(&self, time: Time) -> bool {
        if self.start < self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }

    /// The time of day now, in the window's zone.
    pub fn now(&self) -> Time {
        jiff::Timestamp::now().to_zoned(self.zone.clone()).time()
    }

    /// Whether now is inside the window.
    pub fn is_open(&self) -> bool {
        self.contains(self.now())
    }
}

/// Why a window was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a window of hours such as 22:00-06:00 or 22:00-06:00 Europe/Paris: {why}")]
pub struct WindowError {
    text: String,
    why: String,
}

impl FromStr for Window {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<Window, WindowError> {
        let refused = |why: String| WindowError { text: text.to_owned(), why };
        let mut words = text.split_whitespace();
        let hours = words.next().ok_or_else(|| refused("it is empty".to_owned()))?;
        let zone_name = words.next().map(str::to_owned);
        if words.next().is_some() {
            return Err(refused("only the hours and one time zone name may be given".to_owned()));
        }
        let (start, end) = hours.split_once('-').ok_or_else(|| refused("the two times need a `-`".to_owned()))?;
        let (start, end) = (time_of_day(start).map_err(&refused)?, time_of_day(end).map_err(&refused)?);
        if start == end {
            return Err(refused("it starts and ends at the same time".to_owned()));
        }
        let zone = match &zone_name {
            Some(name) => TimeZone::get(name).map_err(|_| refused(format!("no time zone is called {name}")))?,
            None => TimeZone::system(),
        };
        Ok(Window { start, end, zone_name, zone })
    }
}

/// `hh:mm`, 24-hour clock.
fn time_of_day(text: &str) -> Result<Time, String> {
    let invalid = || format!("`{text}` is not a time of day as hh:mm");
    let (hour, minute) = text.split_once(':').ok_or_else(invalid)?;
    let (hour, minute): (i8, i8) = (hour.parse().map_err(|_| invalid())?, minute.parse().map_err(|_| invalid())?);
    Time::new(hour, minute, 0, 0).map_err(|_| invalid())
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hhmm = |time: Time| format!("{:02}:{:02}", time.hour(), time.minute());
        write!(f, "{}-{}", hhmm(self.start), hhmm(self.end))?;
        match &self.zone_name {
            Some(name) => write!(f, " {name}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hour: i8, minute: i8) -> Time {
        Time::new(hour, minute, 0, 0).expect("a time")
    }

    #[test]
    fn a_window_within_a_day_and_one_across_midnight() {
        let day: Window = "09:30-17:00".parse().expect("a window");
        assert!(day.contains(at(9, 30)) && day.contains(at(16, 59)));
        assert!(!day.contains(at(17, 0)) && !day.contains(at(9, 29)));
        let night: Window = "22:00-06:00 UTC".parse().expect("a window");
        assert!(night.contains(at(23, 0)) && night.contains(at(0, 0)) && night.contains(at(5, 59)));
        assert!(!night.contains(at(6, 0)) && !night.contains(at(12, 0)) && !night.contains(at(21, 59)));
        assert_eq!(night.to_string(), "22:00-06:00 UTC");
    }

    #[test]
    fn malformed_windows_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "empty"),
            ("22:00", "`-`"),
            ("25:00-06:00", "`25:00`"),
            ("22:00-06:00 Mars/Olympus", "no time zone"),
            ("22:00-22:00", "same time"),
            ("22:00-06:00 UTC extra", "one time zone"),
        ] {
            let error = text.parse::<Window>().expect_err(text).to_string();
            assert!(error.contains(why), "{text}: {error}");
        }
    }
}
