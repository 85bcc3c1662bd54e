use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

const T: Timing = Timing {
    grace_ms: 10_000,
    drain_ms: 15_000,
};

fn sid(n: u128) -> SessionId {
    format!("{n:032x}").parse().unwrap()
}

/// A slot whose publisher is live in session `s1` (generation 1), at t = 0.
fn live() -> Slot {
    let mut slot = Slot::new(T);
    assert_eq!(
        slot.handle(Event::Connect { key: "k", now: 0 }),
        vec![Action::Probe {
            generation: 1,
            resume: None
        }]
    );
    assert_eq!(
        slot.handle(Event::Probed { generation: 1 }),
        vec![Action::Open { generation: 1 }]
    );
    assert_eq!(
        slot.handle(Event::Opened {
            generation: 1,
            session: sid(1)
        }),
        vec![Action::Encode {
            generation: 1,
            session: sid(1)
        }]
    );
    slot
}

/// As [`live`], and the publisher left at t = 1000: grace until 11 000.
fn grace() -> Slot {
    let mut slot = live();
    assert_eq!(
        slot.handle(Event::Gone {
            generation: 1,
            now: 1000
        }),
        vec![Action::WakeAt(11_000)]
    );
    slot
}

#[test]
fn a_reconnect_at_the_last_millisecond_of_grace_resumes_and_one_past_it_does_not() {
    let mut slot = grace();
    assert_eq!(
        slot.handle(Event::Connect {
            key: "k",
            now: 10_999
        }),
        vec![Action::Probe {
            generation: 2,
            resume: Some(sid(1))
        }]
    );
    // The timer firing late changes nothing: the session has its publisher back.
    assert_eq!(slot.handle(Event::Tick { now: 11_000 }), vec![]);
    assert_eq!(
        slot.handle(Event::Probed { generation: 2 }),
        vec![Action::Encode {
            generation: 2,
            session: sid(1)
        }]
    );

    let mut slot = grace();
    assert_eq!(
        slot.handle(Event::Connect {
            key: "k",
            now: 11_000
        }),
        vec![
            Action::Finish { session: sid(1) },
            Action::Probe {
                generation: 2,
                resume: None
            }
        ]
    );
    assert_eq!(
        slot.handle(Event::Probed { generation: 2 }),
        vec![Action::Open { generation: 2 }]
    );
}

#[test]
fn grace_ends_on_the_tick_at_its_end_not_before() {
    let mut slot = grace();
    assert_eq!(slot.handle(Event::Tick { now: 10_999 }), vec![]);
    assert_eq!(slot.session(), Some(sid(1)));
    assert_eq!(
        slot.handle(Event::Tick { now: 11_000 }),
        vec![Action::Finish { session: sid(1) }]
    );
    assert_eq!(slot.phase(), &Phase::Ending { session: sid(1) });
    assert_eq!(slot.session(), None);
    assert_eq!(slot.handle(Event::Finished { session: sid(1) }), vec![]);
    assert_eq!(slot.phase(), &Phase::Idle);
}

#[test]
fn two_publishers_racing_the_second_is_refused_and_its_end_is_ignored() {
    let mut slot = live();
    assert_eq!(
        slot.handle(Event::Connect { key: "k", now: 5 }),
        vec![Action::Refuse(
            "this stream already has a live publisher".into()
        )]
    );
    // Also while the first is still being probed.
    let mut probing = Slot::new(T);
    probing.handle(Event::Connect { key: "k", now: 0 });
    assert!(matches!(
        probing.handle(Event::Connect { key: "k", now: 1 })[..],
        [Action::Refuse(_)]
    ));
    // A stale generation's events change nothing.
    let before = slot.clone();
    for e in [
        Event::Gone {
            generation: 7,
            now: 9,
        },
        Event::Probed { generation: 0 },
        Event::Refused {
            generation: 2,
            reason: "x".into(),
            now: 9,
        },
    ] {
        assert_eq!(slot.handle(e), vec![]);
    }
    assert_eq!(slot, before);
}

