//! Flux rank state, built from the `resource.journal` and `overlay.monitor` streams.
//!
//! The journal (rank 0) gives online/offline/torpid and drains; only the overlay monitor
//! tells a crash (`lost`) from a clean exit (`offline`), so the two are merged here
//! (docs/flux-core.md §2).

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use super::action::DRAIN_REASON_PREFIX;
use super::changed::ChangedRanks;
use super::derived::Derived;
use super::hostlist;
use super::idset::IdSet;
use super::queue::Occupancy;

/// A stream payload that does not have the expected shape: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload field {field}: {why}")]
    Field { field: String, why: String },
}

/// An event that parses but cannot be applied to the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("{event} event names rank {rank}, beyond the instance size {size}")]
    RankOutOfRange { event: String, rank: u32, size: u32 },
    #[error("restart event lists {ranks} ranks but {hosts} host names")]
    NodelistMismatch { ranks: usize, hosts: usize },
    #[error("restart event: online ranks {online} are not all among ranks 0-{last}")]
    OnlineOutsideRanks { online: IdSet, last: u32 },
}

/// One `resource.journal` event (RFC 44 names).
#[derive(Debug, Clone, PartialEq)]
pub enum JournalEvent {
    /// First event of every backlog: all configured ranks and those online at the time.
    Restart {
        ranks: IdSet,
        online: IdSet,
        /// How many hosts its nodelist names (0: none given). fluxk8s keeps no host
        /// names: it checks that the list fits the ranks.
        hosts: usize,
    },
    ResourceDefine {
        method: Option<String>,
    },
    Online(IdSet),
    Offline(IdSet),
    Torpid(IdSet),
    Lively(IdSet),
    Drain {
        ranks: IdSet,
        reason: Option<String>,
        /// 0 = plain, 1 = overwrite the reason, 2 = overwrite reason and timestamp.
        overwrite: u8,
    },
    Undrain {
        ranks: IdSet,
        reason: Option<String>,
    },
    ResourceUpdate,
    Truncate,
    /// An event this version does not know; kept so callers can log it, otherwise ignored.
    Other {
        name: String,
    },
}

impl JournalEvent {
    fn name(&self) -> &str {
        match self {
            Self::Restart { .. } => "restart",
            Self::ResourceDefine { .. } => "resource-define",
            Self::Online(_) => "online",
            Self::Offline(_) => "offline",
            Self::Torpid(_) => "torpid",
            Self::Lively(_) => "lively",
            Self::Drain { .. } => "drain",
            Self::Undrain { .. } => "undrain",
            Self::ResourceUpdate => "resource-update",
            Self::Truncate => "truncate",
            Self::Other { name } => name,
        }
    }

    /// The ranks the event is about, if it is about ranks.
    pub fn ranks(&self) -> Option<&IdSet> {
        match self {
            Self::Online(ids) | Self::Offline(ids) | Self::Torpid(ids) | Self::Lively(ids) => {
                Some(ids)
            }
            Self::Drain { ranks, .. } | Self::Undrain { ranks, .. } => Some(ranks),
            _ => None,
        }
    }
}

/// One event with its timestamp (seconds since the epoch, as Flux writes it).
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub timestamp: f64,
    pub event: JournalEvent,
}

/// One `resource.journal` response: `{"events":[...], "R":{...}?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalResponse {
    pub entries: Vec<JournalEntry>,
    /// The resource set, sent with `resource-define`.
    pub resources: Option<Value>,
}

