//! The login throttle per client address: failures counted in process, per address bucket
//! (IPv6 per /64), so one address cannot guess passwords across a tenant's accounts.

use std::net::IpAddr;
use std::sync::Arc;

/// Failures one address may have per window, across accounts.
pub const IP_FAILURES_PER_WINDOW: u32 = 30;
/// The per-address window.
pub const IP_WINDOW_SECS: i64 = 15 * 60;

/// Failures per client address, in process.
#[derive(Debug)]
pub struct IpThrottle {
    failures: moka::future::Cache<IpAddr, Arc<std::sync::Mutex<(u32, i64)>>>,
}

impl Default for IpThrottle {
    fn default() -> Self {
        Self {
            failures: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(IP_WINDOW_SECS as u64))
                .build(),
        }
    }
}

impl IpThrottle {
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
        if now - guard.1 >= IP_WINDOW_SECS {
            *guard = (0, now);
        }
        if guard.0 >= IP_FAILURES_PER_WINDOW {
            return Some((IP_WINDOW_SECS - (now - guard.1)).max(1) as u64);
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
