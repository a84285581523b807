//! Routes: add, replace, delete and list, tagged with a route protocol number.
//!
//! The protocol number (`proto` in `ip route`) is how a component recognises its own routes
//! after a restart: list with [`RouteFilter::protocol`], compare with what it wants, replace
//! or delete only the difference.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use calico_dataplane::{Netlink, Route, RouteFilter, RTPROT_BIRD};
//! let nl = Netlink::connect()?;
//! // The seed's three kinds of route on node1:
//! nl.replace_route(&Route::gateway("192.168.104.0/26".parse()?, "192.168.33.12".parse()?, Some("eth1"), RTPROT_BIRD)).await?;
//! nl.replace_route(&Route::device("192.168.166.128/32".parse()?, "calicce21fc3677", RTPROT_BIRD)).await?;
//! nl.replace_route(&Route::blackhole("192.168.166.128/26".parse()?, RTPROT_BIRD)).await?;
//! let ours = nl.routes(&RouteFilter::protocol(RTPROT_BIRD)).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::RouteMessageBuilder;

use crate::conn::{Netlink, errno, is_not_found};
use crate::link::LinkError;

/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;
/// `proto boot`: what `ip route add` uses by default (and Calico's CNI for workload routes).
pub const RTPROT_BOOT: u8 = 3;
/// `proto static`.
pub const RTPROT_STATIC: u8 = 4;
/// `proto bird`: what BIRD (and so Calico's BGP) tags its routes with.
pub const RTPROT_BIRD: u8 = 12;

/// Errors changing or reading routes.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("route {dst}: {source}")]
    Link {
        dst: IpNet,
        #[source]
        source: Box<LinkError>,
    },
    #[error("{op} route {route} failed")]
    Netlink {
        op: &'static str,
        route: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("route {route} already exists")]
    Exists { route: String },
    #[error("route {dst}: gateway {via} is not of the same address family")]
    FamilyMismatch { dst: IpNet, via: IpAddr },
    #[error("{op} route {route} refused by the kernel: {}{}", std::io::Error::from_raw_os_error(*errno), reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Refused {
        op: &'static str,
        route: String,
        /// The kernel's errno (positive).
        errno: i32,
        /// The kernel's own explanation (extended acknowledgement), when it gave one.
        reason: Option<String>,
    },
    #[error("{op} route {route}: state unknown, {why}")]
    Unacknowledged {
        op: &'static str,
        route: String,
        why: String,
    },
    #[error("listing {family} routes failed")]
    List {
        family: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
}

/// Where a route sends packets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// Directly out of an interface (`dev X scope link`), e.g. a local workload's veth.
    Device { ifname: String },
    /// Via a next hop (`via G [dev X] [onlink]`).
    Gateway {
        via: IpAddr,
        ifname: Option<String>,
        onlink: bool,
    },
    /// Dropped silently (`blackhole`), e.g. a block this host owns.
    Blackhole,
    /// Anything else the kernel reports (unreachable, multipath, ...); listed, never written.
    Other { kind: u8 },
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination; host bits are cleared when the route is written.
    pub dst: IpNet,
    pub target: RouteTarget,
    /// Route protocol number (`proto`).
    pub protocol: u8,
    /// Routing table ([`RT_TABLE_MAIN`] unless told otherwise).
    pub table: u32,
    /// Metric (`metric`/`priority`); `None` is the kernel's default.
    pub metric: Option<u32>,
}

impl Route {
    pub fn device(dst: IpNet, ifname: &str, protocol: u8) -> Route {
        Route {
            dst: dst.trunc(),
            target: RouteTarget::Device {
                ifname: ifname.to_owned(),
            },
            protocol,
            table: RT_TABLE_MAIN,
            metric: None,
        }
    }

    pub fn gateway(dst: IpNet, via: IpAddr, ifname: Option<&str>, protocol: u8) -> Route {
        Route {
            dst: dst.trunc(),
            target: RouteTarget::Gateway {
                via,
                ifname: ifname.map(str::to_owned),
                onlink: false,
            },
            protocol,
            table: RT_TABLE_MAIN,
            metric: None,
        }
    }

    pub fn blackhole(dst: IpNet, protocol: u8) -> Route {
        Route {
            dst: dst.trunc(),
            target: RouteTarget::Blackhole,
            protocol,
            table: RT_TABLE_MAIN,
            metric: None,
        }
    }

    /// The same route in another table.
    pub fn in_table(mut self, table: u32) -> Route {
        self.table = table;
        self
    }

