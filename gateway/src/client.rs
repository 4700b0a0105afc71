//! Who the client is, by address: the socket's peer, or, when the peer is
//! one of `TRUSTED_PROXIES`, the nearest address in `X-Forwarded-For` that
//! is not a trusted proxy. A client's own `X-Forwarded-For` is never
//! believed. Limits count IPv6 clients per /64, the block one subscriber
//! usually holds, so a client cannot take a fresh bucket per address.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::{IpNet, Ipv6Net};

/// The client's address as far as the trusted proxies vouch for it.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&ip.to_canonical()));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = headers.get_all("x-forwarded-for").iter().filter_map(|value| value.to_str().ok());
    let hops: Vec<&str> = hops.flat_map(|value| value.split(',')).map(str::trim).collect();
    let mut client = peer;
    // From the nearest hop outwards: each trusted proxy vouches for the next.
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else { break };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// The part of `ip` a limit counts: the whole IPv4 address, an IPv6 /64.
pub fn limit_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V6(v6) => Ipv6Net::new(v6, 64).map(|net| net.trunc().to_string()).unwrap_or_else(|_| v6.to_string()),
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn forwarded(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn an_untrusted_peers_forwarded_for_is_ignored() {
        let peer: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_ip(peer, &forwarded("203.0.113.1"), &[]), peer);
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(client_ip(peer, &forwarded("203.0.113.1"), &trusted), peer);
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        // The client forged the first entry; the proxies appended the rest.
        let headers = forwarded("1.2.3.4, 203.0.113.9, 10.0.0.5");
        assert_eq!(client_ip(proxy, &headers, &trusted), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip("::1".parse().unwrap(), &forwarded("2001:db8::7"), &trusted).to_string(), "2001:db8::7");
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy, "no header: the proxy itself");
        assert_eq!(client_ip(proxy, &forwarded("garbage"), &trusted), proxy);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a = limit_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = limit_key("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_ne!(a, limit_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(limit_key("203.0.113.9".parse().unwrap()), "203.0.113.9");
        assert_eq!(limit_key("::ffff:203.0.113.9".parse().unwrap()), "203.0.113.9");
    }
}
