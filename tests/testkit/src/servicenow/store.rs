//! The simulator's in-memory instance: table definitions (with extension), records keyed by
//! sys_id, and two ordered indexes per table so keyset queries are O(log n + page).
//!
//! A record lives once, under its sys_id, with the most specific table as its class; it is indexed
//! in its class table and every ancestor, which is how a `customer_contact` shows up in `sys_user`
//! with the same sys_id.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use super::query::{parse_utc, FieldType, Kind, Plan, DATE_FORMAT};

/// A record's (or a patch's) fields: column name → string value.
pub type Fields = BTreeMap<String, String>;

/// The table that holds one row per audited delete.
pub const AUDIT_DELETE_TABLE: &str = "sys_audit_delete";

/// Columns every table has, with their types.
const SYSTEM_COLUMNS: &[(&str, Kind)] = &[
    ("sys_id", Kind::Text),
    ("sys_class_name", Kind::Text),
    ("sys_created_on", Kind::Date),
    ("sys_created_by", Kind::Text),
    ("sys_updated_on", Kind::Date),
    ("sys_updated_by", Kind::Text),
    ("sys_mod_count", Kind::Integer),
];

/// How a table is defined: its parent, columns with types, and delete auditing.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Table name, e.g. `customer_contact`.
    pub name: String,
    /// The table it extends, e.g. `sys_user`.
    pub extends: Option<String>,
    /// `no_audit_delete=true`: deletes leave no `sys_audit_delete` row.
    pub no_audit_delete: bool,
    /// Declared columns besides the system ones (undeclared columns appear when a record uses
    /// them, typed as strings).
    pub columns: BTreeMap<String, FieldType>,
    /// The column whose value is the record's display value (`name`, `number`, …).
    pub display_field: Option<String>,
}

impl TableDef {
    /// A table with only the system columns.
    pub fn new(name: &str) -> TableDef {
        TableDef {
            name: name.to_string(),
            extends: None,
            no_audit_delete: false,
            columns: BTreeMap::new(),
            display_field: None,
        }
    }

    /// Makes this table extend `parent` (records appear in the parent with the same sys_id).
    pub fn extends(mut self, parent: &str) -> TableDef {
        self.extends = Some(parent.to_string());
        self
    }

    /// Marks the table `no_audit_delete`.
    pub fn no_audit_delete(mut self) -> TableDef {
        self.no_audit_delete = true;
        self
    }

    /// Declares a reference column pointing at `table`.
    pub fn reference(mut self, column: &str, table: &str) -> TableDef {
        self.columns
            .insert(column.to_string(), FieldType::Reference(table.to_string()));
        self
    }

    /// Declares a date-time column (UTC `yyyy-MM-dd HH:mm:ss`, compared chronologically).
    pub fn date(mut self, column: &str) -> TableDef {
        self.columns.insert(column.to_string(), FieldType::DateTime);
        self
    }

    /// Declares an integer column.
    pub fn integer(mut self, column: &str) -> TableDef {
        self.columns.insert(column.to_string(), FieldType::Integer);
        self
    }

    /// Declares string columns.
    pub fn strings(mut self, columns: &[&str]) -> TableDef {
        for c in columns {
            self.columns.insert(c.to_string(), FieldType::String);
        }
        self
    }

    /// Sets the display column.
    pub fn display(mut self, column: &str) -> TableDef {
        self.display_field = Some(column.to_string());
        self
    }
}

/// The tables a new simulator knows: `sys_user` ← `customer_contact`, `core_company` ←
/// `customer_account`, `incident`, `problem`, `sys_user_group`, and `sys_audit_delete`.
pub fn default_tables() -> Vec<TableDef> {
    vec![
        TableDef::new("sys_user")
            .display("name")
            .strings(&[
                "name",
                "user_name",
                "first_name",
                "last_name",
                "email",
                "active",
            ])
            .reference("company", "core_company")
            .reference("manager", "sys_user")
            .reference("department", "cmn_department")
            .reference("location", "cmn_location"),
        TableDef::new("customer_contact")
            .extends("sys_user")
            .reference("account", "customer_account"),
        TableDef::new("core_company")
            .display("name")
            .strings(&["name", "customer", "vendor"]),
        TableDef::new("customer_account")
            .extends("core_company")
            .strings(&["number"])
            .reference("account_parent", "customer_account"),
        TableDef::new("sys_user_group")
            .display("name")
            .strings(&["name"]),
        task_table("incident"),
        task_table("problem"),
        TableDef::new(AUDIT_DELETE_TABLE)
            .strings(&["tablename", "documentkey", "display_value", "payload"])
            .no_audit_delete(),
    ]
}

fn task_table(name: &str) -> TableDef {
    TableDef::new(name)
        .display("number")
        .strings(&[
            "number",
            "state",
            "short_description",
            "description",
            "active",
        ])
        .reference("caller_id", "sys_user")
        .reference("opened_by", "sys_user")
        .reference("assigned_to", "sys_user")
        .reference("resolved_by", "sys_user")
        .reference("closed_by", "sys_user")
        .reference("assignment_group", "sys_user_group")
        .reference("company", "core_company")
        .reference("cmdb_ci", "cmdb_ci")
        .date("opened_at")
        .date("resolved_at")
        .date("closed_at")
}