impl JournalResponse {
    /// Parses a response payload.
    pub fn parse(payload: &str) -> Result<Self, PayloadError> {
        let value: Value =
            serde_json::from_str(payload).map_err(|e| PayloadError::NotJson(e.to_string()))?;
        let top = Fields::root(&value)?;
        let events = top.array("events")?;
        let entries = events
            .iter()
            .enumerate()
            .map(|(i, event)| parse_entry(&format!("events[{i}]"), event))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            entries,
            resources: top.map.get("R").cloned(),
        })
    }

    /// The empty response that ends the backlog.
    pub fn is_backlog_end(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_entry(path: &str, value: &Value) -> Result<JournalEntry, PayloadError> {
    let fields = Fields::object(path, value)?;
    let timestamp = fields.number("timestamp")?;
    let name = fields.string("name")?;
    let empty = Value::Object(Map::new());
    let context = Fields::object(
        &format!("{path}.context"),
        fields.map.get("context").unwrap_or(&empty),
    )?;
    let event = match name {
        "restart" => JournalEvent::Restart {
            ranks: context.idset("ranks")?,
            online: context.idset("online")?,
            hosts: context.host_count("nodelist")?,
        },
        "resource-define" => JournalEvent::ResourceDefine {
            method: context.optional_string("method")?.map(str::to_owned),
        },
        "online" => JournalEvent::Online(context.idset("idset")?),
        "offline" => JournalEvent::Offline(context.idset("idset")?),
        "torpid" => JournalEvent::Torpid(context.idset("idset")?),
        "lively" => JournalEvent::Lively(context.idset("idset")?),
        "drain" => {
            let ranks = context.idset("idset")?;
            // Checked like any field, and not kept: the idset names the same ranks.
            if context.map.contains_key("nodelist") {
                context.host_count("nodelist")?;
            }
            JournalEvent::Drain {
                ranks,
                reason: context.optional_string("reason")?.map(str::to_owned),
                overwrite: context.overwrite()?,
            }
        }
        "undrain" => JournalEvent::Undrain {
            ranks: context.idset("idset")?,
            reason: context.optional_string("reason")?.map(str::to_owned),
        },
        "resource-update" => JournalEvent::ResourceUpdate,
        "truncate" => JournalEvent::Truncate,
        other => JournalEvent::Other {
            name: other.to_owned(),
        },
    };
    Ok(JournalEntry { timestamp, event })
}

/// Typed access to one JSON object, naming the full path of any bad field.
struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn root(value: &'a Value) -> Result<Self, PayloadError> {
        Self::object("payload", value)
    }

    fn object(path: &str, value: &'a Value) -> Result<Self, PayloadError> {
        match value {
            Value::Object(map) => Ok(Self {
                path: path.to_owned(),
                map,
            }),
            _ => Err(PayloadError::Field {
                field: path.to_owned(),
                why: "not an object".into(),
            }),
        }
    }

    fn fail(&self, key: &str, why: impl Into<String>) -> PayloadError {
        PayloadError::Field {
            field: format!("{}.{key}", self.path),
            why: why.into(),
        }
    }

    fn required(&self, key: &str) -> Result<&'a Value, PayloadError> {
        self.map.get(key).ok_or_else(|| self.fail(key, "missing"))
    }

    fn array(&self, key: &str) -> Result<&'a Vec<Value>, PayloadError> {
        self.required(key)?
            .as_array()
            .ok_or_else(|| self.fail(key, "not an array"))
    }

    fn number(&self, key: &str) -> Result<f64, PayloadError> {
        self.required(key)?
            .as_f64()
            .ok_or_else(|| self.fail(key, "not a number"))
    }

    fn string(&self, key: &str) -> Result<&'a str, PayloadError> {
        self.required(key)?
            .as_str()
            .ok_or_else(|| self.fail(key, "not a string"))
    }

    fn optional_string(&self, key: &str) -> Result<Option<&'a str>, PayloadError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_str()
                .map(Some)
                .ok_or_else(|| self.fail(key, "not a string")),
        }
    }

    fn bool(&self, key: &str) -> Result<bool, PayloadError> {
        self.required(key)?
            .as_bool()
            .ok_or_else(|| self.fail(key, "not a boolean"))
    }

    fn rank(&self, key: &str) -> Result<u32, PayloadError> {
        self.required(key)?
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.fail(key, "not a rank number"))
    }

    fn idset(&self, key: &str) -> Result<IdSet, PayloadError> {
        self.string(key)?
            .parse()
            .map_err(|e: super::idset::IdSetError| self.fail(key, e.to_string()))
    }

    fn host_count(&self, key: &str) -> Result<usize, PayloadError> {
        hostlist::count(self.string(key)?).map_err(|e| self.fail(key, e.to_string()))
    }

    fn overwrite(&self) -> Result<u8, PayloadError> {
        match self.map.get("overwrite") {
            None => Ok(0),
            Some(value) => value
                .as_u64()
                .filter(|&n| n <= 2)
                .map(|n| n as u8)
                .ok_or_else(|| self.fail("overwrite", "not 0, 1 or 2")),
        }
    }
}

/// A child's status as the overlay monitor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChildStatus {
    Full,
    Partial,
    Degraded,
    /// Connection lost without a goodbye: crash, kill, or an administrative disconnect.
    Lost,
    /// Clean shutdown.
    Offline,
}

/// One `overlay.monitor` response: `{"rank":2,"status":"lost","torpid":false}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayStatus {
    pub rank: u32,
    pub status: ChildStatus,
    pub torpid: bool,
}

impl OverlayStatus {
    /// Parses a response payload.
    pub fn parse(payload: &str) -> Result<Self, PayloadError> {
        let value: Value =
            serde_json::from_str(payload).map_err(|e| PayloadError::NotJson(e.to_string()))?;
        let top = Fields::root(&value)?;
        let status = match top.string("status")? {
            "full" => ChildStatus::Full,
            "partial" => ChildStatus::Partial,
            "degraded" => ChildStatus::Degraded,
            "lost" => ChildStatus::Lost,
            "offline" => ChildStatus::Offline,
            other => return Err(top.fail("status", format!("unknown status {other:?}"))),
        };
        Ok(Self {
            rank: top.rank("rank")?,
            status,
            torpid: top.bool("torpid")?,
        })
    }
}

/// A drain as Flux holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drain {
    /// Shared by every rank one event drained: a drain of 10,000 ranks keeps one string,
    /// and a pass over the ranks reads that one instead of one per rank.
    pub reason: Arc<str>,
    pub timestamp: f64,
    /// Set by fluxk8s (the reason starts with [`DRAIN_REASON_PREFIX`]).
    pub ours: bool,
}

