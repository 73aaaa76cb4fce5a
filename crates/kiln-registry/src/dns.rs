//! Names to addresses for kiln's HTTP clients, in Rust.
//!
//! The order is glibc's default (`hosts: files dns`): a name `/etc/hosts`
//! lists gets the addresses listed there and no query at all; any other
//! name goes to the nameservers of `/etc/resolv.conf` (its search list,
//! ndots, timeout and attempts), or to 127.0.0.1 when the file is missing
//! or names none (resolv.conf(5)). `localhost` is loopback even without
//! /etc/hosts (RFC 6761).
//!
//! Never through getaddrinfo: the static kiln carries its own glibc, which
//! would load the host's NSS modules (built against the host's glibc) when
//! the host's nsswitch.conf names one (mdns, resolve, myhostname).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolveHosts, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::{Hosts, TokioResolver};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The resolver of every HTTP client kiln builds (`ClientBuilder::
/// dns_resolver`): the registry client's and `ADD <url>`'s. Cheap to
/// make; the DNS side starts on its first query, inside the runtime that
/// asks.
#[derive(Debug, Default, Clone)]
pub struct NameResolver {
    dns: Arc<OnceLock<TokioResolver>>,
}

impl NameResolver {
    /// A resolver that has read nothing yet.
    pub fn new() -> NameResolver {
        NameResolver::default()
    }
}

impl Resolve for NameResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let dns = self.dns.clone();
        Box::pin(async move {
            // Read at each lookup, as glibc does: it may change while a
            // long build runs.
            let hosts = Hosts::from_system().unwrap_or_default();
            if let Some(addrs) = listed(&hosts, name.as_str()) {
                return Ok(Box::new(addrs.into_iter()) as Addrs);
            }
            let lookup = dns.get_or_init(system_dns).lookup_ip(name.as_str()).await?;
            let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The addresses `hosts` lists for `name` (both families), or `None`
/// when it lists none. Port 0: the URL's port is used.
fn listed(hosts: &Hosts, name: &str) -> Option<Vec<SocketAddr>> {
    let name = hickory_resolver::Name::from_str(name).ok()?;
    let addrs: Vec<SocketAddr> = [RecordType::A, RecordType::AAAA]
        .into_iter()
        .filter_map(|kind| hosts.lookup_static_host(&Query::query(name.clone(), kind)))
        .flat_map(|lookup| {
            lookup
                .iter()
                .filter_map(|r| r.ip_addr())
                .collect::<Vec<_>>()
        })
        .map(|ip| SocketAddr::new(ip, 0))
        .collect();
    (!addrs.is_empty()).then_some(addrs)
}

/// DNS as `/etc/resolv.conf` configures it, else the local nameserver.
fn system_dns() -> TokioResolver {
    let mut builder = TokioResolver::builder_tokio().unwrap_or_else(|_| {
        let local =
            NameServerConfigGroup::from_ips_clear(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], 53, true);
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], local),
            TokioConnectionProvider::default(),
        )
    });
    let options = builder.options_mut();
    // Both families at once, for the connector's happy eyeballs.
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // /etc/hosts was asked first (resolve): a name it lists for one
    // family only must not be asked of DNS for the other.
    options.use_hosts_file = ResolveHosts::Never;
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(text: &str) -> Hosts {
        let mut hosts = Hosts::default();
        hosts.read_hosts_conf(text.as_bytes()).unwrap();
        hosts
    }

    fn ips(addrs: Option<Vec<SocketAddr>>) -> Option<Vec<String>> {
        addrs.map(|a| a.iter().map(|a| a.ip().to_string()).collect())
    }

    #[test]
    fn a_listed_name_gets_its_listed_addresses_of_both_families() {
        let hosts = hosts(
            "127.0.0.1 localhost\n\
             # a comment\n\
             10.0.0.5 registry.ci registry\n\
             fd00::5 registry.ci\n",
        );
        assert_eq!(
            ips(listed(&hosts, "registry.ci")),
            Some(vec!["10.0.0.5".into(), "fd00::5".into()])
        );
        assert_eq!(
            ips(listed(&hosts, "REGISTRY")),
            Some(vec!["10.0.0.5".into()])
        );
    }

    #[test]
    fn an_unlisted_name_is_left_to_dns() {
        let hosts = hosts("127.0.0.1 localhost\n10.0.0.5 registry.ci\n");
        assert_eq!(listed(&hosts, "registry.example"), None);
        assert_eq!(listed(&Hosts::default(), "registry.ci"), None);
    }
}