/// Which table name a `sys_audit_delete` row carries for a record of a child table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditName {
    /// The record's class, the most specific table (`customer_contact`). The default.
    #[default]
    RecordClass,
    /// The table the delete was made through (`sys_user` if deleted through `sys_user`).
    DeletedThrough,
}

/// Why a store operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No such table.
    UnknownTable(String),
    /// No record with this sys_id in this table (or its children).
    NotFound(String),
    /// A record with this sys_id already exists.
    DuplicateSysId(String),
    /// A sys_id longer than 32 bytes.
    BadSysId(String),
    /// A date column got a value that is not `yyyy-MM-dd HH:mm:ss`.
    BadDate {
        /// The column.
        column: String,
        /// The value given.
        value: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::UnknownTable(t) => write!(f, "Invalid table {t}"),
            StoreError::NotFound(id) => write!(f, "No Record found: {id}"),
            StoreError::DuplicateSysId(id) => write!(f, "duplicate sys_id {id}"),
            StoreError::BadSysId(id) => write!(f, "sys_id {id:?} is longer than 32 bytes"),
            StoreError::BadDate { column, value } => {
                write!(f, "{column}: {value:?} is not yyyy-MM-dd HH:mm:ss")
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// One stored record, packed: its values in one text buffer, column names shared between
/// records (three allocations a record instead of two per field).
#[derive(Debug, Clone)]
pub struct Stored {
    /// The most specific table (`sys_class_name`).
    pub class: Arc<str>,
    /// Column names in order, each with the end of its value in `text`.
    columns: Box<[(Arc<str>, u32)]>,
    text: Box<str>,
}

impl Stored {
    fn pack(class: Arc<str>, fields: &Fields, names: &mut HashSet<Arc<str>>) -> Stored {
        let mut text = String::with_capacity(fields.values().map(String::len).sum());
        let mut columns = Vec::with_capacity(fields.len());
        for (name, value) in fields {
            text.push_str(value);
            let end = u32::try_from(text.len()).unwrap_or(u32::MAX);
            columns.push((intern(names, name), end));
        }
        Stored {
            class,
            columns: columns.into_boxed_slice(),
            text: text.into_boxed_str(),
        }
    }

    /// A column's value, "" when absent.
    pub fn get(&self, column: &str) -> &str {
        match self
            .columns
            .binary_search_by(|(name, _)| name.as_ref().cmp(column))
        {
            Ok(i) => self.value_at(i),
            Err(_) => "",
        }
    }

    fn value_at(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.columns[i - 1].1 };
        self.text
            .get(start as usize..self.columns[i].1 as usize)
            .unwrap_or("")
    }

    /// Whether the record has a value (maybe empty) for the column.
    pub fn has(&self, column: &str) -> bool {
        self.columns
            .binary_search_by(|(name, _)| name.as_ref().cmp(column))
            .is_ok()
    }

    /// The record's fields.
    pub fn fields(&self) -> Fields {
        (0..self.columns.len())
            .map(|i| (self.columns[i].0.to_string(), self.value_at(i).to_string()))
            .collect()
    }
}

fn intern(names: &mut HashSet<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(known) = names.get(name) {
        return known.clone();
    }
    let new: Arc<str> = Arc::from(name);
    names.insert(new.clone());
    new
}

/// A sys_id stored inline (a sys_id is at most 32 bytes) as two big-endian integers, so index
/// comparisons neither chase pointers nor call memcmp. Orders like the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdKey {
    high: u128,
    low: u128,
    len: u8,
}

impl IdKey {
    const MIN: IdKey = IdKey {
        high: 0,
        low: 0,
        len: 0,
    };
    const MAX: IdKey = IdKey {
        high: u128::MAX,
        low: u128::MAX,
        len: u8::MAX,
    };

    /// The key of a sys_id, if it is at most 32 bytes.
    pub fn new(sys_id: &str) -> Option<IdKey> {
        (sys_id.len() <= 32).then(|| IdKey::truncated(sys_id))
    }

    /// The key of the first 32 bytes (never above the full string's place in the order).
    fn truncated(text: &str) -> IdKey {
        let n = text.len().min(32);
        let mut bytes = [0u8; 32];
        bytes[..n].copy_from_slice(&text.as_bytes()[..n]);
        let (high, low) = bytes.split_at(16);
        IdKey {
            high: u128::from_be_bytes(high.try_into().unwrap_or([0; 16])),
            low: u128::from_be_bytes(low.try_into().unwrap_or([0; 16])),
            len: n as u8,
        }
    }
}

/// Per-table indexes over the table's records and its children's.
#[derive(Debug, Default)]
struct Indexes {
    /// (sys_updated_on as Unix seconds, sys_id).
    by_updated: BTreeSet<(i64, IdKey)>,
    by_id: BTreeSet<IdKey>,
}

/// What a write needs from the outside: the current time and acting user.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// Canonical `yyyy-MM-dd HH:mm:ss` UTC.
    pub now: String,
    /// The acting user (sys_created_by / sys_updated_by).
    pub user: String,
}

/// A page of query results before ACLs.
#[derive(Debug)]
pub struct Window<'a> {
    /// The window's records in order.
    pub rows: Vec<&'a Stored>,
    /// All matches (only when counting was asked for).
    pub total: Option<usize>,
    /// Whether matches exist beyond this window.
    pub more: bool,
    /// Index entries visited (to prove a query did not scan the table).
    pub examined: usize,
}

