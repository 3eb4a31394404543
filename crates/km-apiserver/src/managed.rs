//! Field management: who set which field of an object (`metadata.managedFields`), and
//! server-side apply on top of it.
//!
//! Every tracked write records, per field manager, the set of fields it owns, in Kubernetes'
//! `FieldsV1` form (`f:<field>`, `k:<key fields>` for an item of an associative list, `v:<value>`
//! for an item of a set, `.` for a node that is owned itself). An ordinary write (create, update,
//! patch: operation `Update`) takes over the fields it changes from everyone else and never
//! conflicts. An apply (operation `Apply`) sends the manager's whole intent: the fields it
//! names become exactly the manager's set, values merge into the live object, fields the
//! manager set before and nobody else owns any more are removed, and changing a field another
//! manager owns is a conflict unless forced (then the field changes hands).
//!
//! How far an object can be owned in parts comes from its kind's types ([`Shape`]): structs and
//! maps field by field, associative lists item by item (by their key fields), sets by value,
//! atomic lists and structs whole. The functions here take the time as an argument and do no
//! IO.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult, Cause};
use crate::object::rfc3339;
use crate::protobuf::{ListType, Shape};
use crate::registry::Kind;

/// More `Update` entries than this are folded, oldest first, into one named
/// [`ANCIENT_CHANGES`], as Kubernetes does, so the list cannot grow without bound.
const MAX_UPDATE_ENTRIES: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";
/// The most entries an object's managedFields may have (each write adds at most one, and
/// Update entries beyond [`MAX_UPDATE_ENTRIES`] fold; only a request that sets the list itself
/// can come near).
const MAX_ENTRIES: usize = 1000;
/// The longest field manager name accepted.
pub const MAX_MANAGER_LENGTH: usize = 128;

/// One step of a path into an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pe {
    /// A field of a struct or a key of a map.
    Field(String),
    /// An item of an associative list, by its key fields (canonical JSON object).
    Key(String),
    /// An item of a set, by its value (canonical JSON).
    Value(String),
    /// An item of a list by position (only read from other servers' sets).
    Index(usize),
}

impl Pe {
    fn encode(&self) -> String {
        match self {
            Pe::Field(name) => format!("f:{name}"),
            Pe::Key(key) => format!("k:{key}"),
            Pe::Value(value) => format!("v:{value}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(text: &str) -> Option<Pe> {
        let (tag, rest) = text.split_once(':')?;
        match tag {
            "f" => Some(Pe::Field(rest.to_owned())),
            "k" => serde_json::from_str::<Map<String, Value>>(rest)
                .ok()
                .map(|m| Pe::Key(canonical(&Value::Object(m)))),
            "v" => serde_json::from_str::<Value>(rest).ok().map(|v| Pe::Value(canonical(&v))),
            "i" => rest.parse().ok().map(Pe::Index),
            _ => None,
        }
    }

    /// How a path is written in messages: `.spec.containers[name="web"].image`.
    fn display(&self) -> String {
        match self {
            Pe::Field(name) => format!(".{name}"),
            Pe::Key(key) => {
                let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", parts.join(","))
            }
            Pe::Value(value) => format!("[={value}]"),
            Pe::Index(i) => format!("[{i}]"),
        }
    }
}

/// JSON with object keys sorted, so equal values have equal text.
fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&map[k]))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// A set of paths into an object, as a tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSet {
    /// The path that leads here is in the set itself.
    member: bool,
    children: BTreeMap<Pe, FieldSet>,
}

