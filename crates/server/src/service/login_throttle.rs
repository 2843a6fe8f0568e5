//! The login throttle per client address: failures counted in process, per address bucket
//! (IPv6 per /64), so one address cannot guess passwords across a tenant's accounts.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::LoginThrottleSettings;

/// Failures per client address, in process.
#[derive(Debug)]
pub struct IpThrottle {
    failures: moka::future::Cache<IpAddr, Arc<std::sync::Mutex<(u32, i64)>>>,
    budget: u32,
    window_secs: i64,
}

impl IpThrottle {
    /// A throttle allowing `settings.failures` failures per address in each `settings.window`.
    pub fn new(settings: &LoginThrottleSettings) -> Self {
        Self {
            failures: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(settings.window)
                .build(),
            budget: settings.failures,
            window_secs: i64::try_from(settings.window.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// The counter of `ip`'s bucket: IPv6 counts per /64 (one subscriber), like every
    /// address-keyed limit.
    async fn entry(&self, ip: IpAddr) -> Arc<std::sync::Mutex<(u32, i64)>> {
        self.failures
            .get_with(bulkhead_core::net::address_bucket(ip), async {
                Arc::new(std::sync::Mutex::new((0, 0)))
            })
            .await
    }

    /// Counts an attempt from `ip`; `Some(seconds to wait)` (and nothing counted) if the
    /// address is already over its budget in the current window.
    pub async fn take_attempt(&self, ip: IpAddr, now: i64) -> Option<u64> {
        let entry = self.entry(ip).await;
        let mut guard = entry.lock().unwrap_or_else(|p| p.into_inner());
        if now - guard.1 >= self.window_secs {
            *guard = (0, now);
        }
        if guard.0 >= self.budget {
            return Some((self.window_secs - (now - guard.1)).max(1).unsigned_abs());
        }
        guard.0 += 1;
        None
    }

    /// Gives back the attempt of a successful login: only failures use up the budget.
    pub async fn give_back(&self, ip: IpAddr) {
        let entry = self.entry(ip).await;
        let mut guard = entry.lock().unwrap_or_else(|p| p.into_inner());
        guard.0 = guard.0.saturating_sub(1);
    }
}