impl Drain {
    fn new(reason: &Arc<str>, timestamp: f64) -> Self {
        Self {
            ours: reason.starts_with(DRAIN_REASON_PREFIX),
            reason: Arc::clone(reason),
            timestamp,
        }
    }
}

/// What is known of one broker rank.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RankState {
    pub online: bool,
    /// The overlay saw the connection drop without a goodbye; cleared when it is back.
    pub lost: bool,
    pub torpid: bool,
    pub drain: Option<Drain>,
    /// Seen online at least once since this view was created.
    pub ever_online: bool,
}

/// Which ranks are in which state (a rank is in several).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RankSets {
    /// The broker is up.
    pub online: IdSet,
    /// The broker is not up (never-started ranks included).
    pub offline: IdSet,
    /// The connection dropped without a goodbye, and the rank is not back.
    pub lost: IdSet,
    /// Stopped answering but still connected.
    pub torpid: IdSet,
    /// Drained, whoever drained them.
    pub drained: IdSet,
    /// Drained with a fluxk8s reason.
    pub drained_by_fluxk8s: IdSet,
    /// Never seen online since the view was created.
    pub never_started: IdSet,
}

/// Which ranks a change of [`FluxView::ranks_mut`] touches.
enum Changing<'a> {
    Ranks(&'a IdSet),
    Rank(u32),
    All,
}

/// The Flux side: every configured rank, 0..size.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FluxView {
    /// Changed only through [`FluxView::ranks_mut`], which drops `sets` and `real_size`
    /// and logs the change in `changed`.
    ranks: Vec<RankState>,
    /// The ranks in each state: statuses read them far more often than ranks change.
    sets: Derived<RankSets>,
    /// Counted once per change: every status and every watcher's update reads it.
    real_size: Derived<u32>,
    /// The ranks changed since the planner last took them.
    changed: ChangedRanks,
    synced: bool,
    occupancy: Occupancy,
    /// Set by [`FluxView::restart_journal`] until the backlog's `restart` event arrives.
    awaiting_restart: bool,
    /// Backlog entries before `restart`: the resource module replays its KVS eventlog
    /// (drain history) ahead of `restart`, which they must outlive.
    before_restart: Vec<JournalEntry>,
}

impl FluxView {
    /// An empty view; it learns the size from the journal's `restart` event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Configured ranks (the broker `size`, i.e. the maximum size), not running ones.
    pub fn size(&self) -> u32 {
        // `ranks` is built from an idset of u32 ranks, so its length fits.
        self.ranks.len() as u32
    }

    /// State of rank `k`, if it exists.
    pub fn rank(&self, k: u32) -> Option<&RankState> {
        self.ranks.get(k as usize)
    }

    /// The journal backlog has been replayed to its end since the last (re)subscription.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Ranks known to run jobs.
    pub fn busy(&self) -> &IdSet {
        self.occupancy.busy()
    }

    /// Which ranks run jobs and until when, as far as known.
    pub fn occupancy(&self) -> &Occupancy {
        &self.occupancy
    }

    /// Records which ranks run jobs, with no job or end known.
    pub fn set_busy(&mut self, busy: IdSet) {
        self.occupancy = Occupancy::of_ranks(busy);
    }

    /// Records what the job-manager says of its allocations.
    pub fn set_occupancy(&mut self, occupancy: Occupancy) {
        self.occupancy = occupancy;
    }

    /// A new journal subscription is starting: its backlog replays everything, so state
    /// from the journal is rebuilt by its `restart` event and the view is unsynced until
    /// the backlog ends.
    pub fn restart_journal(&mut self) {
        self.synced = false;
        self.awaiting_restart = true;
        self.before_restart.clear();
    }

    /// Applies one `resource.journal` response.
    pub fn apply_journal(&mut self, response: &JournalResponse) -> Result<(), ApplyError> {
        for entry in &response.entries {
            if !self.awaiting_restart {
                self.apply_entry(entry)?;
            } else if matches!(entry.event, JournalEvent::Restart { .. }) {
                self.apply_entry(entry)?;
                self.awaiting_restart = false;
                // `restart` carries the online set of its time: only drains are history.
                let held = std::mem::take(&mut self.before_restart);
                held.iter()
                    .filter(|e| {
                        matches!(
                            e.event,
                            JournalEvent::Drain { .. } | JournalEvent::Undrain { .. }
                        )
                    })
                    .try_for_each(|e| self.apply_entry(e))?;
            } else {
                self.before_restart.push(entry.clone());
            }
        }
        if response.is_backlog_end() {
            self.synced = true;
            if self.awaiting_restart {
                // A backlog without `restart` (truncated): apply what it held as it came.
                self.awaiting_restart = false;
                let held = std::mem::take(&mut self.before_restart);
                held.iter().try_for_each(|e| self.apply_entry(e))?;
            }
        }
        Ok(())
    }