impl FieldSet {
    fn leaf() -> FieldSet {
        FieldSet { member: true, children: BTreeMap::new() }
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    fn attach(&mut self, pe: Pe, child: FieldSet) {
        if !child.is_empty() {
            self.children.insert(pe, child);
        }
    }

    fn get(&self, pe: &Pe) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, child) in &other.children {
            self.children.entry(pe.clone()).or_default().union(child);
        }
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && !other.member, children: BTreeMap::new() };
        for (pe, child) in &self.children {
            match other.children.get(pe) {
                Some(o) => out.attach(pe.clone(), child.difference(o)),
                None => out.attach(pe.clone(), child.clone()),
            }
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && other.member, children: BTreeMap::new() };
        for (pe, child) in &self.children {
            if let Some(o) = other.children.get(pe) {
                out.attach(pe.clone(), child.intersection(o));
            }
        }
        out
    }

    /// The paths in the set, in order.
    pub fn paths(&self) -> Vec<Vec<Pe>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<Pe>, out: &mut Vec<Vec<Pe>>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` form.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), json!({}));
        }
        for (pe, child) in &self.children {
            map.insert(pe.encode(), child.to_json());
        }
        Value::Object(map)
    }

    /// Reads the `fieldsV1` form.
    pub fn from_json(value: &Value) -> Result<FieldSet, String> {
        let Value::Object(map) = value else {
            return Err(format!("expected an object, got {value}"));
        };
        let mut set = FieldSet::default();
        for (key, child) in map {
            if key == "." {
                set.member = true;
                continue;
            }
            let pe = Pe::decode(key).ok_or_else(|| format!("unknown path element {key:?}"))?;
            let mut child = FieldSet::from_json(child)?;
            if child.children.is_empty() {
                child.member = true;
            }
            set.children.insert(pe, child);
        }
        Ok(set)
    }
}

/// `.spec.replicas`
pub fn path_string(path: &[Pe]) -> String {
    path.iter().map(Pe::display).collect()
}

/// A list item's path element, by the list's type.
fn item_pe(list: &ListType, item: &Value) -> Result<Pe, String> {
    match list {
        ListType::Set => Ok(Pe::Value(canonical(item))),
        ListType::Map(keys) => {
            let mut key = Map::new();
            for field in keys {
                match item.get(*field) {
                    Some(v) if !v.is_null() => {
                        key.insert((*field).to_owned(), v.clone());
                    }
                    // The one key field with a default: ports are TCP unless said otherwise.
                    _ if *field == "protocol" => {
                        key.insert("protocol".into(), json!("TCP"));
                    }
                    _ => {}
                }
            }
            if key.is_empty() {
                return Err(format!(
                    "an item of an associative list has none of its key fields ({})",
                    keys.join(", ")
                ));
            }
            Ok(Pe::Key(canonical(&Value::Object(key))))
        }
    }
}

/// Items of a list by their path elements, in order (the first of duplicates wins), with an
/// index by path element (lists can be long: no lookup is a scan).
struct Indexed<'a> {
    items: Vec<(Pe, &'a Value)>,
    by_pe: HashMap<Pe, &'a Value>,
}

impl<'a> Indexed<'a> {
    fn get(&self, pe: &Pe) -> Option<&'a Value> {
        self.by_pe.get(pe).copied()
    }
}

fn indexed<'a>(list: &ListType, items: &'a [Value]) -> Indexed<'a> {
    let mut out = Indexed { items: Vec::with_capacity(items.len()), by_pe: HashMap::new() };
    for item in items {
        if let Ok(pe) = item_pe(list, item)
            && !out.by_pe.contains_key(&pe)
        {
            out.by_pe.insert(pe.clone(), item);
            out.items.push((pe, item));
        }
    }
    out
}

fn is_empty_container(value: Option<&Value>) -> bool {
    match value {
        None => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

/// The fields an applied configuration sets.
pub fn field_set(value: &Value, shape: &Shape) -> Result<FieldSet, String> {
    Ok(match (shape, value) {
        (Shape::List(list, item), Value::Array(items)) => {
            let mut set = FieldSet::default();
            for v in items {
                let pe = item_pe(list, v)?;
                if set.children.contains_key(&pe) {
                    return Err(format!("duplicate entries for key {}", pe.display()));
                }
                let mut child = field_set(v, item)?;
                child.member = true;
                set.children.insert(pe, child);
            }
            set
        }
        (Shape::Struct(_) | Shape::Map(_) | Shape::Untyped, Value::Object(map)) => {
            let mut set = FieldSet::default();
            for (key, v) in map {
                let child_shape = shape.field(key);
                let mut child = field_set(v, &child_shape).map_err(|e| format!(".{key}{e}"))?;
                let declared =
                    matches!(shape, Shape::Struct(_)) && !matches!(child_shape, Shape::Untyped);
                if v.is_null() || v.as_object().is_some_and(Map::is_empty) || !declared {
                    child.member = true;
                }
                set.attach(Pe::Field(key.clone()), child);
            }
            set
        }
        _ => FieldSet::leaf(),
    })
}

/// What changed from one object to another.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    fn attach(&mut self, pe: &Pe, child: Comparison) {
        self.added.attach(pe.clone(), child.added);
        self.modified.attach(pe.clone(), child.modified);
        self.removed.attach(pe.clone(), child.removed);
    }

    fn leaf(old: Option<&Value>, new: Option<&Value>) -> Comparison {
        let mut out = Comparison::default();
        match (old, new) {
            (None, None) => {}
            (None, Some(_)) => out.added.member = true,
            (Some(_), None) => out.removed.member = true,
            (Some(a), Some(b)) => out.modified.member = a != b,
        }
        out
    }

    fn filter(&mut self, keep: &dyn Fn(&mut FieldSet)) {
        keep(&mut self.added);
        keep(&mut self.modified);
        keep(&mut self.removed);
    }
}

/// The paths added, modified and removed going from `old` to `new`.
pub fn compare(old: Option<&Value>, new: Option<&Value>, shape: &Shape) -> Comparison {
    if old.is_none() && new.is_none() {
        return Comparison::default();
    }
    let both_empty = is_empty_container(old) && is_empty_container(new);
    match (shape, old, new) {
        (Shape::Leaf, ..) => Comparison::leaf(old, new),
        (Shape::List(list, item), o, n)
            if !both_empty && o.is_none_or(Value::is_array) && n.is_none_or(Value::is_array) =>
        {
            let empty = Vec::new();
            let olds = indexed(list, o.and_then(Value::as_array).unwrap_or(&empty));
            let news = indexed(list, n.and_then(Value::as_array).unwrap_or(&empty));
            let mut out = Comparison::default();
            for (pe, ov) in &olds.items {
                let nv = news.get(pe);
                let mut child = compare(Some(ov), nv, item);
                child.removed.member |= nv.is_none();
                out.attach(pe, child);
            }
            for (pe, nv) in &news.items {
                if olds.get(pe).is_none() {
                    let mut child = compare(None, Some(nv), item);
                    child.added.member = true;
                    out.attach(pe, child);
                }
            }
            out
        }
        (Shape::Struct(_) | Shape::Map(_) | Shape::Untyped, o, n)
            if !both_empty && o.is_none_or(Value::is_object) && n.is_none_or(Value::is_object) =>
        {
            let empty = Map::new();
            let om = o.and_then(Value::as_object).unwrap_or(&empty);
            let nm = n.and_then(Value::as_object).unwrap_or(&empty);
            let mut out = Comparison::default();
            for (key, ov) in om {
                let pe = Pe::Field(key.clone());
                out.attach(&pe, compare(Some(ov), nm.get(key), &shape.field(key)));
            }
            for (key, nv) in nm {
                if !om.contains_key(key) {
                    let pe = Pe::Field(key.clone());
                    out.attach(&pe, compare(None, Some(nv), &shape.field(key)));
                }
            }
            out.added.member |= o.is_none();
            out.removed.member |= n.is_none();
            out
        }
        _ => Comparison::leaf(old, new),
    }
}

/// `config` merged into `live` as an apply does: objects field by field, associative lists and
/// sets item by item (live items keep their places, new ones follow in the config's order),
/// everything else replaced by the config's value.
pub fn merge(live: Option<&Value>, config: &Value, shape: &Shape) -> Value {
    let Some(live) = live else { return config.clone() };
    match (shape, live, config) {
        (Shape::List(list, item), Value::Array(old), Value::Array(new)) => {
            let news = indexed(list, new);
            let mut out: Vec<Value> = Vec::with_capacity(old.len() + new.len());
            let mut seen: HashSet<Pe> = HashSet::new();
            for ov in old {
                match item_pe(list, ov) {
                    Ok(pe) => {
                        match news.get(&pe) {
                            Some(nv) => out.push(merge(Some(ov), nv, item)),
                            None => out.push(ov.clone()),
                        }
                        seen.insert(pe);
                    }
                    Err(_) => out.push(ov.clone()),
                }
            }
            for (pe, nv) in news.items {
                if !seen.contains(&pe) {
                    out.push(nv.clone());
                }
            }
            Value::Array(out)
        }
        (
            Shape::Struct(_) | Shape::Map(_) | Shape::Untyped,
            Value::Object(old),
            Value::Object(new),
        ) => {
            let mut out = old.clone();
            for (key, nv) in new {
                let merged = merge(old.get(key), nv, &shape.field(key));
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        _ => config.clone(),
    }
}

/// Whether everything `value` holds is named in `set`.
fn covered(value: &Value, set: &FieldSet, shape: &Shape) -> bool {
    if set.member && set.children.is_empty() {
        return true;
    }
    match (shape, value) {
        (Shape::List(list, item), Value::Array(items)) => {
            (!items.is_empty() || set.member)
                && items.iter().all(|v| {
                    item_pe(list, v)
                        .ok()
                        .and_then(|pe| set.get(&pe))
                        .is_some_and(|s| covered(v, s, item))
                })
        }
        (Shape::Struct(_) | Shape::Map(_) | Shape::Untyped, Value::Object(map)) => {
            (!map.is_empty() || set.member)
                && map.iter().all(|(k, v)| {
                    set.get(&Pe::Field(k.clone())).is_some_and(|s| covered(v, s, &shape.field(k)))
                })
        }
        _ => false,
    }
}

/// Removes from `value` what `last` names and `owned` does not: what an applier set before,
/// stopped setting, and nobody else owns. A part is removed whole when all of it is named in
/// `last` and none of it is owned; a container emptied that way goes too.
fn prune(value: &mut Value, last: &FieldSet, owned: Option<&FieldSet>, shape: &Shape) {
    match (shape, value) {
        (Shape::List(list, item), Value::Array(items)) => {
            items.retain_mut(|v| {
                let Ok(pe) = item_pe(list, v) else { return true };
                let Some(l) = last.get(&pe) else { return true };
                !prune_child(v, l, owned.and_then(|o| o.get(&pe)), item)
            });
        }
        (Shape::Struct(_) | Shape::Map(_) | Shape::Untyped, Value::Object(map)) => {
            map.retain(|k, v| {
                let pe = Pe::Field(k.clone());
                let Some(l) = last.get(&pe) else { return true };
                !prune_child(v, l, owned.and_then(|o| o.get(&pe)), &shape.field(k))
            });
        }
        _ => {}
    }
}

/// Prunes one part; whether it is to go whole.
fn prune_child(
    value: &mut Value,
    last: &FieldSet,
    owned: Option<&FieldSet>,
    shape: &Shape,
) -> bool {
    if owned.is_none() && covered(value, last, shape) {
        return true;
    }
    let was_empty = is_empty_container(Some(value));
    prune(value, last, owned, shape);
    owned.is_none() && !was_empty && is_empty_container(Some(value))
}

/// What a manager's entry is told apart by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManagerKey {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: &'static str,
    pub subresource: String,
}

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: ManagerKey,
    pub api_version: String,
    pub time: Option<String>,
    pub set: FieldSet,
}

/// The entries of an object's `metadata.managedFields`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Managed(pub Vec<Entry>);

impl Managed {
    /// Reads `metadata.managedFields` of `obj` (none: empty).
    pub fn of(obj: &Value) -> Result<Managed, String> {
        match obj["metadata"].get("managedFields") {
            None | Some(Value::Null) => Ok(Managed::default()),
            Some(v) => Managed::decode(v),
        }
    }

    pub fn decode(value: &Value) -> Result<Managed, String> {
        let Value::Array(items) = value else { return Err("must be a list".into()) };
        if items.len() > MAX_ENTRIES {
            return Err(format!("{} entries: at most {MAX_ENTRIES} are kept", items.len()));
        }
        let mut out = Managed::default();
        let mut at: HashMap<ManagerKey, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let text = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            let operation = match item.get("operation").and_then(Value::as_str) {
                Some("Apply") => "Apply",
                Some("Update") => "Update",
                None | Some("") if item.as_object().is_some_and(Map::is_empty) => continue,
                other => {
                    return Err(format!(
                        "[{i}].operation: must be Apply or Update, not {}",
                        other.map_or("nothing".into(), |o| format!("{o:?}"))
                    ));
                }
            };
            if !matches!(item.get("fieldsType").and_then(Value::as_str), None | Some("FieldsV1")) {
                return Err(format!("[{i}].fieldsType: only FieldsV1 is known"));
            }
            let set = match item.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::default(),
                Some(v) => FieldSet::from_json(v).map_err(|e| format!("[{i}].fieldsV1: {e}"))?,
            };
            let key = ManagerKey {
                manager: text("manager"),
                operation,
                subresource: text("subresource"),
            };
            let time = item.get("time").and_then(Value::as_str).map(str::to_owned);
            match at.get(&key) {
                Some(&i) => out.0[i].set.union(&set),
                None => {
                    at.insert(key.clone(), out.0.len());
                    out.0.push(Entry { key, api_version: text("apiVersion"), time, set });
                }
            }
        }
        Ok(out)
    }

    /// Kubernetes' order: Apply before Update, then oldest first, then by manager.
    pub fn encode(&self) -> Value {
        let mut entries: Vec<&Entry> = self.0.iter().filter(|e| !e.set.is_empty()).collect();
        entries.sort_by(|a, b| {
            (a.key.operation, &a.time, &a.key.manager, &a.api_version, &a.key.subresource).cmp(&(
                b.key.operation,
                &b.time,
                &b.key.manager,
                &b.api_version,
                &b.key.subresource,
            ))
        });
        Value::Array(
            entries
                .into_iter()
                .map(|e| {
                    // Empty strings are left out, as Kubernetes' JSON does.
                    let mut m = Map::new();
                    if !e.key.manager.is_empty() {
                        m.insert("manager".into(), json!(e.key.manager));
                    }
                    m.insert("operation".into(), json!(e.key.operation));
                    if !e.api_version.is_empty() {
                        m.insert("apiVersion".into(), json!(e.api_version));
                    }
                    if let Some(t) = &e.time {
                        m.insert("time".into(), json!(t));
                    }
                    m.insert("fieldsType".into(), json!("FieldsV1"));
                    m.insert("fieldsV1".into(), e.set.to_json());
                    if !e.key.subresource.is_empty() {
                        m.insert("subresource".into(), json!(e.key.subresource));
                    }
                    Value::Object(m)
                })
                .collect(),
        )
    }

    fn entry(&self, key: &ManagerKey) -> Option<&Entry> {
        self.0.iter().find(|e| e.key == *key)
    }

    /// Every field someone owns.
    fn owned(&self) -> FieldSet {
        let mut all = FieldSet::default();
        for e in &self.0 {
            all.union(&e.set);
        }
        all
    }

    /// Sets `key`'s fields, stamped `now`.
    fn put(&mut self, key: &ManagerKey, api_version: &str, set: FieldSet, now: i64) {
        self.0.retain(|e| e.key != *key);
        if !set.is_empty() {
            self.0.push(Entry {
                key: key.clone(),
                api_version: api_version.to_owned(),
                time: Some(rfc3339(now)),
                set,
            });
        }
    }

    fn fold_ancient(&mut self, api_version: &str) {
        let mut updates: Vec<usize> = (0..self.0.len())
            .filter(|&i| {
                self.0[i].key.operation == "Update" && self.0[i].key.manager != ANCIENT_CHANGES
            })
            .collect();
        if updates.len() <= MAX_UPDATE_ENTRIES {
            return;
        }
        updates.sort_by(|&a, &b| self.0[a].time.cmp(&self.0[b].time));
        let excess = updates.len() - MAX_UPDATE_ENTRIES + 1;
        let mut folded = FieldSet::default();
        let mut drop: Vec<usize> = updates[..excess].to_vec();
        for &i in &drop {
            folded.union(&self.0[i].set);
        }
        drop.sort_unstable();
        for i in drop.into_iter().rev() {
            self.0.remove(i);
        }
        let key = ManagerKey {
            manager: ANCIENT_CHANGES.into(),
            operation: "Update",
            subresource: String::new(),
        };
        match self.0.iter_mut().find(|e| e.key == key) {
            Some(e) => e.set.union(&folded),
            None => {
                self.0.push(Entry { key, api_version: api_version.into(), time: None, set: folded })
            }
        }
    }
}

/// Who writes: the field manager, and the subresource written through.
#[derive(Debug, Clone)]
pub struct Writer {
    pub manager: String,
    pub subresource: String,
}

/// The fields no manager owns: identity and bookkeeping the server keeps, and what the
/// endpoint written does not change (`status` through the main resource of a kind with a
/// status subresource; everything but `status` through `/status`).
fn ignore(kind: &Kind, subresource: &str, set: &mut FieldSet) {
    set.member = false;
    set.children.remove(&Pe::Field("apiVersion".into()));
    set.children.remove(&Pe::Field("kind".into()));
    if subresource == "status" {
        set.children.retain(|pe, _| *pe == Pe::Field("status".into()));
        return;
    }
    if kind.has_status() {
        set.children.remove(&Pe::Field("status".into()));
    }
    let meta = Pe::Field("metadata".into());
    if let Some(m) = set.children.get_mut(&meta) {
        m.member = false;
        for k in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            m.children.remove(&Pe::Field(k.into()));
        }
        if m.is_empty() {
            set.children.remove(&meta);
        }
    }
}

fn without_managed(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(m) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    out
}

/// The result of a conflict check: per manager, the fields an apply would change.
type Conflicts = Vec<(ManagerKey, String, FieldSet)>;

/// Kubernetes' updater step: the comparison of `old` and `new`; every other manager loses
/// what was removed and, if `force`, what conflicts; without `force`, conflicts are returned.
fn reassign(
    kind: &Kind,
    writer: &Writer,
    key: &ManagerKey,
    old: Option<&Value>,
    new: &Value,
    managed: &mut Managed,
    force: bool,
) -> Result<Comparison, Conflicts> {
    let shape = Shape::of_kind(kind.api_version, kind.kind);
    let mut cmp = compare(old, Some(new), &shape);
    cmp.filter(&|s: &mut FieldSet| ignore(kind, &writer.subresource, s));
    let mut changed = cmp.modified.clone();
    changed.union(&cmp.added);
    let mut conflicts = Conflicts::new();
    for e in &managed.0 {
        if e.key == *key {
            continue;
        }
        let c = e.set.intersection(&changed);
        if !c.is_empty() {
            conflicts.push((e.key.clone(), e.api_version.clone(), c));
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(conflicts);
    }
    for e in managed.0.iter_mut().filter(|e| e.key != *key) {
        if let Some((_, _, c)) = conflicts.iter().find(|(k, _, _)| *k == e.key) {
            e.set = e.set.difference(c);
        }
        e.set = e.set.difference(&cmp.removed);
    }
    managed.0.retain(|e| !e.set.is_empty());
    Ok(cmp)
}

fn conflict_error(conflicts: &Conflicts) -> ApiError {
    let mut causes = Vec::new();
    for (key, api_version, set) in conflicts {
        let mut who = format!("conflict with {:?}", key.manager);
        if !key.subresource.is_empty() {
            who.push_str(&format!(" with subresource {:?}", key.subresource));
        }
        if key.operation == "Update" {
            who.push_str(&format!(" using {api_version}"));
        }
        for path in set.paths() {
            causes.push(Cause {
                reason: "FieldManagerConflict",
                field: path_string(&path),
                message: who.clone(),
            });
        }
    }
    let n = causes.len();
    let detail = if n == 1 {
        format!("{}: {}", causes[0].message, causes[0].field)
    } else {
        let mut by_manager: Vec<(&str, Vec<&str>)> = Vec::new();
        for c in &causes {
            match by_manager.iter_mut().find(|(m, _)| *m == c.message) {
                Some((_, fields)) => fields.push(&c.field),
                None => by_manager.push((&c.message, vec![&c.field])),
            }
        }
        by_manager
            .iter()
            .map(|(who, fields)| {
                let who = who.replacen("conflict with", "conflicts with", 1);
                format!("{who}:\n- {}", fields.join("\n- "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    ApiError::FieldConflicts {
        message: format!(
            "Apply failed with {n} conflict{}: {detail}",
            if n == 1 { "" } else { "s" }
        ),
        causes,
    }
}

/// Records an ordinary write (`Update`) of `old` (none on create) into `new`: the writer
/// takes over every field it added or changed, fields it removed leave every manager. The
/// base is the stored managers, or the ones the request sent when it changed them (an empty
/// entry clears them all, and then nothing is recorded for this write).
pub fn track_update(
    kind: &Kind,
    writer: Option<&Writer>,
    old: Option<&Value>,
    new: &mut Value,
    requested: Option<&Value>,
    now: i64,
) -> ApiResult<()> {
    let stored = old
        .map(Managed::of)
        .transpose()
        .map_err(|e| invalid_managed(kind, new, e))?
        .unwrap_or_default();
    let given = match requested {
        Some(v)
            if !v.is_null()
                && old.is_none_or(|o| o["metadata"].get("managedFields") != Some(v)) =>
        {
            let m = Managed::decode(v).map_err(|e| invalid_managed(kind, new, e))?;
            if m.0.is_empty() {
                set_managed(new, &Managed::default());
                return Ok(());
            }
            Some(m)
        }
        _ => None,
    };
    let Some(writer) = writer else {
        set_managed(new, given.as_ref().unwrap_or(&stored));
        return Ok(());
    };
    let mut managed = given.unwrap_or_else(|| stored.clone());
    let key = ManagerKey {
        manager: writer.manager.clone(),
        operation: "Update",
        subresource: writer.subresource.clone(),
    };
    // A status write changes the status alone (and only its fields are tracked): compare that
    // much, not the whole object.
    let status_only = |obj: &Value| {
        let mut only = Map::new();
        if let Some(status) = obj.get("status") {
            only.insert("status".into(), status.clone());
        }
        Value::Object(only)
    };
    let (old_plain, new_plain) = if writer.subresource == "status" {
        (old.map(status_only), status_only(new))
    } else {
        (old.map(without_managed), without_managed(new))
    };
    // Forced: an ordinary write never conflicts.
    let cmp = reassign(kind, writer, &key, old_plain.as_ref(), &new_plain, &mut managed, true)
        .unwrap_or_default();
    let mut set = managed.entry(&key).map(|e| e.set.clone()).unwrap_or_default();
    set = set.difference(&cmp.removed);
    set.union(&cmp.modified);
    set.union(&cmp.added);
    let changed = managed.entry(&key).is_none_or(|e| e.set != set);
    if changed {
        managed.put(&key, kind.api_version, set, now);
    }
    managed.fold_ancient(kind.api_version);
    // An unchanged object keeps its managers as they were (no new timestamp, no write).
    if old_plain.as_ref() == Some(&new_plain) && same_sets(&managed, &stored) {
        set_managed(new, &stored);
    } else {
        set_managed(new, &managed);
    }
    Ok(())
}

fn same_sets(a: &Managed, b: &Managed) -> bool {
    a.0.len() == b.0.len() && a.0.iter().all(|e| b.entry(&e.key).is_some_and(|o| o.set == e.set))
}

/// Server-side apply of `config` by `writer` to `live` (none: the object is created). Returns
/// the object to store (before defaulting), with its managers.
pub fn apply(
    kind: &Kind,
    writer: &Writer,
    live: Option<&Value>,
    config: &Value,
    force: bool,
    now: i64,
) -> ApiResult<Value> {
    let name = config["metadata"]["name"].as_str().unwrap_or_default();
    if config["metadata"].get("managedFields").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::BadRequest("metadata.managedFields must be nil".into()));
    }
    let shape = Shape::of_kind(kind.api_version, kind.kind);
    let mut applied = field_set(config, &shape).map_err(|e| {
        ApiError::invalid(kind, name, vec![Cause::invalid("patch", &Value::Null, &e)])
    })?;
    ignore(kind, &writer.subresource, &mut applied);
    let mut managed = live
        .map(Managed::of)
        .transpose()
        .map_err(|e| invalid_managed(kind, config, e))?
        .unwrap_or_default();
    let stored = managed.clone();
    let key = ManagerKey {
        manager: writer.manager.clone(),
        operation: "Apply",
        subresource: writer.subresource.clone(),
    };
    let live_plain = live.map(without_managed);
    let merged = merge(live_plain.as_ref(), config, &shape);
    reassign(kind, writer, &key, live_plain.as_ref(), &merged, &mut managed, force)
        .map_err(|c| conflict_error(&c))?;
    let last = managed.entry(&key).map(|e| e.set.clone()).unwrap_or_default();
    managed.0.retain(|e| e.key != key);
    let mut owned = managed.owned();
    owned.union(&applied);
    let mut result = merged;
    if !last.is_empty() {
        prune(&mut result, &last.difference(&applied), Some(&owned), &shape);
    }
    managed.put(&key, kind.api_version, applied, now);
    reassign(kind, writer, &key, live_plain.as_ref(), &result, &mut managed, true)
        .map_err(|c| conflict_error(&c))?;
    let keep = live_plain.as_ref() == Some(&result) && same_sets(&managed, &stored);
    // Written even when empty, so that the caller takes these managers as they are.
    let encoded = if keep { stored.encode() } else { managed.encode() };
    if let Some(meta) = result.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), encoded);
    }
    Ok(result)
}

fn invalid_managed(kind: &Kind, obj: &Value, message: String) -> ApiError {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    ApiError::invalid(
        kind,
        name,
        vec![Cause {
            reason: "FieldValueInvalid",
            field: "metadata.managedFields".into(),
            message: format!("Invalid value: {message}"),
        }],
    )
}

fn set_managed(obj: &mut Value, managed: &Managed) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let encoded = managed.encode();
    if encoded.as_array().is_some_and(Vec::is_empty) {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), encoded);
    }
}

/// A field manager name from the request: `fieldManager`, else the User-Agent up to its
/// first `/` (as Kubernetes derives it), at most [`MAX_MANAGER_LENGTH`] characters.
pub fn manager_name(
    field_manager: Option<&str>,
    user_agent: Option<&str>,
) -> Result<String, String> {
    if let Some(m) = field_manager {
        if m.chars().count() > MAX_MANAGER_LENGTH {
            return Err(format!(
                "fieldManager: Too long: may not be more than {MAX_MANAGER_LENGTH} bytes"
            ));
        }
        if m.chars().any(|c| c.is_control()) {
            return Err("fieldManager: Invalid value: must consist of printable characters".into());
        }
        return Ok(m.to_owned());
    }
    let agent = user_agent.unwrap_or_default();
    let prefix: String = agent
        .split('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MANAGER_LENGTH)
        .collect();
    Ok(prefix)
}

#[cfg(test)]
mod tests;
