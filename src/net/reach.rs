//! Where an outgoing request may connect. A webhook's URL is chosen by whoever configures alerts;
//! pointed at loopback, a private network or a cloud metadata service it would turn kpilens into
//! a way in. Literal addresses are refused when the URL is checked at start ([`inside_host`]);
//! names are refused where they resolve, in the resolver the connection itself uses, so a name
//! that resolves outside when checked and inside when called (DNS rebinding) is still refused.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower::Service;

/// Whether a client may connect to inside addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Any address (an identity provider on the bank's own network).
    Anywhere,
    /// No loopback, private, link-local or unspecified address (webhooks by default).
    OutsideOnly,
}

/// Why `ip` is inside (loopback, a private or link-local network, not a host), if it is.
fn inside(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) if ip.is_loopback() => Some("loopback"),
        IpAddr::V4(ip) if ip.is_private() => Some("a private address"),
        IpAddr::V4(ip) if ip.is_link_local() => {
            Some("link-local (cloud metadata services live there)")
        }
        IpAddr::V4(ip) if ip.is_unspecified() || ip.is_broadcast() => Some("not a host"),
        IpAddr::V6(ip) if ip.is_loopback() => Some("loopback"),
        IpAddr::V6(ip) if ip.is_unspecified() => Some("not a host"),
        IpAddr::V6(ip) if ip.is_unique_local() => Some("a private address"),
        IpAddr::V6(ip) if ip.is_unicast_link_local() => Some("link-local"),
        IpAddr::V6(ip) => ip.to_ipv4_mapped().and_then(|v4| inside(IpAddr::V4(v4))),
        IpAddr::V4(_) => None,
    }
}

/// Why the host of a URL is inside, if it is known to be without resolving it: a literal address,
/// or `localhost`. Other names are checked where they resolve ([`CheckedResolver`]).
pub fn inside_host(host: &str) -> Option<&'static str> {
    // `localhost.` is `localhost`: a fully qualified name ends in a dot.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.');
    if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") {
        return Some("loopback");
    }
    inside(host.parse().ok()?)
}

/// The system's resolver (`getaddrinfo` on a blocking thread, as hyper's default), refusing a
/// name any of whose addresses is inside when the reach is [`Reach::OutsideOnly`].
#[derive(Clone)]
pub struct CheckedResolver {
    reach: Reach,
    system: GaiResolver,
}

impl CheckedResolver {
    pub fn new(reach: Reach) -> Self {
        Self {
            reach,
            system: GaiResolver::new(),
        }
    }
}

type Addrs = std::vec::IntoIter<SocketAddr>;

impl Service<Name> for CheckedResolver {
    type Response = Addrs;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Addrs>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.system.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let reach = self.reach;
        let lookup = self.system.call(name.clone());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = lookup.await?.collect();
            if reach == Reach::OutsideOnly {
                // Every address, not only the first: the connector tries them in turn.
                if let Some((ip, why)) = addrs.iter().find_map(|a| Some((a.ip(), inside(a.ip())?)))
                {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "{} resolves to {ip}, {why}: refused (--webhook-allow-private allows it)",
                            name.as_str()
                        ),
                    ));
                }
            }
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_inside_addresses_are_named() {
        for (host, why) in [
            ("127.0.0.1", "loopback"),
            ("[::1]", "loopback"),
            ("localhost", "loopback"),
            ("api.localhost", "loopback"),
            ("LOCALHOST.", "loopback"),
            ("10.1.2.3", "a private address"),
            ("192.168.0.1", "a private address"),
            ("fd00::1", "a private address"),
            ("0.0.0.0", "not a host"),
            ("[::ffff:10.0.0.1]", "a private address"),
        ] {
            assert_eq!(inside_host(host), Some(why), "{host}");
        }
        assert!(
            inside_host("169.254.169.254")
                .unwrap()
                .starts_with("link-local")
        );
        for host in ["93.184.216.34", "example.com", "[2606:4700::1111]"] {
            assert_eq!(inside_host(host), None, "{host}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_inside_is_refused_only_when_the_reach_is_outside() {
        let name: Name = "localhost".parse().unwrap();
        let refused = CheckedResolver::new(Reach::OutsideOnly)
            .call(name.clone())
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            refused.to_string().contains("localhost resolves to"),
            "{refused}"
        );
        let resolved: Vec<_> = CheckedResolver::new(Reach::Anywhere)
            .call(name)
            .await
            .unwrap()
            .collect();
        assert!(
            resolved.iter().all(|a| a.ip().is_loopback()),
            "{resolved:?}"
        );
    }
}
