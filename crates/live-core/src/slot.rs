//! A stream's publisher place, as a state machine: events in ([`Event`]), actions out
//! ([`Action`]), time passed in with each event.
//!
//! One publisher at a time may stream to a stream. Each connection gets a new *generation*, so
//! that anything a previous connection left behind (its end arriving late, its timer) is
//! recognised as stale and ignored. A publisher that goes away leaves its session waiting for
//! `grace_ms`; one that connects before the grace period is over (by the clock of its own
//! event, whether or not the timer has fired yet) continues the session, one that connects
//! after it starts a new session while the old one is finished. A deleted stream refuses
//! publishers, disconnects the current one, and ends its session once the encoder has drained
//! (or after `drain_ms`).

use oxcast_base::clock::Millis;
use oxcast_base::SessionId;

/// Configuration of every slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a session waits for its publisher to come back.
    pub grace_ms: Millis,
    /// How long a deleted stream's session waits for its encoder to drain.
    pub drain_ms: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No publisher and no session.
    Idle,
    /// A publisher is connected. `session` is `None` while its media is probed (a new
    /// session is opened only for media that can go live).
    Connected {
        generation: u64,
        session: Option<SessionId>,
    },
    /// The publisher went away; the session waits for it until `until`.
    Grace { session: SessionId, until: Millis },
    /// The session is being finished (its recording published).
    Ending { session: SessionId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A publisher connected with `key` (already checked against the stream).
    Connect { key: &'a str, now: Millis },
    /// The publisher's media was probed and can go live.
    Probed { generation: u64 },
    /// Its session was opened.
    Opened { generation: u64, session: SessionId },
    /// The publisher cannot go live: its media was refused, or no session could be opened.
    Refused {
        generation: u64,
        reason: String,
        now: Millis,
    },
    /// The publisher's connection (and its encoder) ended.
    Gone { generation: u64, now: Millis },
    /// A timer asked for with [`Action::WakeAt`] fired (or any later moment).
    Tick { now: Millis },
    /// The stream's key as the database has it now.
    KeySeen { key: &'a str },
    /// The stream is being deleted.
    Delete { now: Millis },
    /// A session asked for with [`Action::Finish`] is finished.
    Finished { session: SessionId },
    /// This node takes over `session`, which another encoder was running when it was lost:
    /// the session waits for its publisher (the relay, which connects next) as in a grace
    /// period. Refused (no actions, nothing changes) unless the slot is idle.
    Adopt { session: SessionId, now: Millis },
    /// This node lost the stream's lease to another node, which continues the session: the
    /// publisher is disconnected and the session is dropped here without being finished.
    Lost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Refuse the connecting publisher, with the reason it is told.
    Refuse(String),
    /// Probe the new publisher's media; `resume` is the session it continues.
    Probe {
        generation: u64,
        resume: Option<SessionId>,
    },
    /// Open a new session for the publisher.
    Open { generation: u64 },
    /// Encode the publisher's media into `session`.
    Encode { generation: u64, session: SessionId },
    /// Disconnect the publisher.
    Disconnect { generation: u64 },
    /// Deliver a [`Event::Tick`] at (or after) this time.
    WakeAt(Millis),
    /// End the session and publish its recording, then deliver [`Event::Finished`].
    Finish { session: SessionId },
    /// The stream is gone and its slot can be dropped.
    Forget,
    /// Drop the session without finishing it: another node continues it.
    Abandon { session: SessionId },
}

/// A refused publisher, kept for the stream's status until one goes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub at_ms: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    timing: Timing,
    phase: Phase,
    generation: u64,
    /// The key the current publisher connected with.
    key: String,
    /// Deleted: `Some(drain deadline)`.
    deleted: Option<Millis>,
    refused: Option<Refusal>,
}

impl Slot {
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            phase: Phase::Idle,
            generation: 0,
            key: String::new(),
            deleted: None,
            refused: None,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether a publisher is connected now.
    pub fn has_publisher(&self) -> bool {
        matches!(self.phase, Phase::Connected { .. })
    }

    /// The session that is live or waiting for its publisher.
    pub fn session(&self) -> Option<SessionId> {
        match self.phase {
            Phase::Connected { session, .. } => session,
            Phase::Grace { session, .. } => Some(session),
            Phase::Idle | Phase::Ending { .. } => None,
        }
    }

    pub fn deleted(&self) -> bool {
        self.deleted.is_some()
    }

    pub fn refused(&self) -> Option<&Refusal> {
        self.refused.as_ref()
    }

    /// Applies `event`; returns what the driver must do, in order.
    pub fn handle(&mut self, event: Event<'_>) -> Vec<Action> {
        match event {
            Event::Connect { key, now } => self.connect(key, now),
            Event::Probed { generation } => match self.phase {
                Phase::Connected {
                    generation: g,
                    session,
                } if g == generation => {
                    self.refused = None;
                    match session {
                        Some(session) => vec![Action::Encode {
                            generation,
                            session,
                        }],
                        None => vec![Action::Open { generation }],
                    }
                }
                _ => vec![],
            },
            Event::Opened {
                generation,
                session,
            } => match &mut self.phase {
                Phase::Connected {
                    generation: g,
                    session: s @ None,
                } if *g == generation => {
                    *s = Some(session);
                    vec![Action::Encode {
                        generation,
                        session,
                    }]
                }
                // Opened for a publisher that is gone: nothing will be encoded into it.
                _ => vec![Action::Finish { session }],
            },
            Event::Refused {
                generation,
                reason,
                now,
            } => match self.phase {
                Phase::Connected {
                    generation: g,
                    session: None,
                } if g == generation => {
                    self.refused = Some(Refusal { reason, at_ms: now });
                    self.phase = Phase::Idle;
                    self.idle_actions()
                }
                // A live publisher whose media cannot be used (a resumed session's new media,
                // or a publisher over the bitrate limit): as if it left, with the reason kept.
                Phase::Connected {
                    generation: g,
                    session: Some(_),
                } if g == generation => {
                    self.refused = Some(Refusal { reason, at_ms: now });
                    self.gone(now)
                }
                _ => vec![],
            },
            Event::Gone { generation, now } => match self.phase {
                Phase::Connected { generation: g, .. } if g == generation => self.gone(now),
                _ => vec![],
            },
            Event::Tick { now } => self.tick(now),
            Event::KeySeen { key } => match self.phase {
                Phase::Connected { generation, .. } if key != self.key => {
                    vec![Action::Disconnect { generation }]
                }
                _ => vec![],
            },
            Event::Delete { now } => self.delete(now),
            Event::Adopt { session, now } => match self.phase {
                Phase::Idle if self.deleted.is_none() => {
                    let until = now + self.timing.grace_ms.max(0);
                    self.phase = Phase::Grace { session, until };
                    vec![Action::WakeAt(until)]
                }
                _ => vec![],
            },
            Event::Lost => self.lost(),
            Event::Finished { session } => match self.phase {
                Phase::Ending { session: s } if s == session => {
                    self.phase = Phase::Idle;
                    self.idle_actions()
                }
                _ => vec![],
            },
        }
    }

    fn connect(&mut self, key: &str, now: Millis) -> Vec<Action> {
        if self.deleted.is_some() {
            return vec![Action::Refuse("this stream was deleted".into())];
        }
        let mut actions = Vec::new();
        let resume = match self.phase {
            Phase::Connected { .. } => {
                return vec![Action::Refuse(
                    "this stream already has a live publisher".into(),
                )]
            }
            Phase::Grace { session, until } if now < until => Some(session),
            // The grace period is over though its timer has not fired yet.
            Phase::Grace { session, .. } => {
                actions.push(Action::Finish { session });
                None
            }
            // The previous session finishes on its own; this publisher gets a new one.
            Phase::Idle | Phase::Ending { .. } => None,
        };
        self.generation += 1;
        self.key = key.to_string();
        self.phase = Phase::Connected {
            generation: self.generation,
            session: resume,
        };
        actions.push(Action::Probe {
            generation: self.generation,
            resume,
        });
        actions
    }

    fn gone(&mut self, now: Millis) -> Vec<Action> {
        let Phase::Connected { session, .. } = self.phase else {
            return vec![];
        };
        match session {
            None => {
                self.phase = Phase::Idle;
                self.idle_actions()
            }
            Some(session) if self.deleted.is_some() => {
                self.phase = Phase::Ending { session };
                vec![Action::Finish { session }]
            }
            Some(session) => {
                let until = now + self.timing.grace_ms.max(0);
                self.phase = Phase::Grace { session, until };
                vec![Action::WakeAt(until)]
            }
        }
    }

    fn tick(&mut self, now: Millis) -> Vec<Action> {
        match self.phase {
            Phase::Grace { session, until } if now >= until => {
                self.phase = Phase::Ending { session };
                vec![Action::Finish { session }]
            }
            // A deleted stream whose encoder did not drain in time.
            Phase::Connected {
                session: Some(session),
                ..
            } if self.deleted.is_some_and(|d| now >= d) => {
                self.phase = Phase::Ending { session };
                vec![Action::Finish { session }]
            }
            _ => vec![],
        }
    }

    fn lost(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Phase::Connected { generation, .. } = self.phase {
            actions.push(Action::Disconnect { generation });
        }
        match self.phase {
            Phase::Connected {
                session: Some(session),
                ..
            }
            | Phase::Grace { session, .. } => actions.push(Action::Abandon { session }),
            // A session being finished here stays finished here.
            Phase::Ending { .. } => return vec![],
            _ => {}
        }
        self.phase = Phase::Idle;
        actions.extend(self.idle_actions());
        actions
    }

    fn delete(&mut self, now: Millis) -> Vec<Action> {
        if self.deleted.is_some() {
            return vec![];
        }
        let drain = now + self.timing.drain_ms.max(0);
        self.deleted = Some(drain);
        match self.phase {
            Phase::Idle => vec![Action::Forget],
            Phase::Connected { generation, .. } => {
                vec![Action::Disconnect { generation }, Action::WakeAt(drain)]
            }
            Phase::Grace { session, .. } => {
                self.phase = Phase::Ending { session };
                vec![Action::Finish { session }]
            }
            Phase::Ending { .. } => vec![],
        }
    }

    fn idle_actions(&self) -> Vec<Action> {
        if self.deleted.is_some() {
            vec![Action::Forget]
        } else {
            vec![]
        }
    }
}

#[cfg(test)]
#[path = "slot_tests.rs"]
mod tests;
