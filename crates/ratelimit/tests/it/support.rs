//! Shared helpers: a private `redis-server` child process, clocks and configurations.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead_core::Clock;
use bulkhead_ratelimit::{ClassQuota, LimitConfig, Plan, Quota};
use chrono::{TimeZone, Utc};

/// A manual clock at a fixed instant (far from the real time, which the Redis script never sees).
pub(crate) fn manual_clock() -> Clock {
    Clock::manual(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap())
}

pub(crate) fn advance(clock: &Clock, micros: i64) {
    clock.advance(chrono::Duration::microseconds(micros));
}

/// A configuration with every level, small enough that a short script hits each of them.
/// Per-minute quotas keep every Redis TTL far above the test's real running time.
pub(crate) fn four_level_config() -> LimitConfig {
    let mut config = LimitConfig {
        global: Some(Quota::per_minute(60).with_burst(10)),
        per_agent: Some(Quota::per_minute(12).with_burst(4)),
        ..LimitConfig::default()
    };
    config
        .plans
        .insert(Plan::Free, Quota::per_minute(20).with_burst(6));
    config
        .plans
        .insert(Plan::Standard, Quota::per_minute(30).with_burst(8));
    config
        .plans
        .insert(Plan::Enterprise, Quota::per_minute(60).with_burst(15));
    config.classes.insert("default".into(), ClassQuota::cost(1));
    config.classes.insert(
        "token".into(),
        ClassQuota::limited(2, Quota::per_minute(6).with_burst(2)),
    );
    config
}

/// A `redis-server` of our own on 127.0.0.1, killed when dropped. Nothing is persisted.
#[derive(Debug)]
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free loopback port.
    pub(crate) fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a server on `port` (used to restart one where it was).
    pub(crate) fn start_on(port: u16) -> Self {
        let mut server = Self { child: None, port };
        server.restart();
        server
    }

    /// A port nothing listens on right now (for a server started later).
    pub(crate) fn unused_port() -> u16 {
        free_port()
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and waits until it answers PING.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "could not start redis-server ({error}): these tests need it on PATH \
                     (Debian: apt-get install redis-server)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server on 127.0.0.1:{} did not answer in 10 s",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