/// The in-memory instance.
#[derive(Debug)]
pub struct Store {
    defs: HashMap<String, TableDef>,
    /// Columns each table has of its own (declared + system for roots + seen in records).
    own_columns: HashMap<String, BTreeMap<String, FieldType>>,
    records: HashMap<IdKey, Stored>,
    indexes: HashMap<String, Indexes>,
    /// Column names, shared by the records.
    names: HashSet<Arc<str>>,
    /// `glide.ui.audit_deleted_tables`: `sys_*` tables whose deletes are audited.
    pub audited_sys_tables: BTreeSet<String>,
    /// Table name written in audit rows for child records.
    pub audit_name: AuditName,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(default_tables())
    }
}

impl Store {
    /// A store with these tables defined.
    pub fn new(tables: Vec<TableDef>) -> Store {
        let mut store = Store {
            defs: HashMap::new(),
            own_columns: HashMap::new(),
            records: HashMap::new(),
            names: HashSet::new(),
            indexes: HashMap::new(),
            audited_sys_tables: ["sys_user".to_string()].into_iter().collect(),
            audit_name: AuditName::default(),
        };
        for def in tables {
            store.define(def);
        }
        store
    }

    /// Adds or replaces a table definition (existing records stay).
    pub fn define(&mut self, def: TableDef) {
        let columns = self.own_columns.entry(def.name.clone()).or_default();
        for (name, kind) in SYSTEM_COLUMNS {
            columns.insert(name.to_string(), type_of(*kind));
        }
        for (name, t) in &def.columns {
            columns.insert(name.clone(), t.clone());
        }
        self.indexes.entry(def.name.clone()).or_default();
        self.defs.insert(def.name.clone(), def);
    }

    /// Whether the table exists.
    pub fn has_table(&self, table: &str) -> bool {
        self.defs.contains_key(table)
    }

    /// The table and its ancestors, most specific first (bounded against cycles).
    pub fn chain(&self, table: &str) -> Vec<String> {
        let mut chain = vec![table.to_string()];
        let mut current = table;
        while let Some(parent) = self.defs.get(current).and_then(|d| d.extends.as_deref()) {
            if chain.iter().any(|t| t == parent) || chain.len() > 32 {
                break;
            }
            chain.push(parent.to_string());
            current = parent;
        }
        chain
    }

