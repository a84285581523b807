//! Replay tests of the sans-I/O core: fixture files (recorded from the interop runs and written
//! by hand) played through [`Core::handle`], and a property test against a plain model. No
//! sockets, no root.
//!
//! `CALICO_BGP_BLESS=1 cargo test -p calico-bgp --lib replay` rewrites every fixture's `out`
//! lines with what the core does now (after a deliberate behaviour change; review the diff).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use proptest::prelude::*;
use serde_json::Value;

use super::config::{PeerConfig, SpeakerConfig};
use super::core::{Action, Core, CoreTimer, Event, RouteEvent, SessionEvent};
use super::policy::PolicyRule;
use super::replay::{ActionRec, EventRec, Line, MsgRec, UpdateRec, time_at};
use crate::codec::{Family, GracefulRestart, Notification, Update, notif};
use crate::fsm::{DownReason, Negotiated};
use crate::rib::{Action as Verdict, Source};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay")
}

/// Plays one fixture. Returns the fixture with the actual actions in place of the expected
/// ones, and one message per event whose actions differ.
fn play(text: &str) -> Result<(String, Vec<String>), String> {
    let mut core = Core::default();
    let mut rewritten = String::new();
    let mut mismatches = Vec::new();
    // The event being checked: its line number, its actual actions, the expected ones so far.
    let mut pending: Option<(usize, Vec<Value>, Vec<Value>)> = None;
    let finish = |p: Option<(usize, Vec<Value>, Vec<Value>)>,
                  out: &mut String,
                  mismatches: &mut Vec<String>| {
        let Some((line, actual, expected)) = p else {
            return;
        };
        for a in &actual {
            out.push_str(&format!("{{\"out\":{a}}}\n"));
        }
        if actual != expected {
            let show = |v: &[Value]| v.iter().map(|x| format!("    {x}\n")).collect::<String>();
            mismatches.push(format!(
                "event on line {line}:\n  expected:\n{}  actual:\n{}",
                show(&expected),
                show(&actual)
            ));
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            finish(pending.take(), &mut rewritten, &mut mismatches);
            rewritten.push_str(raw);
            rewritten.push('\n');
            continue;
        }
        let line: Line = serde_json::from_str(trimmed).map_err(|e| format!("line {n}: {e}"))?;
        match (line.input, line.out) {
            (Some(input), None) => {
                finish(pending.take(), &mut rewritten, &mut mismatches);
                rewritten.push_str(raw);
                rewritten.push('\n');
                let event = input.to_event().map_err(|e| format!("line {n}: {e}"))?;
                // What the recorder would write for this event is the line itself.
                let back = EventRec::from_event(&event);
                if back != input {
                    mismatches.push(format!(
                        "line {n}: the event reads back as {}",
                        serde_json::to_string(&back).unwrap()
                    ));
                }
                let actual = core
                    .handle(time_at(line.at), event)
                    .iter()
                    .map(|a| serde_json::to_value(ActionRec::from_action(a)).unwrap())
                    .collect();
                pending = Some((n, actual, Vec::new()));
            }
            (None, Some(out)) => {
                let Some((_, _, expected)) = pending.as_mut() else {
                    return Err(format!("line {n}: an out line before any in line"));
                };
                expected.push(serde_json::to_value(out).unwrap());
            }
            _ => return Err(format!("line {n}: want exactly one of \"in\" and \"out\"")),
        }
    }
    finish(pending.take(), &mut rewritten, &mut mismatches);
    Ok((rewritten, mismatches))
}

