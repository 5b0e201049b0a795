//! The object store: objects by kind/namespace/name, one global resourceVersion counter, a
//! bounded change history, the open watches that changes are pushed to, and the journal of
//! changes the controllers have not taken yet.
//!
//! A request touches a few objects, so what it costs must not grow with the object count:
//! an object is stored once (`Arc`) and shared by the map, the history and the journal; an
//! index by owner uid finds an object's dependents without a scan; a kind's objects are one
//! range of the ordered map; a watch event is serialized once for all its watchers.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::kinds::Kind;
use super::select::{FieldSelector, LabelSelector};
use super::status::ApiError;

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One committed change: kept for watches that resume from an older resourceVersion, and
/// journaled for the controllers.
#[derive(Debug)]
pub struct Change {
    resource_version: u64,
    pub key: ObjectKey,
    change: ChangeType,
    /// The object before a modification, so a selector can tell "stopped matching".
    old: Option<Arc<Value>>,
    object: Arc<Value>,
}

impl Change {
    /// The object before the change; `None` for a creation.
    pub fn previous(&self) -> Option<&Value> {
        match self.change {
            ChangeType::Added => None,
            ChangeType::Modified => self.old.as_deref(),
            ChangeType::Deleted => Some(&self.object),
        }
    }

    /// The object after the change; `None` for a deletion.
    pub fn current(&self) -> Option<&Value> {
        (self.change != ChangeType::Deleted).then_some(&*self.object)
    }
}

/// What a watch (or list) selects.
#[derive(Debug, Clone)]
pub struct Filter {
    pub kind: Kind,
    /// `None` for all namespaces.
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    fn matches(&self, key: &ObjectKey, object: &Value) -> bool {
        key.kind == self.kind
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }

    /// The event this change is for a watcher with this filter: a modification that moves
    /// an object into (out of) the selection is an ADDED (DELETED), as the API server does.
    fn event_for<'a>(&self, change: &'a Change) -> Option<(&'static str, &'a Value)> {
        let now = self.matches(&change.key, &change.object);
        let before = change
            .old
            .as_ref()
            .is_some_and(|old| self.matches(&change.key, old));
        let kind = match (change.change, before, now) {
            (ChangeType::Added, _, true) => "ADDED",
            (ChangeType::Deleted, _, true) => "DELETED",
            (ChangeType::Modified, true, true) => "MODIFIED",
            (ChangeType::Modified, false, true) => "ADDED",
            (ChangeType::Modified, true, false) => "DELETED",
            _ => return None,
        };
        Some((kind, &change.object))
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// `resourceVersion` unset or `0`: synthetic ADDED events for the current objects first.
    CurrentState,
    /// Replay every change after this resourceVersion, then follow.
    After(u64),
}

/// An open watch: the events to send first, then the live feed. The feed ends when the
/// store drops the watch (fault injection) or is dropped.
#[derive(Debug)]
pub struct OpenWatch {
    pub initial: Vec<Bytes>,
    pub feed: mpsc::UnboundedReceiver<Bytes>,
}

struct Watcher {
    filter: Filter,
    sender: mpsc::UnboundedSender<Bytes>,
}

/// One newline-terminated watch event, as the API server streams it.
pub fn watch_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object}))
        .expect("a JSON value always serializes");
    line.push(b'\n');
    Bytes::from(line)
}

/// The uids an object's ownerReferences name.
fn owner_uids(object: &Value) -> impl Iterator<Item = &str> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|reference| reference["uid"].as_str())
}

/// The store. All methods are synchronous; the caller holds the state lock.
pub struct Store {
    objects: BTreeMap<ObjectKey, Arc<Value>>,
    /// The objects with an ownerReference to each uid, kept in step with `objects`.
    by_owner: HashMap<String, BTreeSet<ObjectKey>>,
    resource_version: u64,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Changes up to and including this version are no longer in `history`.
    compacted_through: u64,
    watchers: Vec<Watcher>,
    /// Changes since the controllers last took them (every request settles, which takes
    /// them, so this stays short).
    journal: Vec<Arc<Change>>,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Self {
            objects: BTreeMap::new(),
            by_owner: HashMap::new(),
            resource_version: 1,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_through: 1,
            watchers: Vec::new(),
            journal: Vec::new(),
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(key).map(|object| &**object)
    }

