//! The alert ladder: when an account has no working token while it should, and renewing
//! it fails, who is told when. A pure function of the moment the trouble began and the
//! renewal policy; the daemon sends each rung once, when its time has come.
//!
//! An *incident* begins at the first failed renewal attempt while the account has no
//! working token (none, expired, or refused by Upstox at a health check) and the plan
//! says it should have one. Its rungs:
//!
//! 1. [`Rung::First`]: [`FIRST_ALERT_AFTER`] (1 minute) after that failure, so a failure
//!    the very next retry repairs is not reported, yet the human hears within 2 minutes
//!    (or at once when the renewal gives up);
//! 2. [`Rung::StillFailing`]: 15 minutes after it began;
//! 3. [`Rung::BeforeDeadline`]: 30 minutes before the renewal deadline (`[renewal]
//!    deadline`, default 09:00 IST);
//! 4. [`Rung::AtDeadline`]: at the deadline;
//! 5. [`Rung::MarketOpen`]: at market open, 09:15 IST.
//!
//! The deadline and market open are those of the first trading day whose rungs are
//! still ahead when the first alert goes out: trouble at 08:38 on a Tuesday climbs to
//! that Tuesday's 09:00 and 09:15; trouble at 14:00 climbs to the next trading morning.
//! Rungs at or before the first alert are dropped (they have passed), and two rungs at
//! the same instant are one (the later in the list). When the daemon falls behind (a
//! clock step, a restart), only the latest due rung is sent; the ones it passed count as
//! sent. An incident still open at the top of its ladder climbs the next trading
//! morning's rungs ([`Ladder::next_morning`]). A working token ends the incident (the
//! daemon then sends one recovery).

use std::fmt;

use jiff::civil::Time;
use jiff::{SignedDuration, Timestamp};

use crate::expiry::{ist_date, ist_timestamp};
use crate::plan::RenewalPolicy;

/// Indian equity markets open at 09:15 IST.
pub const MARKET_OPEN: Time = Time::constant(9, 15, 0, 0);
/// The first alert waits this long after the first failed attempt.
pub const FIRST_ALERT_AFTER: SignedDuration = SignedDuration::from_secs(60);
/// The second rung comes this long after the first failed attempt.
pub const STILL_FAILING_AFTER: SignedDuration = SignedDuration::from_mins(15);
/// The deadline warning comes this long before the deadline.
pub const BEFORE_DEADLINE: SignedDuration = SignedDuration::from_mins(30);

/// How far ahead to look for a trading day.
const MAX_DAYS_AHEAD: usize = 400;

/// One step of the ladder, in the order they normally come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rung {
    First,
    StillFailing,
    BeforeDeadline,
    AtDeadline,
    MarketOpen,
}

impl Rung {
    pub const ALL: [Rung; 5] = [
        Rung::First,
        Rung::StillFailing,
        Rung::BeforeDeadline,
        Rung::AtDeadline,
        Rung::MarketOpen,
    ];