    /// The table's columns as a query sees them: its own and its ancestors'.
    pub fn columns(&self, table: &str) -> BTreeMap<String, FieldType> {
        let mut all = BTreeMap::new();
        for t in self.chain(table).iter().rev() {
            if let Some(cols) = self.own_columns.get(t) {
                all.extend(cols.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        all
    }

    /// The type of a column of `table`, following dot-walks through reference columns
    /// (`caller_id.company.name`). `None` for unknown columns.
    pub fn column_type(&self, table: &str, column: &str) -> Option<FieldType> {
        let mut current = table.to_string();
        let mut parts = column.split('.').peekable();
        while let Some(part) = parts.next() {
            let kind = self.columns(&current).get(part).cloned()?;
            if parts.peek().is_none() {
                return Some(kind);
            }
            match kind {
                FieldType::Reference(target) => current = target,
                _ => return None,
            }
        }
        None
    }

    /// A column's value, following dot-walks ("" through an empty or dangling reference).
    pub fn value<'a>(&'a self, record: &'a Stored, column: &str) -> &'a str {
        let mut current = record;
        let mut parts = column.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                return current.get(part);
            }
            match self.get(current.get(part)) {
                Some(next) => current = next,
                None => return "",
            }
        }
        ""
    }

    /// A record by sys_id, whatever its class.
    pub fn get(&self, sys_id: &str) -> Option<&Stored> {
        self.records.get(&IdKey::new(sys_id)?)
    }

    /// A record by sys_id if it belongs to `table` (its class or a child of it).
    pub fn get_in(&self, table: &str, sys_id: &str) -> Option<&Stored> {
        self.get(sys_id)
            .filter(|r| self.chain(&r.class).iter().any(|t| t == table))
    }

    /// Number of records whose class is `table` or one of its children.
    pub fn count(&self, table: &str) -> usize {
        self.indexes.get(table).map_or(0, |i| i.by_id.len())
    }

    /// Inserts a record into `table` (created if unknown). System columns are filled in unless
    /// given: sys_id (random), sys_created_on/sys_updated_on (`stamp.now`), sys_created_by/
    /// sys_updated_by (`stamp.user`), sys_mod_count 0; sys_class_name is always `table`.
    pub fn insert(
        &mut self,
        table: &str,
        fields: Fields,
        stamp: &Stamp,
    ) -> Result<String, StoreError> {
        let mut info = self.prepare(table);
        self.insert_with(&mut info, fields, stamp)
    }

    /// Inserts many records into `table`, looking the table up once.
    pub fn insert_many(
        &mut self,
        table: &str,
        records: impl IntoIterator<Item = Fields>,
        stamp: &Stamp,
    ) -> Result<Vec<String>, StoreError> {
        let mut info = self.prepare(table);
        records
            .into_iter()
            .map(|fields| self.insert_with(&mut info, fields, stamp))
            .collect()
    }

    /// Creates the table if unknown and returns its chain and columns.
    fn prepare(&mut self, table: &str) -> TableInfo {
        if !self.has_table(table) {
            self.define(TableDef::new(table));
        }
        TableInfo {
            name: Arc::from(table),
            chain: self.chain(table),
            columns: self.columns(table),
        }
    }

    fn insert_with(
        &mut self,
        info: &mut TableInfo,
        mut fields: Fields,
        stamp: &Stamp,
    ) -> Result<String, StoreError> {
        let sys_id = match fields.get("sys_id").filter(|s| !s.is_empty()) {
            Some(id) => id.clone(),
            None => random_sys_id(),
        };
        let Some(key) = IdKey::new(&sys_id) else {
            return Err(StoreError::BadSysId(sys_id));
        };
        if self.records.contains_key(&key) {
            return Err(StoreError::DuplicateSysId(sys_id));
        }
        fields.insert("sys_id".into(), sys_id.clone());
        fields.insert("sys_class_name".into(), info.name.to_string());
        default_field(&mut fields, "sys_created_on", &stamp.now);
        default_field(&mut fields, "sys_updated_on", &stamp.now);
        default_field(&mut fields, "sys_created_by", &stamp.user);
        default_field(&mut fields, "sys_updated_by", &stamp.user);
        default_field(&mut fields, "sys_mod_count", "0");
        canonical_dates(&info.columns, &mut fields)?;
        self.learn_columns(info, &fields);
        index(
            &mut self.indexes,
            &info.chain,
            key,
            &fields["sys_updated_on"],
        );
        let stored = Stored::pack(info.name.clone(), &fields, &mut self.names);
        self.records.insert(key, stored);
        Ok(sys_id)
    }

    /// Changes fields of a record of `table` (or a child). When a value actually changes,
    /// sys_updated_on becomes `stamp.now` (unless the patch sets it), sys_mod_count goes up by
    /// one and sys_updated_by becomes `stamp.user` (unless set). Returns whether anything changed.
    pub fn update(
        &mut self,
        table: &str,
        sys_id: &str,
        mut patch: Fields,
        stamp: &Stamp,
    ) -> Result<bool, StoreError> {
        let class = self.member_class(table, sys_id)?;
        patch.remove("sys_id");
        patch.remove("sys_class_name");
        let mut info = self.prepare(&class);
        canonical_dates(&info.columns, &mut patch)?;
        let key = IdKey::new(sys_id).expect("a member's sys_id fits");
        let record = &self.records[&key];
        let changed = patch.iter().any(|(k, v)| {
            if record.has(k) {
                record.get(k) != v
            } else {
                !v.is_empty()
            }
        });
        if !changed {
            return Ok(false);
        }
        let mods = record.get("sys_mod_count").parse::<u64>().unwrap_or(0) + 1;
        default_field(&mut patch, "sys_updated_on", &stamp.now);
        default_field(&mut patch, "sys_updated_by", &stamp.user);
        default_field(&mut patch, "sys_mod_count", &mods.to_string());
        let old_updated = record.get("sys_updated_on").to_string();
        let mut fields = record.fields();
        self.learn_columns(&mut info, &patch);
        self.unindex(&class, key, &old_updated);
        fields.extend(patch);
        let stored = Stored::pack(info.name.clone(), &fields, &mut self.names);
        index(
            &mut self.indexes,
            &info.chain,
            key,
            &fields["sys_updated_on"],
        );
        self.records.insert(key, stored);
        Ok(true)
    }

    /// Deletes a record of `table` (or a child). Writes a `sys_audit_delete` row unless `audit`
    /// is false, the class is `no_audit_delete`, or it is a `sys_*` table not in
    /// [`Store::audited_sys_tables`]. Returns the audit row's sys_id if one was written.
    pub fn delete(
        &mut self,
        table: &str,
        sys_id: &str,
        stamp: &Stamp,
        audit: bool,
    ) -> Result<Option<String>, StoreError> {
        let class = self.member_class(table, sys_id)?;
        let key = IdKey::new(sys_id).expect("a member's sys_id fits");
        let record = self.records.remove(&key).expect("member record exists");
        self.unindex(&class, key, record.get("sys_updated_on"));
        if !audit || !self.audits_deletes(&class) {
            return Ok(None);
        }
        let name = match self.audit_name {
            AuditName::RecordClass => class.as_str(),
            AuditName::DeletedThrough => table,
        };
        let row = self.audit_row(name, &record, stamp);
        self.insert(AUDIT_DELETE_TABLE, row, stamp).map(Some)
    }

    fn audits_deletes(&self, class: &str) -> bool {
        let def = self.defs.get(class);
        if def.is_some_and(|d| d.no_audit_delete) {
            return false;
        }
        !class.starts_with("sys_") || self.audited_sys_tables.contains(class)
    }

    fn audit_row(&self, table: &str, record: &Stored, stamp: &Stamp) -> Fields {
        let mut row = Fields::new();
        row.insert("tablename".into(), table.to_string());
        row.insert("documentkey".into(), record.get("sys_id").to_string());
        row.insert("display_value".into(), self.display_value(record));
        row.insert("payload".into(), payload_xml(table, record));
        row.insert("sys_created_on".into(), stamp.now.clone());
        row
    }

    /// The record's display value (its class's display column, else `name`, else `number`).
    pub fn display_value(&self, record: &Stored) -> String {
        let declared = self
            .chain(&record.class)
            .iter()
            .find_map(|t| self.defs.get(t).and_then(|d| d.display_field.clone()));
        let column = declared.unwrap_or_else(|| {
            if record.has("name") {
                "name".into()
            } else {
                "number".into()
            }
        });
        record.get(&column).to_string()
    }

    fn member_class(&self, table: &str, sys_id: &str) -> Result<String, StoreError> {
        if !self.has_table(table) {
            return Err(StoreError::UnknownTable(table.to_string()));
        }
        self.get_in(table, sys_id)
            .map(|r| r.class.to_string())
            .ok_or_else(|| StoreError::NotFound(sys_id.to_string()))
    }

    fn learn_columns(&mut self, info: &mut TableInfo, fields: &Fields) {
        for name in fields.keys() {
            if !info.columns.contains_key(name) {
                info.columns.insert(name.clone(), FieldType::String);
                self.own_columns
                    .entry(info.name.to_string())
                    .or_default()
                    .insert(name.clone(), FieldType::String);
            }
        }
    }

    fn unindex(&mut self, class: &str, key: IdKey, updated: &str) {
        let secs = unix_seconds(updated);
        for t in self.chain(class) {
            if let Some(idx) = self.indexes.get_mut(&t) {
                idx.by_updated.remove(&(secs, key));
                idx.by_id.remove(&key);
            }
        }
    }

    /// Runs a checked query on `table`: matches sorted by the plan, `offset` skipped, at most
    /// `limit` kept. Keyset-friendly orders (`sys_updated_on[,sys_id]`, `sys_id`, none) walk an
    /// index from the query's lower bound and stop early unless `count` is asked for.
    pub fn select(
        &self,
        table: &str,
        plan: &Plan,
        offset: usize,
        limit: usize,
        count: bool,
    ) -> Result<Window<'_>, StoreError> {
        let idx = self
            .indexes
            .get(table)
            .filter(|_| self.has_table(table))
            .ok_or_else(|| StoreError::UnknownTable(table.to_string()))?;
        let walk = index_walk(plan);
        let (lower, upper) = plan.range_of(walk.column());
        let ids = walk_ids(idx, walk, lower, upper);
        let mut window = Window {
            rows: Vec::new(),
            total: None,
            more: false,
            examined: 0,
        };
        if walk == Walk::Sorted {
            self.select_sorted(ids, plan, offset, limit, &mut window);
        } else {
            self.select_streaming(ids, plan, offset, limit, count, &mut window);
        }
        if !count {
            window.total = None;
        }
        Ok(window)
    }

