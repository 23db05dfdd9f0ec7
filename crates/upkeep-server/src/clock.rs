//! Clocks the daemon can run on. Production uses [`SystemClock`]; tests and the demo
//! hand in the simulator's clock (wrapped by the caller) so moving the simulator's
//! time moves the daemon's too.

use upkeep_core::Clock;

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place the daemon reads wall time; everything else asks the Clock.
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// The simulator's clock, followed from another process: `[upstox] follow_sim_clock`.
///
/// Reads `GET {api_url}/sim/clock` (`epoch_ms`, `speed`) and extrapolates between reads
/// on the monotonic clock, so `now()` never blocks; [`SimFollowClock::follow`] re-reads
/// it every [`SimFollowClock::RESYNC`], which also catches a jump or a speed change
/// (an operator's `POST /sim/clock`) within that time. The TOTP codes, the plan, the
/// health checks and the status then all agree with the simulator.
pub struct SimFollowClock {
    url: String,
    http: reqwest::Client,
    anchor: std::sync::RwLock<Anchor>,
}

#[derive(Clone, Copy)]
struct Anchor {
    sim: jiff::Timestamp,
    real: tokio::time::Instant,
    speed: f64,
}

/// What one read of the simulator's clock found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimClockReading {
    pub now: jiff::Timestamp,
    pub speed: f64,
    /// How far the simulator's time was from what this clock predicted: a jump when
    /// large. Zero on the first read.
    pub moved: jiff::SignedDuration,
}

/// The simulator's clock could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the simulator's clock at {url}: {reason}")]
pub struct SimClockError {
    pub url: String,
    pub reason: String,
}

impl SimFollowClock {
    /// How often the follower re-reads the simulator's clock.
    pub const RESYNC: std::time::Duration = std::time::Duration::from_secs(1);
    /// A difference beyond this between prediction and reading is reported as a jump.
    pub const JUMP: jiff::SignedDuration = jiff::SignedDuration::from_secs(2);

    /// Reads the simulator's clock once; an unreachable simulator is an error (the
    /// daemon refuses to start on a clock it cannot read).
    pub async fn connect(
        api_url: &str,
        http: reqwest::Client,
    ) -> Result<std::sync::Arc<Self>, SimClockError> {
        let url = format!("{}/sim/clock", api_url.trim_end_matches('/'));
        let (sim, real, speed) = read(&http, &url).await?;
        Ok(std::sync::Arc::new(Self {
            url,
            http,
            anchor: std::sync::RwLock::new(Anchor { sim, real, speed }),
        }))
    }

    /// Re-reads the simulator's clock and re-anchors on it; a jump is logged once, here.
    pub async fn sync(&self) -> Result<SimClockReading, SimClockError> {
        let (sim, real, speed) = read(&self.http, &self.url).await?;
        let predicted = self.at(real);
        *self.anchor.write().unwrap_or_else(|e| e.into_inner()) = Anchor { sim, real, speed };
        let moved = sim.duration_since(predicted);
        if moved.abs() > Self::JUMP {
            tracing::info!(
                now = %upkeep_core::expiry::format_ist(sim),
                speed,
                "the simulator's clock moved; following it"
            );
        }
        Ok(SimClockReading {
            now: sim,
            speed,
            moved,
        })
    }

    /// Re-syncs every [`Self::RESYNC`], for ever (spawn it and abort the task to stop).
    /// An unreachable simulator is logged once until it answers again (the clock keeps
    /// running on the last reading meanwhile).
    pub async fn follow(&self) {
        let mut unreachable = false;
        loop {
            tokio::time::sleep(Self::RESYNC).await;
            match self.sync().await {
                Ok(_) => {
                    if unreachable {
                        tracing::info!(url = %self.url, "the simulator's clock answers again");
                        unreachable = false;
                    }
                }
                Err(e) if !unreachable => {
                    unreachable = true;
                    tracing::warn!(error = %e, "following the simulator's clock: keeping the last reading");
                }
                Err(_) => {}
            }
        }
    }

    fn at(&self, real: tokio::time::Instant) -> jiff::Timestamp {
        let a = *self.anchor.read().unwrap_or_else(|e| e.into_inner());
        project(a, real)
    }
}

fn project(a: Anchor, real: tokio::time::Instant) -> jiff::Timestamp {
    let elapsed = real.saturating_duration_since(a.real).as_secs_f64() * a.speed;
    let step = jiff::SignedDuration::try_from_secs_f64(elapsed).unwrap_or_default();
    a.sim.checked_add(step).unwrap_or(a.sim)
}

impl Clock for SimFollowClock {
    fn now(&self) -> jiff::Timestamp {
        self.at(tokio::time::Instant::now())
    }

    fn sync(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if let Err(e) = SimFollowClock::sync(self).await {
                tracing::debug!(error = %e, "cannot re-read the simulator's clock");
            }
        })
    }
}

/// One read: the simulator's time, the local instant it belongs to (the middle of the
/// round trip) and its speed.
async fn read(
    http: &reqwest::Client,
    url: &str,
) -> Result<(jiff::Timestamp, tokio::time::Instant, f64), SimClockError> {
    let fail = |reason: String| SimClockError {
        url: url.to_owned(),
        reason,
    };
    let sent = tokio::time::Instant::now();
    let resp = http
        .get(url)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| fail(crate::alerts::error_chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(fail(format!(
            "HTTP {status} (is api_url an `upkeep sim`? Upstox has no /sim/clock)"
        )));
    }
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|_| fail("the answer is not the simulator's clock JSON".into()))?;
    let got = tokio::time::Instant::now();
    let epoch_ms = body
        .get("epoch_ms")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| fail("the answer has no epoch_ms".into()))?;
    let speed = body
        .get("speed")
        .and_then(serde_json::Value::as_f64)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| fail("the answer has no usable speed".into()))?;
    let now = jiff::Timestamp::from_millisecond(epoch_ms)
        .map_err(|_| fail(format!("epoch_ms {epoch_ms} is out of range")))?;
    let middle = sent + got.saturating_duration_since(sent) / 2;
    Ok((now, middle, speed))
}