#[test]
fn a_publisher_refused_after_probing_leaves_no_session_and_a_reason() {
    let mut slot = Slot::new(T);
    slot.handle(Event::Connect { key: "k", now: 0 });
    assert_eq!(
        slot.handle(Event::Refused {
            generation: 1,
            reason: "audio only".into(),
            now: 40
        }),
        vec![]
    );
    assert_eq!(slot.phase(), &Phase::Idle);
    assert_eq!(
        slot.refused(),
        Some(&Refusal {
            reason: "audio only".into(),
            at_ms: 40
        })
    );
    // The next publisher that goes live clears it.
    slot.handle(Event::Connect { key: "k", now: 50 });
    slot.handle(Event::Probed { generation: 2 });
    assert_eq!(slot.refused(), None);
}

#[test]
fn a_resumed_session_whose_new_media_is_refused_waits_again() {
    let mut slot = grace();
    slot.handle(Event::Connect {
        key: "k",
        now: 2000,
    });
    assert_eq!(
        slot.handle(Event::Refused {
            generation: 2,
            reason: "unreadable".into(),
            now: 2500
        }),
        vec![Action::WakeAt(12_500)]
    );
    assert_eq!(slot.session(), Some(sid(1)));
    assert_eq!(
        slot.refused().map(|r| r.reason.as_str()),
        Some("unreadable")
    );
}

#[test]
fn a_live_publisher_over_a_limit_leaves_its_session_waiting_with_the_reason() {
    let mut slot = live();
    assert_eq!(
        slot.handle(Event::Refused {
            generation: 1,
            reason: "too many kbit/s".into(),
            now: 7000
        }),
        vec![Action::WakeAt(17_000)]
    );
    assert_eq!(slot.session(), Some(sid(1)));
    assert_eq!(
        slot.refused(),
        Some(&Refusal {
            reason: "too many kbit/s".into(),
            at_ms: 7000
        })
    );
    // A publisher that goes live again clears it.
    slot.handle(Event::Connect {
        key: "k",
        now: 8000,
    });
    slot.handle(Event::Probed { generation: 2 });
    assert_eq!(slot.refused(), None);
}

#[test]
fn a_key_reset_disconnects_only_a_publisher_with_the_old_key() {
    let mut slot = live();
    assert_eq!(slot.handle(Event::KeySeen { key: "k" }), vec![]);
    assert_eq!(
        slot.handle(Event::KeySeen { key: "new" }),
        vec![Action::Disconnect { generation: 1 }]
    );
    let mut slot = grace();
    assert_eq!(slot.handle(Event::KeySeen { key: "new" }), vec![]);
}

#[test]
fn deleting_ends_the_session_in_every_phase() {
    // Idle: nothing to end.
    let mut slot = Slot::new(T);
    assert_eq!(slot.handle(Event::Delete { now: 0 }), vec![Action::Forget]);
    assert!(matches!(
        slot.handle(Event::Connect { key: "k", now: 1 })[..],
        [Action::Refuse(ref r)] if r.contains("deleted")
    ));

    // Live: disconnect, finish once the encoder drained.
    let mut slot = live();
    assert_eq!(
        slot.handle(Event::Delete { now: 100 }),
        vec![Action::Disconnect { generation: 1 }, Action::WakeAt(15_100)]
    );
    assert_eq!(
        slot.handle(Event::Gone {
            generation: 1,
            now: 300
        }),
        vec![Action::Finish { session: sid(1) }]
    );
    assert_eq!(
        slot.handle(Event::Finished { session: sid(1) }),
        vec![Action::Forget]
    );

    // Live, and the encoder never drains: finished at the drain deadline.
    let mut slot = live();
    slot.handle(Event::Delete { now: 100 });
    assert_eq!(slot.handle(Event::Tick { now: 15_099 }), vec![]);
    assert_eq!(
        slot.handle(Event::Tick { now: 15_100 }),
        vec![Action::Finish { session: sid(1) }]
    );
    // Its late end changes nothing.
    assert_eq!(
        slot.handle(Event::Gone {
            generation: 1,
            now: 16_000
        }),
        vec![]
    );

    // In grace: finished at once.
    let mut slot = grace();
    assert_eq!(
        slot.handle(Event::Delete { now: 2000 }),
        vec![Action::Finish { session: sid(1) }]
    );
    assert_eq!(slot.handle(Event::Delete { now: 2001 }), vec![]);

    // While probing: the publisher goes, nothing was opened.
    let mut slot = Slot::new(T);
    slot.handle(Event::Connect { key: "k", now: 0 });
    slot.handle(Event::Delete { now: 1 });
    assert_eq!(
        slot.handle(Event::Gone {
            generation: 1,
            now: 2
        }),
        vec![Action::Forget]
    );
}