    /// Objects of a kind, in one namespace or all, in key order. Keys sort by kind, then
    /// namespace, so the selection is one contiguous range.
    pub fn objects(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> impl Iterator<Item = (&ObjectKey, &Value)> {
        let first = ObjectKey::new(kind, namespace.unwrap_or(""), "");
        self.objects
            .range(first..)
            .take_while(move |(key, _)| {
                key.kind == kind && namespace.is_none_or(|ns| ns == key.namespace)
            })
            .map(|(key, object)| (key, &**object))
    }

    /// Objects with an ownerReference to `owner_uid`, of every kind, in key order.
    pub fn owned_by(&self, owner_uid: &str) -> impl Iterator<Item = &ObjectKey> {
        self.by_owner.get(owner_uid).into_iter().flatten()
    }

    pub fn list(&self, filter: &Filter) -> Vec<Value> {
        self.objects(filter.kind, filter.namespace.as_deref())
            .filter(|(key, object)| filter.matches(key, object))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Stores a new object (the key must be free) and returns it as stored.
    pub fn create(&mut self, key: ObjectKey, object: Value) -> Value {
        debug_assert!(!self.objects.contains_key(&key), "create over {key:?}");
        self.commit(key, ChangeType::Added, object)
    }

    /// Replaces an object. Returns it as stored; an update that changes nothing is a no-op
    /// that keeps the resourceVersion, as in the API server.
    pub fn update(&mut self, key: ObjectKey, mut object: Value) -> Value {
        let Some(old) = self.objects.get(&key) else {
            return self.create(key, object);
        };
        object["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if **old == object {
            return object;
        }
        self.commit(key, ChangeType::Modified, object)
    }

    /// Removes an object; the DELETED event carries it with the deletion's version.
    pub fn delete(&mut self, key: &ObjectKey) -> Option<Value> {
        let object = Value::clone(self.objects.get(key)?);
        Some(self.commit(key.clone(), ChangeType::Deleted, object))
    }

    /// The changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<Arc<Change>> {
        std::mem::take(&mut self.journal)
    }

    fn commit(&mut self, key: ObjectKey, change: ChangeType, mut object: Value) -> Value {
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        let object = Arc::new(object);
        let replaced = match change {
            ChangeType::Deleted => self.objects.remove(&key),
            ChangeType::Added | ChangeType::Modified => {
                self.objects.insert(key.clone(), object.clone())
            }
        };
        let stays = (change != ChangeType::Deleted).then_some(&*object);
        self.reindex_owners(&key, replaced.as_deref(), stays);
        let change = Arc::new(Change {
            resource_version: self.resource_version,
            key,
            old: replaced.filter(|_| change == ChangeType::Modified),
            change,
            object,
        });
        self.notify_watchers(&change);
        self.journal.push(change.clone());
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_through = dropped.resource_version;
            }
        }
        Value::clone(&change.object)
    }

    /// Moves `key` in the owner index from the owners of `before` to those of `after`.
    fn reindex_owners(&mut self, key: &ObjectKey, before: Option<&Value>, after: Option<&Value>) {
        for uid in before.into_iter().flat_map(owner_uids) {
            if let Some(owned) = self.by_owner.get_mut(uid) {
                owned.remove(key);
                if owned.is_empty() {
                    self.by_owner.remove(uid);
                }
            }
        }
        for uid in after.into_iter().flat_map(owner_uids) {
            let owned = self.by_owner.entry(uid.to_owned()).or_default();
            owned.insert(key.clone());
        }
    }

    /// Sends a change to every watcher it concerns, dropping watchers whose stream ended.
    fn notify_watchers(&mut self, change: &Change) {
        // Watchers mostly get the same event: serialize it once per event type.
        let mut lines: Vec<(&str, Bytes)> = Vec::new();
        self.watchers
            .retain(|watcher| match watcher.filter.event_for(change) {
                Some((event_type, object)) => {
                    let line = match lines.iter().find(|(t, _)| *t == event_type) {
                        Some((_, line)) => line.clone(),
                        None => {
                            let line = watch_line(event_type, object);
                            lines.push((event_type, line.clone()));
                            line
                        }
                    };
                    watcher.sender.send(line).is_ok()
                }
                None => !watcher.sender.is_closed(),
            });
    }

    /// Opens a watch. Starting after a version older than the retained history fails with
    /// 410 Expired, which the HTTP layer sends as an ERROR event.
    pub fn watch(&mut self, filter: Filter, start: WatchStart) -> Result<OpenWatch, ApiError> {
        let initial = match start {
            WatchStart::CurrentState => self
                .objects(filter.kind, filter.namespace.as_deref())
                .filter(|(key, object)| filter.matches(key, object))
                .map(|(_, object)| watch_line("ADDED", object))
                .collect(),
            WatchStart::After(version) if version < self.compacted_through => {
                return Err(ApiError::expired(version, self.compacted_through + 1));
            }
            WatchStart::After(version) => self
                .history
                .iter()
                .filter(|change| change.resource_version > version)
                .filter_map(|change| filter.event_for(change))
                .map(|(event_type, object)| watch_line(event_type, object))
                .collect(),
        };
        let (sender, feed) = mpsc::unbounded_channel();
        // A quiet store notifies no one, so ended watches are also let go here: a client
        // renewing its watches against an idle cluster would otherwise pile them up.
        self.watchers.retain(|watcher| !watcher.sender.is_closed());
        self.watchers.push(Watcher { filter, sender });
        Ok(OpenWatch { initial, feed })
    }

    /// Closes every open watch now, as an API server restart would.
    pub fn drop_watches(&mut self) {
        self.watchers.clear();
    }

    /// Forgets all history, so any watch resuming from an older version gets 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_through = self.resource_version;
    }

    pub fn open_watches(&self) -> usize {
        self.watchers
            .iter()
            .filter(|w| !w.sender.is_closed())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, app: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "labels": {"app": app}}})
    }

    fn filter(labels: &str) -> Filter {
        Filter {
            kind: Kind::Pod,
            namespace: Some("ns".into()),
            labels: LabelSelector::parse(labels).unwrap(),
            fields: FieldSelector::default(),
        }
    }

    fn drain(watch: &mut OpenWatch) -> Vec<String> {
        let mut lines: Vec<Bytes> = std::mem::take(&mut watch.initial);
        while let Ok(line) = watch.feed.try_recv() {
            lines.push(line);
        }
        lines
            .iter()
            .map(|l| {
                let event: Value = serde_json::from_slice(l).unwrap();
                format!(
                    "{} {}",
                    event["type"].as_str().unwrap(),
                    event["object"]["metadata"]["name"]
                )
            })
            .collect()
    }

    #[test]
    fn every_change_bumps_the_global_resource_version() {
        let mut store = Store::new(10);
        let key = ObjectKey::new(Kind::Pod, "ns", "a");
        let created = store.create(key.clone(), pod("a", "x"));
        let updated = store.update(key.clone(), pod("a", "y"));
        let unchanged = store.update(key.clone(), pod("a", "y"));
        assert_eq!(created["metadata"]["resourceVersion"], "2");
        assert_eq!(updated["metadata"]["resourceVersion"], "3");
        assert_eq!(
            unchanged["metadata"]["resourceVersion"], "3",
            "a no-op update keeps the rv"
        );
        assert_eq!(
            store.delete(&key).unwrap()["metadata"]["resourceVersion"],
            "4"
        );
        assert_eq!(store.resource_version(), 4);
    }

    #[test]
    fn watch_replays_after_a_version_and_follows_selector_transitions() {
        let mut store = Store::new(10);
        let key = ObjectKey::new(Kind::Pod, "ns", "a");
        store.create(key.clone(), pod("a", "x"));
        let after_create = store.resource_version();
        store.update(key.clone(), pod("a", "y"));
        let mut watch = store
            .watch(filter("app=x"), WatchStart::After(after_create - 1))
            .unwrap();
        store.update(key.clone(), pod("a", "x"));
        store.delete(&key);
        assert_eq!(
            drain(&mut watch),
            [
                "ADDED \"a\"",
                "DELETED \"a\"",
                "ADDED \"a\"",
                "DELETED \"a\""
            ]
        );
    }

    #[test]
    fn watch_from_compacted_history_is_410_expired() {
        let mut store = Store::new(2);
        for name in ["a", "b", "c"] {
            store.create(ObjectKey::new(Kind::Pod, "ns", name), pod(name, "x"));
        }
        let err = store.watch(filter(""), WatchStart::After(1)).unwrap_err();
        assert_eq!((err.code, err.reason), (410, "Expired"));
        assert!(store.watch(filter(""), WatchStart::After(3)).is_ok());
        store.compact();
        assert_eq!(
            store
                .watch(filter(""), WatchStart::After(3))
                .unwrap_err()
                .code,
            410
        );
        let mut current = store.watch(filter(""), WatchStart::CurrentState).unwrap();
        assert_eq!(drain(&mut current).len(), 3);
    }

    #[test]
    fn renewed_watches_on_a_quiet_store_do_not_pile_up() {
        let mut store = Store::new(10);
        for _ in 0..100 {
            let renewed = store.watch(filter(""), WatchStart::CurrentState).unwrap();
            drop(renewed);
        }
        let _open = store.watch(filter(""), WatchStart::CurrentState).unwrap();
        assert_eq!(store.watchers.len(), 1, "only the open watch is kept");
        assert_eq!(store.open_watches(), 1);
    }

    fn owned(owner_uid: &str) -> Value {
        json!({"metadata": {"name": "d", "ownerReferences": [{"uid": owner_uid}]}})
    }

    fn owned_by(store: &Store, owner_uid: &str) -> Vec<String> {
        store
            .owned_by(owner_uid)
            .map(|key| key.name.clone())
            .collect()
    }

    #[test]
    fn the_owner_index_follows_owner_references_through_updates_and_deletion() {
        let mut store = Store::new(10);
        let key = ObjectKey::new(Kind::Pod, "ns", "d");
        store.create(key.clone(), owned("u1"));
        assert_eq!(owned_by(&store, "u1"), ["d"]);
        store.update(key.clone(), owned("u2"));
        assert!(owned_by(&store, "u1").is_empty());
        assert_eq!(owned_by(&store, "u2"), ["d"]);
        store.delete(&key);
        assert!(owned_by(&store, "u2").is_empty());
    }

    #[test]
    fn the_journal_hands_each_change_over_once_with_its_before_and_after() {
        let mut store = Store::new(1);
        let key = ObjectKey::new(Kind::Pod, "ns", "a");
        store.create(key.clone(), pod("a", "x"));
        store.update(key.clone(), pod("a", "x"));
        store.update(key.clone(), pod("a", "y"));
        store.delete(&key);
        let app = |version: Option<&Value>| version.map(|v| v["metadata"]["labels"]["app"].clone());
        let changes: Vec<_> = store
            .take_changes()
            .iter()
            .map(|c| (app(c.previous()), app(c.current())))
            .collect();
        // The no-op update is no change; the journal outlives the history limit of 1.
        assert_eq!(
            changes,
            [
                (None, Some(json!("x"))),
                (Some(json!("x")), Some(json!("y"))),
                (Some(json!("y")), None),
            ]
        );
        assert!(store.take_changes().is_empty());
    }

    #[test]
    fn dropped_watches_end_their_feed() {
        let mut store = Store::new(10);
        let mut watch = store.watch(filter(""), WatchStart::CurrentState).unwrap();
        assert_eq!(store.open_watches(), 1);
        store.drop_watches();
        assert!(matches!(
            watch.feed.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