    /// Applies one journal event.
    pub fn apply_entry(&mut self, entry: &JournalEntry) -> Result<(), ApplyError> {
        let event = &entry.event;
        if let Some(ranks) = event.ranks() {
            self.check_range(event.name(), ranks.last())?;
        }
        let synced = self.synced;
        match event {
            JournalEvent::Restart {
                ranks,
                online,
                hosts,
            } => self.restart(ranks, online, *hosts)?,
            JournalEvent::Online(ids) => self.update(ids, |r| {
                r.online = true;
                r.ever_online = true;
                // A replayed `online` is history; only a live one says the rank is back.
                if synced {
                    r.lost = false;
                }
            }),
            JournalEvent::Offline(ids) => self.update(ids, |r| {
                r.online = false;
                r.torpid = false;
            }),
            JournalEvent::Torpid(ids) => self.update(ids, |r| r.torpid = true),
            JournalEvent::Lively(ids) => self.update(ids, |r| r.torpid = false),
            JournalEvent::Drain {
                ranks,
                reason,
                overwrite,
                ..
            } => {
                let reason: Arc<str> = reason.as_deref().unwrap_or_default().into();
                self.update(ranks, |r| match (&mut r.drain, overwrite) {
                    (None, _) => r.drain = Some(Drain::new(&reason, entry.timestamp)),
                    (Some(_), 0) => {}
                    (Some(old), 1) => *old = Drain::new(&reason, old.timestamp),
                    (Some(old), _) => *old = Drain::new(&reason, entry.timestamp),
                })
            }
            JournalEvent::Undrain { ranks, .. } => self.update(ranks, |r| r.drain = None),
            JournalEvent::ResourceDefine { .. }
            | JournalEvent::ResourceUpdate
            | JournalEvent::Truncate
            | JournalEvent::Other { .. } => {}
        }
        Ok(())
    }

    /// Applies one `overlay.monitor` response.
    pub fn apply_overlay(&mut self, status: &OverlayStatus) -> Result<(), ApplyError> {
        self.check_range("overlay", Some(status.rank))?;
        let rank = &mut self.ranks_mut(Changing::Rank(status.rank))[status.rank as usize];
        rank.lost = status.status == ChildStatus::Lost;
        rank.torpid = status.torpid;
        Ok(())
    }

    fn check_range(&self, event: &str, highest: Option<u32>) -> Result<(), ApplyError> {
        match highest {
            Some(rank) if rank >= self.size() => Err(ApplyError::RankOutOfRange {
                event: event.to_owned(),
                rank,
                size: self.size(),
            }),
            _ => Ok(()),
        }
    }

    fn update(&mut self, ids: &IdSet, change: impl Fn(&mut RankState)) {
        let ranks = self.ranks_mut(Changing::Ranks(ids));
        for k in ids.iter() {
            change(&mut ranks[k as usize]);
        }
    }

    /// The ranks, to change those `changing` names: the sets made from them are made
    /// again when next asked, and the change is logged for the planner.
    fn ranks_mut(&mut self, changing: Changing<'_>) -> &mut Vec<RankState> {
        self.sets.reset();
        self.real_size.reset();
        match changing {
            Changing::Ranks(ranks) => self.changed.add(ranks),
            Changing::Rank(k) => self.changed.add_rank(k),
            Changing::All => self.changed.add_all(),
        }
        &mut self.ranks
    }

    /// The ranks changed since [`Self::take_changed`] was last called.
    pub fn changed(&self) -> &ChangedRanks {
        &self.changed
    }

    /// The ranks changed since this was last called (`None` in it: every rank may have).
    pub fn take_changed(&mut self) -> ChangedRanks {
        self.changed.take()
    }

    /// Rebuilds journal-derived state. Overlay-derived `lost` and the `ever_online`
    /// history survive, since a resubscription does not replay them.
    fn restart(&mut self, ranks: &IdSet, online: &IdSet, hosts: usize) -> Result<(), ApplyError> {
        let size = ranks.last().map_or(0, |last| last as usize + 1);
        if hosts != 0 && hosts != size {
            return Err(ApplyError::NodelistMismatch { ranks: size, hosts });
        }
        if let Some(last) = online.last()
            && last as usize >= size
        {
            return Err(ApplyError::OnlineOutsideRanks {
                online: online.clone(),
                last: ranks.last().unwrap_or(0),
            });
        }
        let previous = std::mem::take(self.ranks_mut(Changing::All));
        self.ranks = (0..size)
            .map(|k| {
                let before = previous.get(k).cloned().unwrap_or_default();
                let up = online.contains(k as u32);
                RankState {
                    online: up,
                    lost: before.lost && !up,
                    torpid: false,
                    drain: None,
                    ever_online: before.ever_online || up,
                }
            })
            .collect();
        Ok(())
    }

    /// The ranks in each state, made in one pass when first asked after a change.
    pub fn rank_sets(&self) -> &RankSets {
        self.sets.get_or_make(|| self.make_rank_sets())
    }