#[test]
fn a_session_opened_for_a_publisher_that_left_is_finished() {
    let mut slot = Slot::new(T);
    slot.handle(Event::Connect { key: "k", now: 0 });
    slot.handle(Event::Probed { generation: 1 });
    slot.handle(Event::Gone {
        generation: 1,
        now: 5,
    });
    assert_eq!(
        slot.handle(Event::Opened {
            generation: 1,
            session: sid(9)
        }),
        vec![Action::Finish { session: sid(9) }]
    );
}

#[test]
fn a_publisher_during_ending_gets_a_new_session() {
    let mut slot = grace();
    slot.handle(Event::Tick { now: 11_000 });
    assert_eq!(
        slot.handle(Event::Connect {
            key: "k",
            now: 11_001
        }),
        vec![Action::Probe {
            generation: 2,
            resume: None
        }]
    );
    // The old session's end does not disturb the new publisher.
    assert_eq!(slot.handle(Event::Finished { session: sid(1) }), vec![]);
    assert!(slot.has_publisher());
}

#[test]
fn an_adopted_session_waits_for_its_relay_and_resumes() {
    let mut slot = Slot::new(T);
    assert_eq!(
        slot.handle(Event::Adopt {
            session: sid(7),
            now: 500
        }),
        vec![Action::WakeAt(10_500)]
    );
    assert_eq!(slot.session(), Some(sid(7)));
    assert_eq!(
        slot.handle(Event::Connect { key: "k", now: 600 }),
        vec![Action::Probe {
            generation: 1,
            resume: Some(sid(7))
        }]
    );
    assert_eq!(
        slot.handle(Event::Probed { generation: 1 }),
        vec![Action::Encode {
            generation: 1,
            session: sid(7)
        }]
    );
}

#[test]
fn an_adopted_session_whose_relay_never_comes_is_finished_after_grace() {
    let mut slot = Slot::new(T);
    slot.handle(Event::Adopt {
        session: sid(7),
        now: 0,
    });
    assert_eq!(slot.handle(Event::Tick { now: 9_999 }), vec![]);
    assert_eq!(
        slot.handle(Event::Tick { now: 10_000 }),
        vec![Action::Finish { session: sid(7) }]
    );
}

#[test]
fn adopting_is_refused_unless_idle() {
    for mut slot in [live(), grace()] {
        let before = slot.clone();
        assert_eq!(
            slot.handle(Event::Adopt {
                session: sid(9),
                now: 2000
            }),
            vec![]
        );
        assert_eq!(slot, before);
    }
    let mut deleted = Slot::new(T);
    deleted.handle(Event::Delete { now: 0 });
    assert_eq!(
        deleted.handle(Event::Adopt {
            session: sid(9),
            now: 1
        }),
        vec![]
    );
}

#[test]
fn a_lost_lease_disconnects_and_abandons_without_finishing() {
    let mut slot = live();
    assert_eq!(
        slot.handle(Event::Lost),
        vec![
            Action::Disconnect { generation: 1 },
            Action::Abandon { session: sid(1) }
        ]
    );
    assert_eq!(slot.phase(), &Phase::Idle);
    // The disconnected publisher's end arrives afterwards and changes nothing.
    assert_eq!(
        slot.handle(Event::Gone {
            generation: 1,
            now: 2000
        }),
        vec![]
    );
    let mut waiting = grace();
    assert_eq!(
        waiting.handle(Event::Lost),
        vec![Action::Abandon { session: sid(1) }]
    );
    assert_eq!(waiting.handle(Event::Tick { now: 50_000 }), vec![]);
    // A publisher still being probed has no session to abandon.
    let mut probing = Slot::new(T);
    probing.handle(Event::Connect { key: "k", now: 0 });
    assert_eq!(
        probing.handle(Event::Lost),
        vec![Action::Disconnect { generation: 1 }]
    );
}