    /// The same route with a metric.
    pub fn with_metric(mut self, metric: u32) -> Route {
        self.metric = Some(metric);
        self
    }
}

/// `ip route` style: `192.168.104.0/26 via 192.168.33.12 dev eth1 proto 12`.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            RouteTarget::Blackhole => write!(f, "blackhole {}", self.dst)?,
            RouteTarget::Device { ifname } => write!(f, "{} dev {ifname}", self.dst)?,
            RouteTarget::Gateway {
                via,
                ifname,
                onlink,
            } => {
                write!(f, "{} via {via}", self.dst)?;
                if let Some(i) = ifname {
                    write!(f, " dev {i}")?;
                }
                if *onlink {
                    write!(f, " onlink")?;
                }
            }
            RouteTarget::Other { kind } => write!(f, "{} type {kind}", self.dst)?,
        }
        write!(f, " proto {}", self.protocol)?;
        if self.table != RT_TABLE_MAIN {
            write!(f, " table {}", self.table)?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        Ok(())
    }
}

/// Address family selector for listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Which routes [`Netlink::routes`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFilter {
    /// `None`: both families.
    pub family: Option<Family>,
    /// `None`: every protocol.
    pub protocol: Option<u8>,
    /// `None`: every table.
    pub table: Option<u32>,
}

impl Default for RouteFilter {
    fn default() -> Self {
        RouteFilter {
            family: None,
            protocol: None,
            table: Some(RT_TABLE_MAIN),
        }
    }
}

impl RouteFilter {
    /// Main-table routes of both families tagged with `protocol`.
    pub fn protocol(protocol: u8) -> RouteFilter {
        RouteFilter {
            protocol: Some(protocol),
            ..Default::default()
        }
    }

    /// Whether `route` passes this filter.
    pub fn matches(&self, route: &Route) -> bool {
        let family_ok = match self.family {
            Some(Family::V4) => route.dst.addr().is_ipv4(),
            Some(Family::V6) => route.dst.addr().is_ipv6(),
            None => true,
        };
        family_ok
            && self.protocol.is_none_or(|p| p == route.protocol)
            && self.table.is_none_or(|t| t == route.table)
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// Builds the netlink message for `route` (`oif` already resolved). Pure: unit-tested.
pub(crate) fn route_message(route: &Route, oif: Option<u32>) -> Result<RouteMessage, RouteError> {
    let dst = route.dst.trunc();
    let v4 = dst.addr().is_ipv4();
    let mut m = RouteMessage::default();
    m.header.address_family = family_of(dst.addr());
    m.header.destination_prefix_length = dst.prefix_len();
    m.header.table = u8::try_from(route.table).unwrap_or(0);
    m.header.protocol = RouteProtocol::from(route.protocol);
    m.header.kind = RouteType::Unicast;
    m.header.scope = RouteScope::Universe;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst.addr())));
    m.attributes.push(RouteAttribute::Table(route.table));
    match &route.target {
        RouteTarget::Device { .. } => {
            if v4 {
                m.header.scope = RouteScope::Link;
            }
        }
        RouteTarget::Gateway { via, onlink, .. } => {
            if via.is_ipv4() != v4 {
                return Err(RouteError::FamilyMismatch { dst, via: *via });
            }
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(*via)));
            if *onlink {
                m.header.flags |= RouteFlags::Onlink;
            }
        }
        RouteTarget::Blackhole => m.header.kind = RouteType::BlackHole,
        RouteTarget::Other { .. } => {}
    }
    if let Some(oif) = oif {
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(metric) = route.metric {
        m.attributes.push(RouteAttribute::Priority(metric));
    }
    Ok(m)
}