/// Every fixture produces, event by event, exactly the actions it lists.
#[test]
fn fixtures_replay_to_their_actions() {
    let bless = std::env::var_os("CALICO_BGP_BLESS").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("tests/replay exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "fixtures missing: {files:?}");
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let (rewritten, mismatches) = match play(&text) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e}", f.display()));
                continue;
            }
        };
        let events = text.lines().filter(|l| l.contains("\"in\"")).count();
        assert!(events > 0, "{}: no events", f.display());
        if bless {
            std::fs::write(f, rewritten).unwrap();
        } else {
            failures.extend(
                mismatches
                    .into_iter()
                    .map(|m| format!("{}: {m}", f.display())),
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The fixture form of an UPDATE reads back to the same routes, and the player notices a
/// wrong expectation (so a fixture cannot pass by accident).
#[test]
fn update_records_round_trip_and_mismatches_are_reported() {
    let rec: UpdateRec = serde_json::from_value(serde_json::json!({
        "withdraw": ["10.9.0.0/24", "fd00:9::/64"],
        "announce": ["10.1.0.0/24", "10.2.0.0/24"],
        "origin": "incomplete", "asPath": "65001 65002 {7 8} (9)", "nextHop": "10.0.0.2",
        "med": 5, "localPref": 200, "atomicAggregate": true,
        "communities": ["65000:100"], "largeCommunities": ["1:2:3"],
        "originatorId": "1.1.1.1", "clusterList": ["2.2.2.2"], "other": ["192/99/0102"]
    }))
    .unwrap();
    let back = UpdateRec::from_update(&rec.to_update().unwrap());
    assert_eq!(back, rec);
    let v6: UpdateRec = serde_json::from_value(serde_json::json!({
        "announce": ["fd00:1::/64"], "asPath": "65001", "nextHop": "fd00::2",
        "linkLocal": "fe80::2"
    }))
    .unwrap();
    assert_eq!(UpdateRec::from_update(&v6.to_update().unwrap()), v6);
    let bad: UpdateRec = serde_json::from_value(
        serde_json::json!({"announce": ["fd00:1::/64"], "nextHop": "10.0.0.2"}),
    )
    .unwrap();
    assert!(
        bad.to_update().is_err(),
        "IPv6 routes with an IPv4 next hop"
    );

    let fixture = r#"{"in":{"timer":"syncDeadline"}}
{"out":{"route":{"event":"withdrawn","prefix":"10.0.0.0/24"}}}
"#;
    let (rewritten, mismatches) = play(fixture).unwrap();
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    assert!(rewritten.contains(r#""event":"synced""#), "{rewritten}");
}

// ------------------------------------------------------------------ model-based property

const US: &str = "10.0.0.1";
/// Route sources (eBGP), and the peer that only receives (eBGP).
const A: &str = "10.0.0.2";
const B: &str = "10.0.0.3";
const C: &str = "10.0.0.4";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn peer_as(peer: IpAddr) -> u32 {
    match peer.to_string().as_str() {
        A => 65001,
        B => 65002,
        _ => 65003,
    }
}

/// Peer A rejects everything inside 10.0.3.0/24 on import.
fn rejected_by_a(prefix: &IpNet) -> bool {
    "10.0.3.0/24".parse::<IpNet>().unwrap().contains(prefix)
}

fn property_config() -> SpeakerConfig {
    let peer = |addr: &str| PeerConfig {
        import: if addr == A {
            vec![PolicyRule {
                cidr: Some("10.0.3.0/24".parse().unwrap()),
                ..PolicyRule::all(Verdict::Reject, None)
            }]
        } else {
            Vec::new()
        },
        ..serde_json::from_value(
            serde_json::json!({"address": addr, "remoteAs": peer_as(ip(addr))}),
        )
        .unwrap()
    };
    SpeakerConfig {
        peers: vec![peer(A), peer(B), peer(C)],
        ..serde_json::from_value(serde_json::json!({"routerId": US, "localAs": 64512})).unwrap()
    }
}

fn negotiated(peer: IpAddr) -> Negotiated {
    let IpAddr::V4(id) = peer else { unreachable!() };
    Negotiated {
        peer_as: peer_as(peer),
        peer_router_id: id,
        hold_time: 90,
        keepalive: 30,
        four_octet_as: true,
        families: vec![Family::IPV4_UNICAST],
        route_refresh: true,
        // Every peer keeps forwarding state across its restarts.
        peer_graceful_restart: Some(GracefulRestart {
            restarting: false,
            restart_time: 60,
            families: vec![(Family::IPV4_UNICAST, true)],
        }),
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Source `peer` (0 = A, 1 = B) announces `prefix` with an AS path of `len` ASNs and `med`.
    Announce {
        peer: usize,
        prefix: u8,
        len: usize,
        med: Option<u32>,
    },
    Withdraw {
        peer: usize,
        prefix: u8,
    },
    /// The session of peer 0 = A, 1 = B or 2 = C ends with a NOTIFICATION (no graceful
    /// restart) and comes up again.
    Reset {
        peer: usize,
    },
    /// The connection of source `peer` drops: graceful restart, its routes stay as stale.
    Drop {
        peer: usize,
    },
    /// The restarting source comes back (forwarding state kept).
    Return {
        peer: usize,
    },
    /// End-of-RIB from the source: its routes still stale go.
    EndOfRib {
        peer: usize,
    },
    /// The source's restart time passes: its stale routes go.
    StaleTimeout {
        peer: usize,
    },
}

/// Operations; with `graceful` false, no connection ever drops without a NOTIFICATION, so no
/// route goes stale (returns, End-of-RIBs and restart timers then change nothing).
fn op(graceful: bool) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..2usize, 0..6u8, 1..4usize, proptest::option::of(0..3u32))
            .prop_map(|(peer, prefix, len, med)| Op::Announce { peer, prefix, len, med }),
        4 => (0..2usize, 0..6u8).prop_map(|(peer, prefix)| Op::Withdraw { peer, prefix }),
        1 => (0..3usize).prop_map(|peer| Op::Reset { peer }),
        u32::from(graceful) => (0..2usize).prop_map(|peer| Op::Drop { peer }),
        2 => (0..2usize).prop_map(|peer| Op::Return { peer }),
        1 => (0..2usize).prop_map(|peer| Op::EndOfRib { peer }),
        1 => (0..2usize).prop_map(|peer| Op::StaleTimeout { peer }),
    ]
}

fn prefix(i: u8) -> IpNet {
    format!("10.0.{i}.0/24").parse().unwrap()
}

fn session(peer: IpAddr, generation: u64, event: SessionEvent) -> Event {
    Event::Session {
        peer,
        generation,
        event,
    }
}

/// A source's path in the model: AS path length and whether it is stale.
type ModelPath = (usize, bool);

/// The observers: what the agent was told (prefix -> learned from) and what peer C holds
/// (prefix -> AS path, next hop).
#[derive(Default)]
struct Observed {
    agent: BTreeMap<IpNet, IpAddr>,
    at_c: BTreeMap<IpNet, (String, IpAddr)>,
}

impl Observed {
    fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Route(RouteEvent::Best {
                    prefix,
                    learned_from,
                    ..
                }) => {
                    self.agent.insert(*prefix, *learned_from);
                }
                Action::Route(RouteEvent::Withdrawn { prefix }) => {
                    self.agent.remove(prefix);
                }
                Action::Send { peer, .. } if *peer == ip(C) => {
                    let ActionRec::Send { messages, .. } = ActionRec::from_action(a) else {
                        unreachable!()
                    };
                    for m in messages {
                        let MsgRec::Update(u) = m else { continue };
                        for w in &u.withdraw {
                            self.at_c.remove(w);
                        }
                        for p in &u.announce {
                            self.at_c
                                .insert(*p, (u.as_path.clone(), u.next_hop.unwrap()));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Per prefix: AS path length, stale, learned from.
type Best = BTreeMap<IpNet, (usize, bool, IpAddr)>;

/// Plays `ops` through the core and through a plain model. Returns the model's best path per
/// prefix (shortest AS path, then fresh before stale, then lowest router id; MED never decides
/// across neighbour ASes), the Loc-RIB's, and what the agent and peer C were told.
fn play_model(ops: &[Op]) -> (Best, Best, Observed) {
    let sources = [ip(A), ip(B)];
    let peers = [ip(A), ip(B), ip(C)];
    let generation = |peer: usize| peer as u64 + 1;
    let up_event = |p: IpAddr| SessionEvent::Established {
        negotiated: negotiated(p),
        local: ip(US),
    };
    let mut core = Core::default();
    let t = std::time::UNIX_EPOCH;
    let mut seen = Observed::default();
    seen.apply(&core.handle(t, Event::Config(Box::new(property_config()))));
    for (i, p) in peers.iter().enumerate() {
        seen.apply(&core.handle(t, session(*p, generation(i), up_event(*p))));
    }
    // The model: each source's paths, and whether its session is up.
    let mut paths: [BTreeMap<IpNet, ModelPath>; 2] = Default::default();
    let mut up = [true, true];
    for op in ops {
        let mut events = Vec::new();
        match op.clone() {
            Op::Announce {
                peer,
                prefix: i,
                len,
                med,
            } if up[peer] => {
                let from = sources[peer];
                let asn = peer_as(from);
                let path: Vec<String> = (0..len)
                    .map(|k| (asn + 100 * k as u32).to_string())
                    .collect();
                let rec = UpdateRec {
                    announce: vec![prefix(i)],
                    as_path: path.join(" "),
                    next_hop: Some(from),
                    med,
                    ..UpdateRec::default()
                };
                if from == ip(A) && rejected_by_a(&prefix(i)) {
                    paths[peer].remove(&prefix(i));
                } else {
                    paths[peer].insert(prefix(i), (len, false));
                }
                events.push((peer, SessionEvent::Update(rec.to_update().unwrap())));
            }
            Op::Withdraw { peer, prefix: i } if up[peer] => {
                paths[peer].remove(&prefix(i));
                let rec = UpdateRec {
                    withdraw: vec![prefix(i)],
                    ..UpdateRec::default()
                };
                events.push((peer, SessionEvent::Update(rec.to_update().unwrap())));
            }
            Op::Reset { peer } if peer == 2 || up[peer] => {
                let notification = Notification::new(notif::CEASE, notif::CEASE_ADMIN_RESET);
                events.push((
                    peer,
                    SessionEvent::Down(DownReason::NotificationReceived(notification)),
                ));
                events.push((peer, up_event(peers[peer])));
                if peer < 2 {
                    paths[peer].clear();
                }
            }
            Op::Drop { peer } if up[peer] => {
                up[peer] = false;
                for p in paths[peer].values_mut() {
                    p.1 = true;
                }
                events.push((peer, SessionEvent::Down(DownReason::ConnectionClosed)));
            }
            Op::Return { peer } if !up[peer] => {
                up[peer] = true;
                events.push((peer, up_event(peers[peer])));
            }
            Op::EndOfRib { peer } if up[peer] => {
                paths[peer].retain(|_, p| !p.1);
                events.push((
                    peer,
                    SessionEvent::Update(Update::end_of_rib(Family::IPV4_UNICAST)),
                ));
            }
            Op::StaleTimeout { peer } => {
                paths[peer].retain(|_, p| !p.1);
                let timer = CoreTimer::Stale {
                    peer: peers[peer],
                    generation: generation(peer),
                };
                seen.apply(&core.handle(t, Event::Timer(timer)));
            }
            // The operation needs a session in another state: nothing happens.
            _ => {}
        }
        for (peer, event) in events {
            if let SessionEvent::Down(_) = event
                && peer == 2
            {
                // C forgets what we sent when its session drops.
                seen.at_c.clear();
            }
            seen.apply(&core.handle(t, session(peers[peer], generation(peer), event)));
        }
    }
    // The model's best per prefix.
    let mut best: Best = BTreeMap::new();
    for (i, source) in paths.iter().enumerate() {
        for (p, (len, stale)) in source {
            let candidate = (*len, *stale, sources[i]);
            if best.get(p).is_none_or(|b| candidate < *b) {
                best.insert(*p, candidate);
            }
        }
    }
    let rib: Best = core
        .rib()
        .iter_best()
        .map(|(p, path)| {
            let Source::Peer(from) = path.source else {
                panic!("local path {p}")
            };
            (p, (path.attrs.as_path.len(), path.stale, from))
        })
        .collect();
    (best, rib, seen)
}

/// What the agent and peer C must have been told when the model ends at `best`.
fn check_observers(best: &Best, seen: &Observed) -> Result<(), TestCaseError> {
    let want_agent: BTreeMap<IpNet, IpAddr> =
        best.iter().map(|(p, (_, _, from))| (*p, *from)).collect();
    prop_assert_eq!(&seen.agent, &want_agent);
    let want_c: BTreeMap<IpNet, (String, IpAddr)> = best
        .iter()
        .map(|(p, (len, _, from))| {
            let asn = peer_as(*from);
            let path: Vec<String> = std::iter::once("64512".to_string())
                .chain((0..*len).map(|k| (asn + 100 * k as u32).to_string()))
                .collect();
            (*p, (path.join(" "), ip(US)))
        })
        .collect();
    prop_assert_eq!(&seen.at_c, &want_c);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the order of announcements, withdrawals and session resets, the core ends
    /// where the model ends: its Loc-RIB, the agent's view from `RouteEvent`s and what peer C
    /// was sent all hold the model's best paths.
    #[test]
    fn core_ends_where_a_plain_model_ends(ops in proptest::collection::vec(op(false), 1..80)) {
        let (best, rib, seen) = play_model(&ops);
        prop_assert_eq!(&rib, &best);
        check_observers(&best, &seen)?;
    }

    /// With graceful restarts too (drop, return, End-of-RIB, restart timer), the Loc-RIB still
    /// ends where the model ends.
    #[test]
    fn graceful_restart_keeps_the_rib_where_the_model_is(ops in proptest::collection::vec(op(true), 1..80)) {
        let (best, rib, _) = play_model(&ops);
        prop_assert_eq!(&rib, &best);
    }

    /// ... and so does what the agent and peer C were told. The smallest case that once
    /// failed (saved in proptest-regressions/): A and B announce one prefix with equal paths
    /// (A wins on router id), A drops; A's path turns stale, B's fresh one wins the tie, and
    /// that change must reach the agent and C (fixture `hand-graceful-restart-tie.jsonl`).
    #[test]
    fn graceful_restart_tells_the_agent_and_peers_where_the_model_is(ops in proptest::collection::vec(op(true), 1..80)) {
        let (best, _, seen) = play_model(&ops);
        check_observers(&best, &seen)?;
    }
}