    fn make_rank_sets(&self) -> RankSets {
        let mut sets = RankSets::default();
        for (k, rank) in (0u32..).zip(&self.ranks) {
            let mark = |set: &mut IdSet, yes: bool| {
                if yes {
                    set.insert(k);
                }
            };
            mark(&mut sets.online, rank.online);
            mark(&mut sets.offline, !rank.online);
            mark(&mut sets.lost, rank.lost);
            mark(&mut sets.torpid, rank.torpid);
            mark(&mut sets.drained, rank.drain.is_some());
            mark(
                &mut sets.drained_by_fluxk8s,
                rank.drain.as_ref().is_some_and(|d| d.ours),
            );
            mark(&mut sets.never_started, !rank.ever_online);
        }
        sets
    }

    /// The real size: online ranks that are not drained.
    pub fn real_size(&self) -> u32 {
        *self.real_size.get_or_make(|| {
            let up = self.ranks.iter().filter(|r| r.online && r.drain.is_none());
            up.count() as u32
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from flux-core 0.88 (10 configured hosts); see docs/flux-core.md §2.
    const BACKLOG: [&str; 3] = [
        r#"{"events":[{"timestamp":1795393304.173115,"name":"restart","context":{"ranks":"0-9","online":"","nodelist":"flux-sample-[0-9]"}}]}"#,
        r#"{"events":[{"timestamp":1795393304.1731536,"name":"resource-define","context":{"method":"configuration"}}],"R":{"version":1,"execution":{"R_lite":[{"rank":"0-9","children":{"core":"0-1"}}],"starttime":0.0,"expiration":0.0,"nodelist":["flux-sample-[0-9]"]}}}"#,
        r#"{"events":[]}"#,
    ];
    const ONLINE: &str = r#"{"events":[{"timestamp":1795393304.6674626,"name":"online","context":{"idset":"1-3"}}]}"#;
    const DRAIN: &str = r#"{"events":[{"timestamp":1795393306.5007591,"name":"drain","context":{"idset":"2","nodelist":"flux-sample-2","reason":"scenario drain","overwrite":0}}]}"#;
    const UNDRAIN: &str = r#"{"events":[{"timestamp":1795393306.7506676,"name":"undrain","context":{"idset":"2","nodelist":"flux-sample-2","overwrite":0}}]}"#;
    const OFFLINE: &str =
        r#"{"events":[{"timestamp":1795393308.2335818,"name":"offline","context":{"idset":"2"}}]}"#;
    const TORPID: &str =
        r#"{"events":[{"timestamp":1795393316.2341518,"name":"torpid","context":{"idset":"3"}}]}"#;
    const OVERLAY: [&str; 4] = [
        r#"{"rank":2,"status":"lost","torpid":false}"#,
        r#"{"rank":2,"status":"full","torpid":false}"#,
        r#"{"rank":3,"status":"full","torpid":true}"#,
        r#"{"rank":1,"status":"offline","torpid":false}"#,
    ];

    fn apply(view: &mut FluxView, payloads: &[&str]) {
        for payload in payloads {
            let response = JournalResponse::parse(payload).unwrap();
            view.apply_journal(&response).unwrap();
        }
    }

    fn ids(text: &str) -> IdSet {
        text.parse().unwrap()
    }

    fn journal_event(ts: f64, name: &str, context: &str) -> String {
        format!(r#"{{"events":[{{"timestamp":{ts},"name":"{name}","context":{context}}}]}}"#)
    }

    #[test]
    fn parses_the_captured_backlog() {
        let restart = JournalResponse::parse(BACKLOG[0]).unwrap();
        assert_eq!(
            restart.entries,
            vec![JournalEntry {
                timestamp: 1795393304.173115,
                event: JournalEvent::Restart {
                    ranks: IdSet::range(0, 9),
                    online: IdSet::new(),
                    hosts: 10,
                },
            }]
        );
        let define = JournalResponse::parse(BACKLOG[1]).unwrap();
        assert_eq!(
            define.entries[0].event,
            JournalEvent::ResourceDefine {
                method: Some("configuration".into())
            }
        );
        assert_eq!(define.resources.unwrap()["version"], 1);
        assert!(JournalResponse::parse(BACKLOG[2]).unwrap().is_backlog_end());
        assert!(!restart.is_backlog_end());
    }

    #[test]
    fn parses_the_captured_live_events() {
        let event = |payload| {
            JournalResponse::parse(payload).unwrap().entries[0]
                .event
                .clone()
        };
        assert_eq!(event(ONLINE), JournalEvent::Online(ids("1-3")));
        assert_eq!(
            event(DRAIN),
            JournalEvent::Drain {
                ranks: ids("2"),
                reason: Some("scenario drain".into()),
                overwrite: 0,
            }
        );
        assert_eq!(
            event(UNDRAIN),
            JournalEvent::Undrain {
                ranks: ids("2"),
                reason: None
            }
        );
        assert_eq!(event(OFFLINE), JournalEvent::Offline(ids("2")));
        assert_eq!(event(TORPID), JournalEvent::Torpid(ids("3")));
        let unknown = journal_event(1.0, "future-event", "{}");
        assert_eq!(
            event(&unknown),
            JournalEvent::Other {
                name: "future-event".into()
            }
        );
    }

    #[test]
    fn parses_the_captured_overlay_statuses() {
        let parsed: Vec<OverlayStatus> = OVERLAY
            .iter()
            .map(|p| OverlayStatus::parse(p).unwrap())
            .collect();
        assert_eq!(
            parsed[0],
            OverlayStatus {
                rank: 2,
                status: ChildStatus::Lost,
                torpid: false
            }
        );
        assert_eq!(parsed[1].status, ChildStatus::Full);
        assert!(parsed[2].torpid);
        assert_eq!(parsed[3].status, ChildStatus::Offline);
    }

    #[test]
    fn malformed_payloads_name_the_field() {
        let cases = [
            ("not json", "not JSON"),
            ("[]", "payload: not an object"),
            (r#"{}"#, "payload.events: missing"),
            (r#"{"events":{}}"#, "payload.events: not an array"),
            (r#"{"events":[1]}"#, "events[0]: not an object"),
            (
                r#"{"events":[{"name":"online"}]}"#,
                "events[0].timestamp: missing",
            ),
            (
                r#"{"events":[{"timestamp":"x","name":"online"}]}"#,
                "events[0].timestamp: not a number",
            ),
            (
                r#"{"events":[{"timestamp":1,"name":7}]}"#,
                "events[0].name: not a string",
            ),
            (
                r#"{"events":[{"timestamp":1,"name":"online","context":{}}]}"#,
                "events[0].context.idset: missing",
            ),
            (
                r#"{"events":[{"timestamp":1,"name":"online","context":{"idset":"1-"}}]}"#,
                "events[0].context.idset: invalid idset",
            ),
            (
                r#"{"events":[{"timestamp":1,"name":"drain","context":{"idset":"1","overwrite":5}}]}"#,
                "events[0].context.overwrite: not 0, 1 or 2",
            ),
            (
                r#"{"events":[{"timestamp":1,"name":"drain","context":{"idset":"1","reason":3}}]}"#,
                "events[0].context.reason: not a string",
            ),
            (
                r#"{"events":[{"timestamp":1,"name":"restart","context":{"ranks":"0-1","online":"","nodelist":"a[1-"}}]}"#,
                "events[0].context.nodelist: invalid hostlist",
            ),
            (
                r#"{"events":[{"timestamp":1,"name":"online","context":[]}]}"#,
                "events[0].context: not an object",
            ),
        ];
        for (payload, expected) in cases {
            let err = JournalResponse::parse(payload).unwrap_err().to_string();
            assert!(err.contains(expected), "{payload}: {err}");
        }
        let overlay_cases = [
            (
                r#"{"status":"lost","torpid":false}"#,
                "payload.rank: missing",
            ),
            (
                r#"{"rank":-1,"status":"lost","torpid":false}"#,
                "payload.rank: not a rank",
            ),
            (
                r#"{"rank":1,"status":"gone","torpid":false}"#,
                "unknown status \"gone\"",
            ),
            (
                r#"{"rank":1,"status":"lost","torpid":0}"#,
                "payload.torpid: not a boolean",
            ),
        ];
        for (payload, expected) in overlay_cases {
            let err = OverlayStatus::parse(payload).unwrap_err().to_string();
            assert!(err.contains(expected), "{payload}: {err}");
        }
    }

    #[test]
    fn the_real_size_leaves_out_drained_ranks_online_or_not() {
        let mut view = FluxView::new();
        apply(
            &mut view,
            &[
                r#"{"events":[{"timestamp":1.0,"name":"restart","context":{"ranks":"0-9","online":"0-5","nodelist":"r-[0-9]"}}]}"#,
                r#"{"events":[{"timestamp":2.0,"name":"drain","context":{"idset":"4-8","reason":"r"}}]}"#,
                r#"{"events":[]}"#,
            ],
        );
        assert_eq!(view.rank_sets().online, ids("0-5"));
        assert_eq!(view.rank_sets().drained, ids("4-8"));
        assert_eq!(view.real_size(), 4, "ranks 0-3: online, not drained");
        apply(
            &mut view,
            &[r#"{"events":[{"timestamp":3.0,"name":"undrain","context":{"idset":"4-5"}}]}"#],
        );
        assert_eq!(view.real_size(), 6, "counted again after the change");
    }

    #[test]
    fn the_captured_session_builds_the_expected_view() {
        let mut view = FluxView::new();
        apply(&mut view, &BACKLOG[..2]);
        assert!(!view.synced());
        apply(&mut view, &BACKLOG[2..]);
        assert!(view.synced());
        assert_eq!(view.size(), 10);
        assert_eq!(view.rank_sets().never_started, IdSet::range(0, 9));

        apply(&mut view, &[ONLINE, DRAIN]);
        assert_eq!(view.rank_sets().online, ids("1-3"));
        assert_eq!(view.rank_sets().drained, ids("2"));
        assert!(view.rank_sets().drained_by_fluxk8s.is_empty());
        assert_eq!(
            {
                let sets = view.rank_sets();
                sets.drained.difference(&sets.drained_by_fluxk8s)
            },
            ids("2")
        );
        assert_eq!(view.real_size(), 2);
        let drain = view.rank(2).unwrap().drain.clone().unwrap();
        assert_eq!(
            (&*drain.reason, drain.timestamp),
            ("scenario drain", 1795393306.5007591)
        );

        apply(&mut view, &[UNDRAIN, OFFLINE, TORPID]);
        assert!(view.rank_sets().drained.is_empty());
        assert_eq!(view.rank_sets().online, ids("1,3"));
        assert_eq!(view.rank_sets().torpid, ids("3"));
        assert_eq!(view.rank_sets().never_started, ids("0,4-9"));
        assert_eq!(view.rank_sets().offline, ids("0,2,4-9"));
    }

    #[test]
    fn overlay_lost_lasts_until_the_rank_is_back() {
        let mut view = FluxView::new();
        apply(&mut view, &BACKLOG);
        apply(&mut view, &[ONLINE]);
        let overlay = |p| OverlayStatus::parse(p).unwrap();
        view.apply_overlay(&overlay(OVERLAY[0])).unwrap();
        apply(&mut view, &[OFFLINE]);
        assert_eq!(view.rank_sets().lost, ids("2"));
        view.apply_overlay(&overlay(OVERLAY[1])).unwrap();
        assert!(view.rank_sets().lost.is_empty());

        view.apply_overlay(&overlay(OVERLAY[0])).unwrap();
        apply(
            &mut view,
            &[&journal_event(2e9, "online", r#"{"idset":"2"}"#)],
        );
        assert!(
            view.rank_sets().lost.is_empty(),
            "a live online clears lost"
        );

        view.apply_overlay(&overlay(OVERLAY[2])).unwrap();
        assert_eq!(view.rank_sets().torpid, ids("3"));
        view.apply_overlay(&overlay(OVERLAY[3])).unwrap();
        assert!(view.rank_sets().lost.is_empty(), "a clean exit is not lost");
    }

    #[test]
    fn ours_is_decided_by_the_reason_prefix() {
        let mut view = FluxView::new();
        apply(&mut view, &BACKLOG);
        let ours = journal_event(
            5.0,
            "drain",
            r#"{"idset":"4-5","reason":"fluxk8s: pod lost","overwrite":0}"#,
        );
        let bare = journal_event(6.0, "drain", r#"{"idset":"6"}"#);
        apply(&mut view, &[&ours, &bare]);
        assert_eq!(view.rank_sets().drained_by_fluxk8s, ids("4-5"));
        assert_eq!(
            {
                let sets = view.rank_sets();
                sets.drained.difference(&sets.drained_by_fluxk8s)
            },
            ids("6")
        );
        assert_eq!(&*view.rank(6).unwrap().drain.as_ref().unwrap().reason, "");
    }

    #[test]
    fn the_rank_sets_are_made_again_after_each_change() {
        let mut view = FluxView::new();
        apply(&mut view, &BACKLOG);
        assert!(view.rank_sets().online.is_empty());
        apply(&mut view, &[ONLINE]);
        assert_eq!(view.rank_sets().online, ids("1-3"));
        apply(&mut view, &[DRAIN]);
        assert_eq!(view.rank_sets().drained, ids("2"));
        let lost = OverlayStatus::parse(r#"{"rank":3,"status":"lost","torpid":false}"#).unwrap();
        view.apply_overlay(&lost).unwrap();
        assert_eq!(view.rank_sets().lost, ids("3"));
        assert_eq!(view.rank_sets().clone(), view.make_rank_sets());
    }

    #[test]
    fn the_ranks_of_one_drain_share_its_reason() {
        let mut view = FluxView::new();
        apply(&mut view, &BACKLOG);
        let context = r#"{"idset":"1-3","reason":"fluxk8s: retired by resize to 1"}"#;
        apply(&mut view, &[&journal_event(2.0, "drain", context)]);
        let reason = |k| Arc::clone(&view.rank(k).unwrap().drain.as_ref().unwrap().reason);
        assert_eq!(&*reason(1), "fluxk8s: retired by resize to 1");
        assert!(Arc::ptr_eq(&reason(1), &reason(3)));
        assert!(view.rank(2).unwrap().drain.as_ref().unwrap().ours);
    }

    #[test]
    fn overwrite_modes_follow_flux() {
        let mut view = FluxView::new();
        apply(&mut view, &BACKLOG);
        let drain = |ts: f64, reason: &str, overwrite: u8| {
            journal_event(
                ts,
                "drain",
                &format!(r#"{{"idset":"1","reason":"{reason}","overwrite":{overwrite}}}"#),
            )
        };
        let state = |view: &FluxView| {
            let d = view.rank(1).unwrap().drain.clone().unwrap();
            (d.reason.to_string(), d.timestamp)
        };
        apply(
            &mut view,
            &[&drain(1.0, "first", 0), &drain(2.0, "plain", 0)],
        );
        assert_eq!(state(&view), ("first".to_string(), 1.0));
        apply(&mut view, &[&drain(3.0, "fluxk8s: forced", 1)]);
        assert_eq!(state(&view), ("fluxk8s: forced".to_string(), 1.0));
        assert!(view.rank(1).unwrap().drain.as_ref().unwrap().ours);
        apply(&mut view, &[&drain(4.0, "twice forced", 2)]);
        assert_eq!(state(&view), ("twice forced".to_string(), 4.0));
    }

    #[test]
    fn resubscribing_rebuilds_without_duplicates() {
        let history = [
            BACKLOG[0],
            BACKLOG[1],
            ONLINE,
            DRAIN,
            UNDRAIN,
            &journal_event(7.0, "drain", r#"{"idset":"3","reason":"fluxk8s: x"}"#),
            BACKLOG[2],
        ];
        let mut view = FluxView::new();
        apply(&mut view, &history);
        view.apply_overlay(&OverlayStatus::parse(OVERLAY[0]).unwrap())
            .unwrap();
        apply(&mut view, &[OFFLINE]);
        let before = view.clone();

        view.restart_journal();
        assert!(!view.synced());
        // The new backlog replays history; rank 2's old `online` must not clear `lost`.
        let mut replay = history.to_vec();
        replay.insert(5, OFFLINE);
        apply(&mut view, &replay);
        assert!(view.synced());
        assert_eq!(view, before);
        assert_eq!(view.rank_sets().drained, ids("3"));
        assert_eq!(view.rank_sets().lost, ids("2"));
    }

    #[test]
    fn drains_replayed_before_restart_survive_it() {
        // Captured after `flux module reload resource` (flux-core 0.88): the KVS eventlog
        // comes first, then `online`, then `restart`.
        let reload = [
            r#"{"events":[{"timestamp":1.0,"name":"drain","context":{"idset":"1","nodelist":"flux-sample-1","reason":"test reason","overwrite":0}},{"timestamp":2.0,"name":"undrain","context":{"idset":"1","nodelist":"flux-sample-1","overwrite":0}},{"timestamp":3.0,"name":"drain","context":{"idset":"2","nodelist":"flux-sample-2","reason":"keep me","overwrite":0}},{"timestamp":4.0,"name":"online","context":{"idset":"0-2"}},{"timestamp":4.1,"name":"restart","context":{"ranks":"0-3","online":"0-2","nodelist":"flux-sample-[0-3]"}}]}"#,
            r#"{"events":[{"timestamp":4.2,"name":"resource-define","context":{"method":"configuration"}}]}"#,
            r#"{"events":[]}"#,
        ];
        for mut view in [FluxView::new(), {
            let mut known = FluxView::new();
            apply(&mut known, &BACKLOG);
            known
        }] {
            view.restart_journal();
            apply(&mut view, &reload);
            assert!(view.synced());
            assert_eq!(view.size(), 4);
            assert_eq!(view.rank_sets().online, ids("0-2"));
            assert_eq!(view.rank_sets().drained, ids("2"));
            assert_eq!(
                &*view.rank(2).unwrap().drain.as_ref().unwrap().reason,
                "keep me"
            );
        }
    }

    #[test]
    fn a_backlog_without_restart_still_applies_what_it_held() {
        let mut view = FluxView::new();
        apply(&mut view, &BACKLOG);
        view.restart_journal();
        apply(&mut view, &[DRAIN, BACKLOG[2]]);
        assert!(view.synced());
        assert_eq!(view.rank_sets().drained, ids("2"));
    }

    #[test]
    fn ranks_beyond_the_size_are_errors() {
        let mut view = FluxView::new();
        let early = JournalResponse::parse(ONLINE).unwrap();
        assert_eq!(
            view.apply_journal(&early).unwrap_err(),
            ApplyError::RankOutOfRange {
                event: "online".into(),
                rank: 3,
                size: 0
            }
        );
        apply(&mut view, &BACKLOG);
        let far = journal_event(1.0, "drain", r#"{"idset":"10","reason":"x"}"#);
        let err = view
            .apply_journal(&JournalResponse::parse(&far).unwrap())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("rank 10, beyond the instance size 10"),
            "{err}"
        );
        let overlay = OverlayStatus::parse(r#"{"rank":12,"status":"lost","torpid":false}"#);
        assert!(view.apply_overlay(&overlay.unwrap()).is_err());

        let mismatch = journal_event(
            1.0,
            "restart",
            r#"{"ranks":"0-2","online":"","nodelist":"a[0-1]"}"#,
        );
        let err = view
            .apply_journal(&JournalResponse::parse(&mismatch).unwrap())
            .unwrap_err();
        assert_eq!(err, ApplyError::NodelistMismatch { ranks: 3, hosts: 2 });
        let outside = journal_event(
            1.0,
            "restart",
            r#"{"ranks":"0-2","online":"5","nodelist":""}"#,
        );
        assert!(matches!(
            view.apply_journal(&JournalResponse::parse(&outside).unwrap()),
            Err(ApplyError::OnlineOutsideRanks { .. })
        ));
        assert_eq!(
            view.size(),
            10,
            "a rejected restart leaves the view as it was"
        );
    }
}