    /// The `snake_case` name (audit log, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Rung::First => "first",
            Rung::StillFailing => "still_failing",
            Rung::BeforeDeadline => "before_deadline",
            Rung::AtDeadline => "at_deadline",
            Rung::MarketOpen => "market_open",
        }
    }

    pub fn from_name(name: &str) -> Option<Rung> {
        Rung::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Rung {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rungs of one incident, in time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder {
    /// The first failed attempt.
    pub since: Timestamp,
    /// The renewal deadline the ladder climbs to (`None`: no trading day ahead).
    pub deadline: Option<Timestamp>,
    /// Market open of that day.
    pub market_open: Option<Timestamp>,
    /// Each rung and when it is due, earliest first.
    pub rungs: Vec<(Rung, Timestamp)>,
}

impl Ladder {
    /// The ladder of an incident that began at `since`.
    pub fn new(since: Timestamp, policy: &RenewalPolicy) -> Ladder {
        let first = since.saturating_add(FIRST_ALERT_AFTER).unwrap_or(since);
        let mut rungs = vec![
            (Rung::First, first),
            (
                Rung::StillFailing,
                since.saturating_add(STILL_FAILING_AFTER).unwrap_or(since),
            ),
        ];
        let (deadline, market_open) = match morning_after(first, policy) {
            Some((deadline, open)) => {
                let before = deadline.saturating_sub(BEFORE_DEADLINE).unwrap_or(deadline);
                rungs.extend([
                    (Rung::BeforeDeadline, before),
                    (Rung::AtDeadline, deadline),
                    (Rung::MarketOpen, open),
                ]);
                (Some(deadline), Some(open))
            }
            None => (None, None),
        };
        // Past rungs are dropped; of rungs at one instant the later in the list stays.
        rungs.retain(|&(r, at)| r == Rung::First || at > first);
        rungs.sort_by_key(|&(r, at)| (at, std::cmp::Reverse(r)));
        rungs.dedup_by_key(|&mut (_, at)| at);
        Ladder {
            since,
            deadline,
            market_open,
            rungs,
        }
    }

    /// The same incident's rungs on the next trading morning after `after` (30 min
    /// before the deadline, at it, at market open): an incident still open at the top
    /// of its ladder climbs again the next morning.
    pub fn next_morning(&self, after: Timestamp, policy: &RenewalPolicy) -> Option<Ladder> {
        let (deadline, open) = morning_after(after, policy)?;
        let before = deadline.saturating_sub(BEFORE_DEADLINE).unwrap_or(deadline);
        let mut rungs = vec![
            (Rung::BeforeDeadline, before),
            (Rung::AtDeadline, deadline),
            (Rung::MarketOpen, open),
        ];
        rungs.retain(|&(_, at)| at > after);
        rungs.sort_by_key(|&(r, at)| (at, std::cmp::Reverse(r)));
        rungs.dedup_by_key(|&mut (_, at)| at);
        Some(Ladder {
            since: self.since,
            deadline: Some(deadline),
            market_open: Some(open),
            rungs,
        })
    }

    /// What to send at `now`, given the rungs already `handled`: the latest due rung
    /// not handled yet (`None`: nothing is due). Every due rung counts as handled once
    /// it is sent, see [`Ladder::due_rungs`].
    pub fn due(&self, now: Timestamp, handled: &[Rung]) -> Option<Rung> {
        self.due_rungs(now, handled).last().copied()
    }

    /// Every rung due at `now` that is not `handled`, earliest first.
    pub fn due_rungs(&self, now: Timestamp, handled: &[Rung]) -> Vec<Rung> {
        self.rungs
            .iter()
            .filter(|(r, at)| *at <= now && !handled.contains(r))
            .map(|(r, _)| *r)
            .collect()
    }

    /// The next rung after the `handled` ones, and when it is due.
    pub fn next(&self, handled: &[Rung]) -> Option<(Rung, Timestamp)> {
        self.rungs
            .iter()
            .find(|(r, _)| !handled.contains(r))
            .copied()
    }

    /// When `rung` is due on this ladder (`None`: it is not on it).
    pub fn at(&self, rung: Rung) -> Option<Timestamp> {
        self.rungs
            .iter()
            .find(|(r, _)| *r == rung)
            .map(|(_, at)| *at)
    }
}

/// The deadline and market open of the first trading day on which at least one of them
/// is after `after`.
fn morning_after(after: Timestamp, policy: &RenewalPolicy) -> Option<(Timestamp, Timestamp)> {
    let mut day = ist_date(after);
    for _ in 0..MAX_DAYS_AHEAD {
        day = policy.next_trading_day(day)?;
        let (_, deadline) = policy.window_on(day)?;
        let open = ist_timestamp(day, MARKET_OPEN)?;
        if deadline.max(open) > after {
            return Some((deadline, open));
        }
        day = day.tomorrow().ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::{Date, date};

    fn ist_at(d: Date, h: i8, m: i8, s: i8) -> Timestamp {
        ist_timestamp(d, Time::constant(h, m, s, 0)).unwrap()
    }

    /// A Tuesday.
    fn tue() -> Date {
        date(2026, 12, 1)
    }

    fn times(l: &Ladder) -> Vec<(Rung, Timestamp)> {
        l.rungs.clone()
    }

    #[test]
    fn trouble_at_0838_climbs_to_that_mornings_deadline_and_market_open() {
        let d = tue();
        let l = Ladder::new(ist_at(d, 8, 38, 0), &RenewalPolicy::default());
        assert_eq!(
            times(&l),
            vec![
                (Rung::First, ist_at(d, 8, 39, 0)),
                (Rung::StillFailing, ist_at(d, 8, 53, 0)),
                // 08:30 (30 min before the deadline) has passed: dropped.
                (Rung::AtDeadline, ist_at(d, 9, 0, 0)),
                (Rung::MarketOpen, ist_at(d, 9, 15, 0)),
            ]
        );
        assert_eq!(l.deadline, Some(ist_at(d, 9, 0, 0)));
    }

    #[test]
    fn trouble_in_the_window_gets_every_rung() {
        let d = tue();
        let l = Ladder::new(ist_at(d, 5, 30, 0), &RenewalPolicy::default());
        let rungs: Vec<Rung> = l.rungs.iter().map(|(r, _)| *r).collect();
        assert_eq!(rungs, Rung::ALL.to_vec());
        assert_eq!(l.at(Rung::BeforeDeadline), Some(ist_at(d, 8, 30, 0)));
    }

    #[test]
    fn a_rung_at_the_same_instant_as_another_is_sent_once_as_the_later_one() {
        let d = tue();
        // 08:45 + 15 min is the 09:00 deadline.
        let l = Ladder::new(ist_at(d, 8, 45, 0), &RenewalPolicy::default());
        assert_eq!(
            times(&l),
            vec![
                (Rung::First, ist_at(d, 8, 46, 0)),
                (Rung::AtDeadline, ist_at(d, 9, 0, 0)),
                (Rung::MarketOpen, ist_at(d, 9, 15, 0)),
            ]
        );
    }

    #[test]
    fn trouble_after_market_open_climbs_to_the_next_trading_morning() {
        let d = date(2026, 12, 4); // a Friday
        let l = Ladder::new(ist_at(d, 14, 0, 0), &RenewalPolicy::default());
        let mon = date(2026, 12, 7);
        assert_eq!(
            times(&l),
            vec![
                (Rung::First, ist_at(d, 14, 1, 0)),
                (Rung::StillFailing, ist_at(d, 14, 15, 0)),
                (Rung::BeforeDeadline, ist_at(mon, 8, 30, 0)),
                (Rung::AtDeadline, ist_at(mon, 9, 0, 0)),
                (Rung::MarketOpen, ist_at(mon, 9, 15, 0)),
            ]
        );
    }

    #[test]
    fn market_open_is_the_boundary_of_the_day_the_ladder_climbs_to() {
        let d = tue();
        let policy = RenewalPolicy::default();
        // First alert at 09:14:59 IST: 09:15 is still ahead, the same morning.
        let l = Ladder::new(ist_at(d, 9, 13, 59), &policy);
        assert_eq!(l.market_open, Some(ist_at(d, 9, 15, 0)));
        assert_eq!(l.at(Rung::AtDeadline), None, "09:00 has passed");
        // First alert at 09:15:00: market open is not after it, so tomorrow.
        let l = Ladder::new(ist_at(d, 9, 14, 0), &policy);
        assert_eq!(l.market_open, Some(ist_at(date(2026, 12, 2), 9, 15, 0)));
        // At 09:15:01 likewise.
        let l = Ladder::new(ist_at(d, 9, 14, 1), &policy);
        assert_eq!(l.market_open, Some(ist_at(date(2026, 12, 2), 9, 15, 0)));
    }

    #[test]
    fn the_rollover_at_0330_is_no_special_case_for_the_ladder() {
        let d = tue();
        let policy = RenewalPolicy::default();
        // First alerts at 03:29:59, 03:30:00 and 03:30:01 IST all climb to 09:00.
        for (h, m, s) in [(3, 28, 59), (3, 29, 0), (3, 29, 1)] {
            let l = Ladder::new(ist_at(d, h, m, s), &policy);
            assert_eq!(l.deadline, Some(ist_at(d, 9, 0, 0)), "{h}:{m}:{s}");
            assert_eq!(l.rungs.len(), 5);
        }
    }

    #[test]
    fn the_latest_due_rung_is_sent_and_the_passed_ones_are_skipped() {
        let d = tue();
        let l = Ladder::new(ist_at(d, 8, 38, 0), &RenewalPolicy::default());
        assert_eq!(l.due(ist_at(d, 8, 38, 59), &[]), None);
        assert_eq!(l.due(ist_at(d, 8, 39, 0), &[]), Some(Rung::First));
        assert_eq!(l.due(ist_at(d, 8, 52, 59), &[Rung::First]), None);
        assert_eq!(
            l.due(ist_at(d, 8, 53, 0), &[Rung::First]),
            Some(Rung::StillFailing)
        );
        // Asleep from 08:40 to 09:05: only the deadline rung goes out.
        assert_eq!(
            l.due_rungs(ist_at(d, 9, 5, 0), &[Rung::First]),
            vec![Rung::StillFailing, Rung::AtDeadline]
        );
        assert_eq!(
            l.due(ist_at(d, 9, 5, 0), &[Rung::First]),
            Some(Rung::AtDeadline)
        );
        assert_eq!(
            l.next(&[Rung::First, Rung::StillFailing, Rung::AtDeadline]),
            Some((Rung::MarketOpen, ist_at(d, 9, 15, 0)))
        );
    }

    #[test]
    fn weekend_trading_accounts_climb_to_the_saturday_morning() {
        let fri = date(2026, 12, 4);
        let sat = date(2026, 12, 5);
        let policy = RenewalPolicy {
            trade_weekends: true,
            ..RenewalPolicy::default()
        };
        let l = Ladder::new(ist_at(fri, 14, 0, 0), &policy);
        assert_eq!(l.deadline, Some(ist_at(sat, 9, 0, 0)));
    }

    #[test]
    fn an_incident_still_open_at_market_open_climbs_again_the_next_trading_morning() {
        let fri = date(2026, 12, 4);
        let mon = date(2026, 12, 7);
        let policy = RenewalPolicy::default();
        let l = Ladder::new(ist_at(fri, 8, 38, 0), &policy);
        let top = l.rungs.last().unwrap().1;
        assert_eq!(top, ist_at(fri, 9, 15, 0));
        let next = l.next_morning(top, &policy).unwrap();
        assert_eq!(next.since, l.since);
        assert_eq!(
            next.rungs,
            vec![
                (Rung::BeforeDeadline, ist_at(mon, 8, 30, 0)),
                (Rung::AtDeadline, ist_at(mon, 9, 0, 0)),
                (Rung::MarketOpen, ist_at(mon, 9, 15, 0)),
            ]
        );
    }

    #[test]
    fn rung_names_round_trip() {
        for r in Rung::ALL {
            assert_eq!(Rung::from_name(r.as_str()), Some(r));
        }
        assert_eq!(Rung::from_name("nope"), None);
    }
}