    fn matching<'a>(&'a self, plan: &Plan, key: &IdKey) -> Option<&'a Stored> {
        let record = self.records.get(key)?;
        plan.matches(&|c| self.value(record, c)).then_some(record)
    }

    fn select_streaming<'a>(
        &'a self,
        ids: Box<dyn Iterator<Item = &'a IdKey> + 'a>,
        plan: &Plan,
        offset: usize,
        limit: usize,
        count: bool,
        window: &mut Window<'a>,
    ) {
        let mut matched = 0usize;
        for id in ids {
            window.examined += 1;
            let Some(record) = self.matching(plan, id) else {
                continue;
            };
            matched += 1;
            if matched > offset && window.rows.len() < limit {
                window.rows.push(record);
            } else if matched > offset.saturating_add(limit) {
                window.more = true;
                if !count {
                    break;
                }
            }
        }
        window.total = Some(matched);
    }

    fn select_sorted<'a>(
        &'a self,
        ids: Box<dyn Iterator<Item = &'a IdKey> + 'a>,
        plan: &Plan,
        offset: usize,
        limit: usize,
        window: &mut Window<'a>,
    ) {
        let mut all: Vec<&Stored> = Vec::new();
        for id in ids {
            window.examined += 1;
            all.extend(self.matching(plan, id));
        }
        all.sort_by(|a, b| plan.compare(&|c| self.value(a, c), &|c| self.value(b, c)));
        window.total = Some(all.len());
        window.more = all.len() > offset.saturating_add(limit);
        window.rows = all.into_iter().skip(offset).take(limit).collect();
    }
}

/// How a query's records are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// The (sys_updated_on, sys_id) index, forward or backward: already in the asked order.
    Updated { reverse: bool },
    /// The sys_id index, forward or backward.
    Id { reverse: bool },
    /// Read the (bounded) range, then sort.
    Sorted,
}

impl Walk {
    fn column(self) -> &'static str {
        match self {
            Walk::Id { .. } => "sys_id",
            _ => "sys_updated_on",
        }
    }
}

/// Picks an index whose order is the plan's order (sys_id ascending is the implicit tie-break).
fn index_walk(plan: &Plan) -> Walk {
    let mut keys: Vec<(&str, bool)> = plan
        .order
        .iter()
        .map(|(k, _)| (k.field.as_str(), k.descending))
        .collect();
    if keys.last() == Some(&("sys_id", false)) {
        keys.pop();
    }
    match keys.as_slice() {
        [] => Walk::Id { reverse: false },
        [("sys_id", true)] => Walk::Id { reverse: true },
        [("sys_updated_on", false)] => Walk::Updated { reverse: false },
        [("sys_updated_on", true), ("sys_id", true)] => Walk::Updated { reverse: true },
        _ => Walk::Sorted,
    }
}

