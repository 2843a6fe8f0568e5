//! Client addresses as address-keyed limits and audit aggregation count them.

use std::net::{IpAddr, Ipv6Addr};

/// Bits of an IPv6 address that name one subscriber: a /64 is what one customer, host or VM
/// usually gets, so keying IPv6 per /128 would hand every client 2^64 fresh budgets.
pub const IPV6_BUCKET_PREFIX: u32 = 64;

/// The bucket an address is counted in, the one rule every address-keyed limit (pre-auth
/// limiter, login throttle) and the aggregation of authentication failures use: an IPv4 address
/// (or an IPv4-mapped IPv6 address) is its own bucket; an IPv6 address counts as its /64.
pub fn address_bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - IPV6_BUCKET_PREFIX);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_bucketed_per_64_and_ipv4_per_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_bucket(a), address_bucket(b));
        assert_eq!(
            address_bucket(a),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_ne!(address_bucket(a), address_bucket(other));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_bucket(v4), v4);
        assert_eq!(address_bucket(mapped), v4);
        assert_ne!(
            address_bucket(v4),
            address_bucket("192.0.2.8".parse().unwrap())
        );
    }
}
