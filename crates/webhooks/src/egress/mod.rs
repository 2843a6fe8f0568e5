//! The egress guard: the one way Bulkhead makes an outbound HTTP request.
//!
//! Three layers, each failing closed:
//! 1. [`EgressPolicy::check_url`] judges the raw text, then the value the WHATWG parser (`url`
//!    crate) made of it: scheme, userinfo, port, host. IP-literal hosts are judged by the address
//!    rules right there (reqwest does not resolve literals).
//! 2. [`GuardedResolver`] is the only resolver the client has. It resolves a name once, judges
//!    every A and AAAA answer, refuses the whole answer if any address is denied, and hands
//!    reqwest only the vetted addresses, which are the ones it connects to: there is no second
//!    lookup between the check and the connection, so DNS rebinding cannot move it.
//! 3. [`EgressClient`] builds the reqwest client: no redirects, no proxy from the environment
//!    (only an explicitly configured one), connect and total timeouts, response bodies read up to
//!    a small cap, and one client (so one connection pool) per tenant.
//!
//! Rooms: [`policy`] (what may be reached: URL, name and address rules), [`resolve`] (the one
//! resolver the client has), [`client`] (the reqwest client per tenant, and what an attempt came to).

mod client;
mod policy;
mod resolve;

pub use client::*;
pub use policy::*;
pub use resolve::*;

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn teredo_client_is_the_inverse_of_the_last_32_bits() {
        // 2001:0:4136:e378:8000:63bf:3fff:fdd2 carries client 192.0.2.45.
        let v6: Ipv6Addr = "2001:0:4136:e378:8000:63bf:3fff:fdd2"
            .parse()
            .unwrap_or(Ipv6Addr::UNSPECIFIED);
        assert_eq!(embedded_ipv4(v6), Some(Ipv4Addr::new(192, 0, 2, 45)));
    }

    #[test]
    fn six_to_four_carries_bits_16_to_48() {
        let v6: Ipv6Addr = "2002:a9fe:a9fe::".parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
        assert_eq!(embedded_ipv4(v6), Some(Ipv4Addr::new(169, 254, 169, 254)));
    }

    #[test]
    fn ports_parse() {
        assert_eq!(
            EgressPolicy::parse_ports("443, 8000-8010"),
            Ok(vec![443..=443, 8000..=8010])
        );
        assert!(EgressPolicy::parse_ports("0").is_err());
        assert!(EgressPolicy::parse_ports("9-3").is_err());
    }
}
