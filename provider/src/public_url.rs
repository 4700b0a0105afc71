//! URLs that Lizards calls on a user's behalf (webhooks) reach the public
//! internet only: never loopback, private, link-local (where cloud metadata
//! services answer), shared, multicast or reserved addresses, so a user
//! cannot make the notifier probe the network it runs in. A URL is checked
//! when it is saved and again at every send; at send time the client's
//! resolver itself drops the request when a name resolves to such an
//! address, and connects to exactly the addresses it checked, so a name
//! that answers differently the second time (DNS rebinding) gains nothing.
//! `WEBHOOK_ALLOW_PRIVATE=true` turns the check off (tests, private
//! deployments).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};
use url::Host;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("must be an http or https URL")]
    NotHttp,
    #[error("refused: {0} is not a public internet address")]
    Private(String),
    #[error("refused: {0} does not resolve")]
    Unresolvable(String),
}

/// Whether `ip` is an address of the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let nat64 = ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if nat64 {
        let [.., c, d] = ip.segments();
        return is_public_v4(Ipv4Addr::from((u32::from(c) << 16) | u32::from(d)));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || ip.to_ipv4().is_some()) // IPv4-compatible ::a.b.c.d
}

/// Checks a URL a user gives: http(s), and every address its host names is
/// public (unless `allow_private`).
pub async fn check(url: &Url, allow_private: bool) -> Result<(), UrlError> {
    let Some(host) = check_literal(url, allow_private)? else { return Ok(()) };
    let port = url.port_or_known_default().unwrap_or(443);
    public_addresses(&host, port).await.map(drop)
}

/// What can be checked without resolving: the scheme, and a host that is
/// an IP address. The host name left to resolve, if any (none when
/// `allow_private`). A client with [`PublicResolver`] checks names itself.
pub fn check_literal(url: &Url, allow_private: bool) -> Result<Option<String>, UrlError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::NotHttp);
    }
    let host = match url.host() {
        None => return Err(UrlError::NotHttp),
        Some(_) if allow_private => return Ok(None),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(Host::Domain(name)) => return Ok(Some(name.to_string())),
    };
    if is_public(host) { Ok(None) } else { Err(UrlError::Private(host.to_string())) }
}

/// The addresses `host` resolves to, all of them public, or why not.
async fn public_addresses(host: &str, port: u16) -> Result<Vec<SocketAddr>, UrlError> {
    let addresses =
        tokio::net::lookup_host((host, port)).await.map_err(|_| UrlError::Unresolvable(host.to_string()))?;
    only_public(host, addresses.collect())
}

fn only_public(host: &str, addresses: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, UrlError> {
    if addresses.is_empty() {
        return Err(UrlError::Unresolvable(host.to_string()));
    }
    // One private address is enough to refuse: the client may pick any.
    if addresses.iter().any(|address| !is_public(address.ip())) {
        return Err(UrlError::Private(host.to_string()));
    }
    Ok(addresses)
}

/// Answers a name with addresses, in place of the system resolver (tests
/// use it to make a name answer differently from one lookup to the next).
pub type Lookup = Arc<dyn Fn(&str) -> Vec<IpAddr> + Send + Sync>;

/// A resolver for reqwest that only ever yields public addresses: the
/// connection goes to what was checked.
#[derive(Clone, Default)]
pub struct PublicResolver {
    lookup: Option<Lookup>,
}

impl PublicResolver {
    pub fn with_lookup(lookup: Lookup) -> PublicResolver {
        PublicResolver { lookup: Some(lookup) }
    }
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let addresses = match lookup {
                Some(lookup) => {
                    only_public(&host, lookup(&host).into_iter().map(|ip| SocketAddr::new(ip, 0)).collect())?
                }
                None => public_addresses(&host, 0).await?,
            };
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        let internal = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.2",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ];
        for text in internal {
            assert!(!is_public(text.parse().unwrap()), "{text}");
        }
        for text in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(text.parse().unwrap()), "{text}");
        }
    }

    #[tokio::test]
    async fn urls_to_internal_hosts_are_refused_unless_allowed() {
        for text in ["http://127.0.0.1:8500/x", "http://[::1]/", "http://169.254.169.254/latest", "http://localhost/"] {
            let url = Url::parse(text).unwrap();
            assert!(matches!(check(&url, false).await, Err(UrlError::Private(_))), "{text}");
            assert_eq!(check(&url, true).await, Ok(()), "{text} with WEBHOOK_ALLOW_PRIVATE");
        }
        assert_eq!(check(&Url::parse("ftp://example.com/").unwrap(), false).await, Err(UrlError::NotHttp));
        let nowhere = Url::parse("http://no-such-host.invalid/").unwrap();
        assert!(matches!(check(&nowhere, false).await, Err(UrlError::Unresolvable(_))));
    }

    #[tokio::test]
    async fn the_resolver_yields_no_internal_address() {
        let resolved = PublicResolver::default().resolve("localhost".parse().unwrap()).await;
        let error = resolved.err().expect("localhost is refused");
        assert!(error.to_string().starts_with("refused:"), "{error}");
    }

    #[tokio::test]
    async fn a_name_that_rebinds_to_loopback_after_its_check_is_never_connected_to() {
        // The receiver a rebinding attacker aims at.
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = target.local_addr().unwrap().port();
        // Public at the first lookup (when the URL is saved), loopback after.
        let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = lookups.clone();
        let lookup: Lookup = Arc::new(move |_| {
            let first = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            vec![if first { IpAddr::from([93, 184, 216, 34]) } else { IpAddr::from([127, 0, 0, 1]) }]
        });
        let resolver = PublicResolver::with_lookup(lookup);
        let saved = resolver.resolve("rebind.example".parse().unwrap()).await;
        assert!(saved.is_ok(), "the first answer is public");

        lizards_shared::http::install_crypto();
        let client = reqwest::Client::builder().dns_resolver(resolver).build().unwrap();
        let sent = client.post(format!("http://rebind.example:{port}/hook")).send().await;
        let error = sent.expect_err("the send is refused");
        let refused = std::iter::successors(std::error::Error::source(&error), |cause| cause.source())
            .any(|cause| cause.downcast_ref::<UrlError>().is_some());
        assert!(refused, "refused by the resolver: {error:?}");
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 2, "resolved again at send time");
        let accepted = tokio::time::timeout(std::time::Duration::from_millis(100), target.accept()).await;
        assert!(accepted.is_err(), "loopback was connected to");
    }
}