/// Reads a kernel route message; `names` maps interface indexes to names.
pub(crate) fn parse_route(m: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    let v4 = match m.header.address_family {
        AddressFamily::Inet => true,
        AddressFamily::Inet6 => false,
        _ => return None,
    };
    let mut dst_ip: IpAddr = if v4 {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let mut table = u32::from(m.header.table);
    let mut oif = None;
    let mut via = None;
    let mut metric = None;
    let mut multipath = false;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst_ip = (*ip).into(),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst_ip = (*ip).into(),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(IpAddr::from(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => via = Some(IpAddr::from(*ip)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::MultiPath(_) => multipath = true,
            _ => {}
        }
    }
    let dst = IpNet::new(dst_ip, m.header.destination_prefix_length).ok()?;
    let ifname = oif.map(|i| names.get(&i).cloned().unwrap_or_else(|| format!("if{i}")));
    let target = match m.header.kind {
        RouteType::BlackHole => RouteTarget::Blackhole,
        RouteType::Unicast if multipath => RouteTarget::Other {
            kind: u8::from(m.header.kind),
        },
        RouteType::Unicast => match (via, ifname) {
            (Some(via), ifname) => RouteTarget::Gateway {
                via,
                ifname,
                onlink: m.header.flags.contains(RouteFlags::Onlink),
            },
            (None, Some(ifname)) => RouteTarget::Device { ifname },
            (None, None) => RouteTarget::Other {
                kind: u8::from(m.header.kind),
            },
        },
        other => RouteTarget::Other {
            kind: u8::from(other),
        },
    };
    Some(Route {
        dst,
        target,
        protocol: u8::from(m.header.protocol),
        table,
        metric,
    })
}

impl Netlink {
    pub(crate) async fn oif_for(&self, route: &Route) -> Result<Option<u32>, RouteError> {
        let ifname = match &route.target {
            RouteTarget::Device { ifname } => Some(ifname),
            RouteTarget::Gateway { ifname, .. } => ifname.as_ref(),
            _ => None,
        };
        match ifname {
            None => Ok(None),
            Some(name) => {
                let link = self
                    .require_link(name)
                    .await
                    .map_err(|source| RouteError::Link {
                        dst: route.dst,
                        source: Box::new(source),
                    })?;
                Ok(Some(link.index))
            }
        }
    }

    async fn write_route(&self, route: &Route, replace: bool) -> Result<(), RouteError> {
        let oif = self.oif_for(route).await?;
        let msg = route_message(route, oif)?;
        let mut req = self.handle.route().add(msg);
        if replace {
            req = req.replace();
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if !replace && errno(&e) == Some(libc::EEXIST) => Err(RouteError::Exists {
                route: route.to_string(),
            }),
            Err(source) => Err(RouteError::Netlink {
                op: if replace { "replace" } else { "add" },
                route: route.to_string(),
                source,
            }),
        }
    }

    /// Adds `route`; fails with [`RouteError::Exists`] if a route to the same destination
    /// (and metric) is there already.
    pub async fn add_route(&self, route: &Route) -> Result<(), RouteError> {
        self.write_route(route, false).await
    }

    /// Adds `route` or replaces the route to the same destination (and metric): idempotent.
    pub async fn replace_route(&self, route: &Route) -> Result<(), RouteError> {
        self.write_route(route, true).await
    }

    /// Deletes the route to `route.dst` in `route.table` tagged with `route.protocol` (its
    /// target is not compared, so a route of ours is found whatever it points at). Returns
    /// false if there was none. Routes of other protocols are never touched, except with
    /// protocol 0 (`unspec`), which the kernel treats as "any protocol".
    pub async fn delete_route(&self, route: &Route) -> Result<bool, RouteError> {
        let msg = crate::route_batch::delete_message(route)?;
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(RouteError::Netlink {
                op: "delete",
                route: route.to_string(),
                source,
            }),
        }
    }

    /// Routes passing `filter`, sorted by destination.
    pub async fn routes(&self, filter: &RouteFilter) -> Result<Vec<Route>, RouteError> {
        let names: HashMap<u32, String> = self
            .link_names()
            .await
            .map_err(|source| RouteError::List {
                family: "link",
                source,
            })?
            .into_iter()
            .collect();
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            if filter.family.is_some_and(|f| f != family) {
                continue;
            }
            let (req, label) = match family {
                Family::V4 => (RouteMessageBuilder::<Ipv4Addr>::new().build(), "IPv4"),
                Family::V6 => (RouteMessageBuilder::<Ipv6Addr>::new().build(), "IPv6"),
            };
            let msgs: Vec<RouteMessage> = self
                .handle
                .route()
                .get(req)
                .execute()
                .try_collect()
                .await
                .map_err(|source| RouteError::List {
                    family: label,
                    source,
                })?;
            out.extend(
                msgs.iter()
                    .filter_map(|m| parse_route(m, &names))
                    .filter(|r| filter.matches(r)),
            );
        }
        out.sort_by(|a, b| {
            (a.dst.addr(), a.dst.prefix_len(), a.table).cmp(&(
                b.dst.addr(),
                b.dst.prefix_len(),
                b.table,
            ))
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names() -> HashMap<u32, String> {
        HashMap::from([(2, "eth1".to_owned()), (7, "cali0123456789a".to_owned())])
    }

    fn round_trip(route: &Route, oif: Option<u32>) -> Route {
        let msg = route_message(route, oif).expect("message");
        parse_route(&msg, &names()).expect("parse")
    }

    #[test]
    fn seed_routes_round_trip_through_messages() {
        let gw = Route::gateway(
            "192.168.104.0/26".parse().unwrap(),
            "192.168.33.12".parse().unwrap(),
            Some("eth1"),
            RTPROT_BIRD,
        );
        assert_eq!(round_trip(&gw, Some(2)), gw);
        let dev = Route::device(
            "192.168.166.128/32".parse().unwrap(),
            "cali0123456789a",
            RTPROT_BOOT,
        );
        assert_eq!(round_trip(&dev, Some(7)), dev);
        let bh = Route::blackhole("192.168.166.128/26".parse().unwrap(), RTPROT_BIRD);
        assert_eq!(round_trip(&bh, None), bh);
    }

    #[test]
    fn device_routes_are_link_scoped_for_ipv4_only() {
        let v4 = Route::device("10.0.0.1/32".parse().unwrap(), "eth1", 80);
        assert_eq!(
            route_message(&v4, Some(2)).unwrap().header.scope,
            RouteScope::Link
        );
        let v6 = Route::device("fd00::1/128".parse().unwrap(), "eth1", 80);
        assert_eq!(
            route_message(&v6, Some(2)).unwrap().header.scope,
            RouteScope::Universe
        );
    }

    #[test]
    fn a_gateway_of_the_other_family_is_refused() {
        let r = Route::gateway(
            "10.0.0.0/24".parse().unwrap(),
            "fd00::1".parse().unwrap(),
            None,
            80,
        );
        assert!(matches!(
            route_message(&r, None),
            Err(RouteError::FamilyMismatch { .. })
        ));
    }

    #[test]
    fn host_bits_are_cleared_and_display_names_the_route() {
        let r = Route::blackhole("192.168.166.130/26".parse().unwrap(), RTPROT_BIRD);
        assert_eq!(r.dst.to_string(), "192.168.166.128/26");
        assert_eq!(r.to_string(), "blackhole 192.168.166.128/26 proto 12");
        let t = Route::device("10.1.2.3/32".parse().unwrap(), "cali1", 80)
            .in_table(1000)
            .with_metric(5);
        assert_eq!(
            t.to_string(),
            "10.1.2.3/32 dev cali1 proto 80 table 1000 metric 5"
        );
        assert_eq!(round_trip(&t, Some(7)).table, 1000);
    }

    #[test]
    fn filter_selects_family_protocol_and_table() {
        let a = Route::blackhole("10.0.0.0/26".parse().unwrap(), 80);
        let b = Route::blackhole("fd00::/122".parse().unwrap(), 80);
        let c = Route::blackhole("10.0.1.0/26".parse().unwrap(), 12);
        let f = RouteFilter::protocol(80);
        assert!(f.matches(&a) && f.matches(&b) && !f.matches(&c));
        let v6 = RouteFilter {
            family: Some(Family::V6),
            ..f.clone()
        };
        assert!(!v6.matches(&a) && v6.matches(&b));
        assert!(!f.matches(&a.clone().in_table(7)));
    }

    fn any_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, l)| IpNet::new(
                IpAddr::from(Ipv4Addr::from(a)),
                l
            )
            .unwrap()),
            (any::<u128>(), 0u8..=128).prop_map(|(a, l)| IpNet::new(
                IpAddr::from(Ipv6Addr::from(a)),
                l
            )
            .unwrap()),
        ]
    }

    proptest! {
        #[test]
        fn any_route_round_trips(net in any_net(), proto in any::<u8>(), table in 1u32..5000,
                                 metric in proptest::option::of(any::<u32>()), kind in 0u8..3,
                                 gw in any::<u128>()) {
            let base = match kind {
                0 => Route::blackhole(net, proto),
                1 => Route::device(net, "eth1", proto),
                _ => {
                    let via = if net.addr().is_ipv4() {
                        IpAddr::from(Ipv4Addr::from(gw as u32))
                    } else {
                        IpAddr::from(Ipv6Addr::from(gw))
                    };
                    Route::gateway(net, via, Some("eth1"), proto)
                }
            };
            let mut r = base.in_table(table);
            r.metric = metric;
            let oif = if kind == 0 { None } else { Some(2) };
            prop_assert_eq!(round_trip(&r, oif), r);
        }
    }
}