/// Any event in any order: no panic, and the driver is never told to do two contradictory
/// things.
#[derive(Debug, Clone)]
enum E {
    Connect(bool),
    Probed(u64),
    Opened(u64),
    Refused(u64),
    Gone(u64),
    Tick,
    KeySeen(bool),
    Delete,
    Finished(u8),
    Adopt,
    Lost,
}

fn event() -> impl Strategy<Value = (E, u16)> {
    let e = prop_oneof![
        any::<bool>().prop_map(E::Connect),
        (0u64..4).prop_map(E::Probed),
        (0u64..4).prop_map(E::Opened),
        (0u64..4).prop_map(E::Refused),
        (0u64..4).prop_map(E::Gone),
        Just(E::Tick),
        any::<bool>().prop_map(E::KeySeen),
        Just(E::Delete),
        (0u8..8).prop_map(E::Finished),
        Just(E::Adopt),
        Just(E::Lost),
    ];
    (e, 0u16..8000)
}

proptest! {
    #[test]
    fn any_sequence_keeps_the_invariants(events in proptest::collection::vec(event(), 0..60)) {
        let mut slot = Slot::new(Timing { grace_ms: 3000, drain_ms: 5000 });
        let mut now: Millis = 0;
        let mut encoding: HashMap<u64, SessionId> = HashMap::new();
        let mut finished: HashSet<SessionId> = HashSet::new();
        let mut abandoned: HashSet<SessionId> = HashSet::new();
        let mut forgotten = false;
        // Sessions are unique, as the database makes them.
        let mut issued: Vec<SessionId> = Vec::new();
        for (e, dt) in events {
            now += Millis::from(dt);
            let ev = match &e {
                E::Connect(new_key) => Event::Connect { key: if *new_key { "b" } else { "a" }, now },
                E::Probed(g) => Event::Probed { generation: *g },
                E::Opened(g) => {
                    issued.push(sid(issued.len() as u128 + 1));
                    Event::Opened { generation: *g, session: *issued.last().unwrap() }
                }
                E::Refused(g) => Event::Refused { generation: *g, reason: "r".into(), now },
                E::Gone(g) => Event::Gone { generation: *g, now },
                E::Tick => Event::Tick { now },
                E::KeySeen(b) => Event::KeySeen { key: if *b { "b" } else { "a" } },
                E::Delete => Event::Delete { now },
                E::Finished(i) => match issued.get(usize::from(*i)) {
                    Some(s) => Event::Finished { session: *s },
                    None => Event::Tick { now },
                },
                E::Adopt => {
                    issued.push(sid(issued.len() as u128 + 1));
                    Event::Adopt { session: *issued.last().unwrap(), now }
                }
                E::Lost => Event::Lost,
            };
            let actions = slot.handle(ev);
            for a in &actions {
                match a {
                    Action::Encode { generation, session } => {
                        // One session per generation, and never one already finished.
                        prop_assert!(!finished.contains(session), "{a:?} after its Finish");
                        prop_assert!(!abandoned.contains(session), "{a:?} after it was abandoned");
                        let prev = encoding.insert(*generation, *session);
                        prop_assert!(prev.is_none_or(|p| p == *session));
                    }
                    Action::Finish { session } => {
                        prop_assert!(finished.insert(*session), "{session:?} finished twice");
                        prop_assert!(!abandoned.contains(session), "{session:?} finished after it was abandoned");
                    }
                    Action::Abandon { session } => {
                        prop_assert!(!finished.contains(session), "{session:?} abandoned after its Finish");
                        prop_assert!(abandoned.insert(*session), "{session:?} abandoned twice");
                        prop_assert_eq!(slot.phase(), &Phase::Idle);
                    }
                    Action::Forget => {
                        prop_assert!(slot.deleted());
                        prop_assert_eq!(slot.phase(), &Phase::Idle);
                        forgotten = true;
                    }
                    Action::Probe { .. } => prop_assert!(!slot.deleted()),
                    Action::WakeAt(at) => prop_assert!(*at >= now),
                    Action::Refuse(_) | Action::Open { .. } | Action::Disconnect { .. } => {}
                }
            }
            prop_assert_eq!(slot.has_publisher(), matches!(slot.phase(), Phase::Connected { .. }));
            if forgotten {
                prop_assert!(!slot.has_publisher());
            }
        }
    }
}