/// The sys_ids in an index between two inclusive bounds, in the walk's order.
fn walk_ids<'a>(
    idx: &'a Indexes,
    walk: Walk,
    lower: Option<String>,
    upper: Option<String>,
) -> Box<dyn Iterator<Item = &'a IdKey> + 'a> {
    match walk {
        Walk::Id { reverse } => {
            // A lower bound may be cut to 32 bytes (it only gets lower); an upper one may not.
            let lo = lower.map(|l| IdKey::truncated(&l));
            let hi = upper.and_then(|h| IdKey::new(&h));
            if lo.zip(hi).is_some_and(|(lo, hi)| lo > hi) {
                return Box::new(std::iter::empty());
            }
            let range = idx.by_id.range((bound(lo), bound(hi)));
            if reverse {
                Box::new(range.rev())
            } else {
                Box::new(range)
            }
        }
        Walk::Updated { reverse } => updated_ids(idx, lower, upper, reverse),
        Walk::Sorted => updated_ids(idx, lower, upper, false),
    }
}

fn bound<T>(value: Option<T>) -> Bound<T> {
    value.map_or(Bound::Unbounded, Bound::Included)
}

fn updated_ids<'a>(
    idx: &'a Indexes,
    lower: Option<String>,
    upper: Option<String>,
    reverse: bool,
) -> Box<dyn Iterator<Item = &'a IdKey> + 'a> {
    let lo = lower.map(|l| (unix_seconds(&l), IdKey::MIN));
    let hi = upper.map(|h| (unix_seconds(&h), IdKey::MAX));
    if lo.zip(hi).is_some_and(|(lo, hi)| lo > hi) {
        return Box::new(std::iter::empty());
    }
    let ids = idx
        .by_updated
        .range((bound(lo), bound(hi)))
        .map(|(_, id)| id);
    if reverse {
        Box::new(ids.rev())
    } else {
        Box::new(ids)
    }
}

/// Seconds since 1970 of a canonical UTC date ("" and garbage sort first).
fn unix_seconds(date: &str) -> i64 {
    fast_date(date)
        .or_else(|| parse_utc(date))
        .map_or(i64::MIN, |d| d.and_utc().timestamp())
}

/// Reads `dddd-dd-dd dd:dd:dd` without a format parser (the hot path of bulk inserts).
fn fast_date(value: &str) -> Option<chrono::NaiveDateTime> {
    if !is_canonical(value) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| value[r].parse::<u32>().ok();
    let date = chrono::NaiveDate::from_ymd_opt(n(0..4)? as i32, n(5..7)?, n(8..10)?)?;
    date.and_hms_opt(n(11..13)?, n(14..16)?, n(17..19)?)
}

/// A table looked up once for a batch of writes.
struct TableInfo {
    name: Arc<str>,
    chain: Vec<String>,
    columns: BTreeMap<String, FieldType>,
}

fn index(indexes: &mut HashMap<String, Indexes>, chain: &[String], key: IdKey, updated: &str) {
    let secs = unix_seconds(updated);
    for t in chain {
        let idx = indexes.entry(t.clone()).or_default();
        idx.by_updated.insert((secs, key));
        idx.by_id.insert(key);
    }
}

/// Checks date columns and writes them as `yyyy-MM-dd HH:mm:ss`.
fn canonical_dates(
    columns: &BTreeMap<String, FieldType>,
    fields: &mut Fields,
) -> Result<(), StoreError> {
    for (name, value) in fields.iter_mut() {
        if value.is_empty() || columns.get(name) != Some(&FieldType::DateTime) {
            continue;
        }
        let Some(date) = fast_date(value).or_else(|| parse_utc(value)) else {
            return Err(StoreError::BadDate {
                column: name.clone(),
                value: value.clone(),
            });
        };
        if !is_canonical(value) {
            *value = date.format(DATE_FORMAT).to_string();
        }
    }
    Ok(())
}

/// Whether a parsable date is already written `dddd-dd-dd dd:dd:dd`.
fn is_canonical(value: &str) -> bool {
    value.len() == 19
        && value.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        })
}

fn type_of(kind: Kind) -> FieldType {
    match kind {
        Kind::Date => FieldType::DateTime,
        Kind::Integer => FieldType::Integer,
        Kind::Text => FieldType::String,
    }
}

fn default_field(fields: &mut Fields, name: &str, value: &str) {
    match fields.get_mut(name) {
        Some(v) if v.is_empty() => *v = value.to_string(),
        Some(_) => {}
        None => {
            fields.insert(name.to_string(), value.to_string());
        }
    }
}

/// A new sys_id: 32 lowercase hex digits.
pub fn random_sys_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The deleted record as XML, the way `sys_audit_delete.payload` keeps it.
fn payload_xml(table: &str, record: &Stored) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><record_update table=\"{table}\"><{table}>"
    );
    for (name, value) in &record.fields() {
        xml.push_str(&format!("<{name}>{}</{name}>", xml_escape(value)));
    }
    xml.push_str(&format!("</{table}></record_update>"));
    xml
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::super::query::{parse, Columns};
    use super::*;
    use chrono::FixedOffset;

    struct TableColumns(BTreeMap<String, FieldType>);
    impl Columns for TableColumns {
        fn field_type(&self, field: &str) -> Option<FieldType> {
            self.0.get(field).cloned()
        }
    }

    fn stamp(now: &str) -> Stamp {
        Stamp {
            now: now.into(),
            user: "admin".into(),
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn plan(store: &Store, table: &str, q: &str) -> Plan {
        parse(q).plan(
            &TableColumns(store.columns(table)),
            FixedOffset::east_opt(0).unwrap(),
        )
    }

    fn ids(window: &Window<'_>) -> Vec<String> {
        window
            .rows
            .iter()
            .map(|r| r.get("sys_id").to_string())
            .collect()
    }

    #[test]
    fn id_keys_order_like_their_strings() {
        let words = ["", "a", "ab", "abc", "abd", "b", "zz", &"f".repeat(32)];
        for a in words {
            for b in words {
                let (ka, kb) = (IdKey::new(a).unwrap(), IdKey::new(b).unwrap());
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
        assert!(IdKey::new(&"f".repeat(33)).is_none());
        assert!(IdKey::truncated(&"f".repeat(40)) <= IdKey::new(&"f".repeat(32)).unwrap());
    }

    #[test]
    fn packed_records_read_back() {
        let mut s = Store::default();
        let f = fields(&[("a", ""), ("b", "ünï"), ("c", "x")]);
        let id = s.insert("u_t", f, &stamp("2024-05-01 10:00:00")).unwrap();
        let r = s.get(&id).unwrap();
        assert_eq!(
            (r.get("a"), r.get("b"), r.get("c"), r.get("zz")),
            ("", "ünï", "x", "")
        );
        assert!(r.has("a") && !r.has("zz"));
        assert_eq!(r.fields()["b"], "ünï");
        assert_eq!(r.fields().len(), 3 + 7, "plus the system columns");
    }

    #[test]
    fn insert_fills_system_columns() {
        let mut s = Store::default();
        let id = s
            .insert(
                "incident",
                fields(&[("number", "INC1")]),
                &stamp("2024-05-01 10:00:00"),
            )
            .unwrap();
        assert_eq!(id.len(), 32);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let r = s.get(&id).unwrap();
        assert_eq!(r.get("sys_class_name"), "incident");
        assert_eq!(r.get("sys_created_on"), "2024-05-01 10:00:00");
        assert_eq!(r.get("sys_updated_on"), "2024-05-01 10:00:00");
        assert_eq!(r.get("sys_mod_count"), "0");
        assert_eq!(r.get("sys_updated_by"), "admin");
    }

    #[test]
    fn update_bumps_only_on_change() {
        let mut s = Store::default();
        let id = s
            .insert(
                "incident",
                fields(&[("state", "1")]),
                &stamp("2024-05-01 10:00:00"),
            )
            .unwrap();
        let later = stamp("2024-05-01 11:00:00");
        assert!(!s
            .update("incident", &id, fields(&[("state", "1")]), &later)
            .unwrap());
        assert!(s
            .update("incident", &id, fields(&[("state", "2")]), &later)
            .unwrap());
        let r = s.get(&id).unwrap();
        assert_eq!(r.get("sys_updated_on"), "2024-05-01 11:00:00");
        assert_eq!(r.get("sys_mod_count"), "1");
        let p = plan(&s, "incident", "sys_updated_on>=2024-05-01 11:00:00");
        assert_eq!(
            ids(&s.select("incident", &p, 0, 10, true).unwrap()),
            vec![id]
        );
    }

    #[test]
    fn child_records_appear_in_the_parent_with_the_same_sys_id() {
        let mut s = Store::default();
        let id = s
            .insert(
                "customer_contact",
                fields(&[("name", "Jane")]),
                &stamp("2024-05-01 10:00:00"),
            )
            .unwrap();
        let p = plan(&s, "sys_user", "");
        let w = s.select("sys_user", &p, 0, 10, true).unwrap();
        assert_eq!(ids(&w), vec![id.clone()]);
        assert_eq!(w.rows[0].get("sys_class_name"), "customer_contact");
        assert!(s.columns("customer_contact").contains_key("name"));
        assert!(!s.columns("sys_user").contains_key("account"));
        // Through the parent, a delete still writes the child's name by default.
        s.delete("sys_user", &id, &stamp("2024-05-02 00:00:00"), true)
            .unwrap();
        assert_eq!(s.count("sys_user"), 0);
        let p = plan(&s, AUDIT_DELETE_TABLE, "tablename=customer_contact");
        let w = s.select(AUDIT_DELETE_TABLE, &p, 0, 10, true).unwrap();
        assert_eq!(w.rows[0].get("documentkey"), id);
        assert_eq!(w.rows[0].get("sys_created_on"), "2024-05-02 00:00:00");
        assert_eq!(w.rows[0].get("display_value"), "Jane");
    }

    #[test]
    fn audit_rules() {
        let mut s = Store::default();
        s.define(TableDef::new("u_quiet").no_audit_delete());
        s.define(TableDef::new("sys_other"));
        let now = stamp("2024-05-01 10:00:00");
        for t in ["u_quiet", "sys_other", "sys_user", "incident"] {
            let id = s.insert(t, Fields::new(), &now).unwrap();
            let audited = s.delete(t, &id, &now, true).unwrap().is_some();
            assert_eq!(audited, t == "sys_user" || t == "incident", "{t}");
        }
        let id = s.insert("incident", Fields::new(), &now).unwrap();
        assert_eq!(s.delete("incident", &id, &now, false).unwrap(), None);
        s.audit_name = AuditName::DeletedThrough;
        let id = s.insert("customer_contact", Fields::new(), &now).unwrap();
        let audit = s.delete("sys_user", &id, &now, true).unwrap().unwrap();
        assert_eq!(s.get(&audit).unwrap().get("tablename"), "sys_user");
    }

    #[test]
    fn errors_for_unknown_things() {
        let mut s = Store::default();
        let now = stamp("2024-05-01 10:00:00");
        assert_eq!(
            s.update("nope", "x", Fields::new(), &now),
            Err(StoreError::UnknownTable("nope".into()))
        );
        assert_eq!(
            s.delete("incident", "x", &now, true),
            Err(StoreError::NotFound("x".into()))
        );
        let id = s.insert("incident", Fields::new(), &now).unwrap();
        assert!(s
            .update("problem", &id, fields(&[("a", "b")]), &now)
            .is_err());
        assert_eq!(
            s.insert("incident", fields(&[("sys_id", &id)]), &now),
            Err(StoreError::DuplicateSysId(id))
        );
        assert!(matches!(
            s.insert("incident", fields(&[("opened_at", "yesterday")]), &now),
            Err(StoreError::BadDate { .. })
        ));
    }

    #[test]
    fn keyset_query_reads_only_the_page() {
        let mut s = Store::default();
        let base = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        for i in 0..8_000i64 {
            let at = (base + chrono::Duration::seconds(i / 4))
                .format(DATE_FORMAT)
                .to_string();
            s.insert("incident", fields(&[("sys_updated_on", &at)]), &stamp(&at))
                .unwrap();
        }
        let q = "sys_updated_on>=2024-01-01 00:10:00^ORDERBYsys_updated_on^ORDERBYsys_id";
        let p = plan(&s, "incident", q);
        let w = s.select("incident", &p, 0, 10, false).unwrap();
        assert_eq!(w.rows.len(), 10);
        assert!(w.more);
        assert!(w.examined <= 11, "examined {}", w.examined);
        assert_eq!(w.rows[0].get("sys_updated_on"), "2024-01-01 00:10:00");
        let sorted = w.rows.windows(2).all(|p| {
            (p[0].get("sys_updated_on"), p[0].get("sys_id"))
                < (p[1].get("sys_updated_on"), p[1].get("sys_id"))
        });
        assert!(sorted);
        // The same query with a count reads the whole range but still answers the page.
        let w = s.select("incident", &p, 0, 10, true).unwrap();
        assert_eq!(w.total, Some(8_000 - 600 * 4));
        // Keyset continuation inside one second, across an ^NQ.
        let last = w.rows[9];
        let q = format!(
            "sys_updated_on>{u}^NQsys_updated_on={u}^sys_id>{i}^ORDERBYsys_updated_on^ORDERBYsys_id",
            u = last.get("sys_updated_on"),
            i = last.get("sys_id")
        );
        let p = plan(&s, "incident", &q);
        assert!(p.ignored.is_empty());
        let w2 = s.select("incident", &p, 0, 5, false).unwrap();
        assert!(w2.examined <= 10, "examined {}", w2.examined);
        assert!(
            (w2.rows[0].get("sys_updated_on"), w2.rows[0].get("sys_id"))
                > (last.get("sys_updated_on"), last.get("sys_id"))
        );
    }

    #[test]
    fn descending_and_sorted_orders_agree() {
        let mut s = Store::default();
        for (i, at) in [
            "2024-01-01 00:00:03",
            "2024-01-01 00:00:01",
            "2024-01-01 00:00:02",
        ]
        .iter()
        .enumerate()
        {
            let f = fields(&[("number", &format!("INC{i}")), ("sys_updated_on", at)]);
            s.insert("incident", f, &stamp(at)).unwrap();
        }
        let numbers = |q: &str| -> Vec<String> {
            let p = plan(&s, "incident", q);
            let w = s.select("incident", &p, 0, 10, true).unwrap();
            w.rows.iter().map(|r| r.get("number").to_string()).collect()
        };
        assert_eq!(numbers("ORDERBYsys_updated_on"), ["INC1", "INC2", "INC0"]);
        assert_eq!(
            numbers("ORDERBYDESCsys_updated_on^ORDERBYDESCsys_id"),
            ["INC0", "INC2", "INC1"]
        );
        assert_eq!(numbers("ORDERBYDESCnumber"), ["INC2", "INC1", "INC0"]);
        assert_eq!(
            numbers("sys_updated_on>2024-01-01 00:00:05"),
            Vec::<String>::new()
        );
        assert_eq!(
            numbers("sys_updated_on>2024-02-01^sys_updated_on<2024-01-01"),
            Vec::<String>::new()
        );
    }
}
