//! Vantiq's select parameters — `where`, `props`, `sort`, `limit`, `page` —
//! parsed into values and applied to JSON documents.
//!
//! The `where` clause is a Mongo-like filter. It is parsed once into a
//! [`Filter`] (unknown operators and wrong operand types are refused there,
//! before anything is read) and then evaluated against the decoded documents
//! in Rust, so user input never reaches SQL text. Matching follows Mongo: a
//! condition on an array field matches when any element matches, a comparison
//! between values of different JSON types is false, and dotted paths
//! (`a.b.c`) reach into nested objects.

use std::cmp::Ordering;

use regex::Regex;
use serde_json::{Map, Value};

/// Largest compiled `$regex` program, so a hostile pattern cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Longest `where` clause, in bytes of its JSON text.
pub const MAX_WHERE_BYTES: usize = 16 * 1024;

/// Deepest nesting of arrays and objects in a `where` clause.
pub const MAX_WHERE_DEPTH: usize = 16;

/// Most `$regex` terms in one `where` clause (`$not` with a pattern counts):
/// each is compiled and run against every document read.
pub const MAX_WHERE_REGEXES: usize = 8;

/// Why a select parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter is not JSON.
    #[error("The {param} parameter is not valid JSON: {reason}")]
    NotJson {
        /// The parameter (`where`, `props`).
        param: &'static str,
        /// The JSON parser's complaint.
        reason: String,
    },
    /// The where clause is not an object (the kind it was).
    #[error("The where clause must be a JSON object, got {0}.")]
    WhereNotObject(&'static str),
    /// An operator this server does not know.
    #[error("Unknown query operator {0}.")]
    UnknownOperator(String),
    /// An operator's operand has the wrong JSON type.
    #[error("Operator {operator} needs {expected}, got {got}.")]
    WrongOperand {
        /// The operator (`$in`, …).
        operator: String,
        /// What it takes.
        expected: &'static str,
        /// What it got.
        got: &'static str,
    },
    /// A `$regex` that does not compile (or is too large).
    #[error("Invalid regular expression for $regex: {0}")]
    BadRegex(String),
    /// The where clause exceeds one of its limits ([`MAX_WHERE_BYTES`],
    /// [`MAX_WHERE_DEPTH`], [`MAX_WHERE_REGEXES`]).
    #[error("The where clause exceeds its limit of {limit} {measure}: it has {actual}.")]
    TooComplex {
        /// What is limited: `bytes`, `levels of nesting` or `$regex terms`.
        measure: &'static str,
        /// The limit.
        limit: usize,
        /// What the clause has (for bytes and depth: at least this much).
        actual: usize,
    },
    /// `props` is not an array of names.
    #[error("The props parameter must be a JSON array of property names.")]
    BadProps,
    /// `sort` is not an object of `property: 1 | -1`.
    #[error("The sort parameter must be a JSON object of property: 1 or -1.")]
    BadSort,
    /// `limit` or `page` is not a positive integer.
    #[error("The {param} parameter must be a positive integer, got {value}.")]
    BadInteger {
        /// `limit` or `page`.
        param: &'static str,
        /// What was sent (at most 40 characters).
        value: String,
    },
}

/// A parsed `where` clause.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Every sub-filter matches (also an object with several keys).
    And(Vec<Filter>),
    /// `$or`: some sub-filter matches.
    Or(Vec<Filter>),
    /// `$nor`: no sub-filter matches.
    Nor(Vec<Filter>),
    /// `$not`: the sub-filter does not match.
    Not(Box<Filter>),
    /// Conditions on one (dotted) property.
    Field {
        /// The property, dotted into nested objects (`a.b.c`).
        path: String,
        /// Every one must hold.
        conditions: Vec<Condition>,
    },
}

/// One condition on a property value.
#[derive(Debug, Clone)]
pub enum Condition {
    /// `$eq` (or a bare value): equal.
    Eq(Value),
    /// `$ne`: not equal.
    Ne(Value),
    /// `$gt`: greater, within the same JSON type.
    Gt(Value),
    /// `$gte`: greater or equal.
    Gte(Value),
    /// `$lt`: less.
    Lt(Value),
    /// `$lte`: less or equal.
    Lte(Value),
    /// `$in`: equal to one of these.
    In(Vec<Value>),
    /// `$nin`: equal to none of these.
    Nin(Vec<Value>),
    /// `$all`: an array holding all of these.
    All(Vec<Value>),
    /// `$size`: an array of this length.
    Size(u64),
    /// `$exists`: the property is (`true`) or is not there.
    Exists(bool),
    /// `$regex` (with `$options`): a string matching.
    Regex(Regex),
    /// `$elemMatch`: an array with an element matching.
    ElemMatch(Box<ElemMatch>),
    /// `$not`: the conditions do not all hold.
    Not(Vec<Condition>),
}

/// What `$elemMatch` applies to each array element.
#[derive(Debug, Clone)]
pub enum ElemMatch {
    /// `{"$elemMatch": {"a": 1}}` on arrays of objects.
    Document(Filter),
    /// `{"$elemMatch": {"$gt": 1}}` on arrays of scalars.
    Value(Vec<Condition>),
}

/// The JSON type of `value` for messages: "a string", "an object", "null", ….
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Filter {
    /// The filter that matches everything.
    pub fn all() -> Filter {
        Filter::And(Vec::new())
    }

    /// Parses the decoded `where` JSON, within the clause's limits.
    pub fn parse(value: &Value) -> Result<Filter, QueryError> {
        check_limits(value)?;
        match value {
            Value::Object(object) => Self::parse_object(object),
            Value::Null => Ok(Filter::all()),
            other => Err(QueryError::WhereNotObject(json_kind(other))),
        }
    }

    fn parse_object(object: &Map<String, Value>) -> Result<Filter, QueryError> {
        let mut parts = Vec::with_capacity(object.len());
        for (key, value) in object {
            parts.push(match key.as_str() {
                "$and" | "$or" | "$nor" => {
                    let Value::Array(items) = value else {
                        return Err(QueryError::WrongOperand {
                            operator: key.clone(),
                            expected: "an array of where clauses",
                            got: json_kind(value),
                        });
                    };
                    let filters = items
                        .iter()
                        .map(Filter::parse_clause)
                        .collect::<Result<Vec<_>, _>>()?;
                    match key.as_str() {
                        "$and" => Filter::And(filters),
                        "$or" => Filter::Or(filters),
                        _ => Filter::Nor(filters),
                    }
                }
                "$not" => Filter::Not(Box::new(Filter::parse_clause(value)?)),
                operator if operator.starts_with('$') => {
                    return Err(QueryError::UnknownOperator(operator.to_owned()));
                }
                path => Filter::Field {
                    path: path.to_owned(),
                    conditions: parse_conditions(value)?,
                },
            });
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Filter::And(parts)
        })
    }

    fn parse_clause(value: &Value) -> Result<Filter, QueryError> {
        match value {
            Value::Object(object) => Self::parse_object(object),
            other => Err(QueryError::WhereNotObject(json_kind(other))),
        }
    }

    /// Whether `document` satisfies the filter.
    pub fn matches(&self, document: &Value) -> bool {
        match self {
            Filter::And(filters) => filters.iter().all(|f| f.matches(document)),
            Filter::Or(filters) => filters.iter().any(|f| f.matches(document)),
            Filter::Nor(filters) => !filters.iter().any(|f| f.matches(document)),
            Filter::Not(filter) => !filter.matches(document),
            Filter::Field { path, conditions } => {
                let value = lookup(document, path);
                conditions.iter().all(|c| c.matches(value))
            }
        }
    }
}

/// Refuses a clause beyond [`MAX_WHERE_DEPTH`], [`MAX_WHERE_BYTES`] or
/// [`MAX_WHERE_REGEXES`] before anything in it is compiled or evaluated.
fn check_limits(value: &Value) -> Result<(), QueryError> {
    /// Depth, `$regex` count and JSON bytes of `value` at `depth`; stops
    /// descending past the depth limit.
    fn measure(value: &Value, depth: usize, regexes: &mut usize, bytes: &mut usize) -> usize {
        if depth > MAX_WHERE_DEPTH {
            return depth;
        }
        match value {
            Value::Object(object) => {
                *bytes += 2;
                let mut deepest = depth;
                for (key, operand) in object {
                    *bytes += key.len() + 4;
                    if key == "$regex" || (key == "$not" && operand.is_string()) {
                        *regexes += 1;
                    }
                    deepest = deepest.max(measure(operand, depth + 1, regexes, bytes));
                }
                deepest
            }
            Value::Array(items) => {
                *bytes += 2;
                items.iter().fold(depth, |deepest, item| {
                    *bytes += 1;
                    deepest.max(measure(item, depth + 1, regexes, bytes))
                })
            }
            Value::String(text) => {
                *bytes += text.len() + 2;
                depth
            }
            other => {
                *bytes += other.to_string().len();
                depth
            }
        }
    }
    let (mut regexes, mut bytes) = (0, 0);
    let depth = measure(value, 1, &mut regexes, &mut bytes);
    let limits = [
        ("levels of nesting", MAX_WHERE_DEPTH, depth),
        ("bytes", MAX_WHERE_BYTES, bytes),
        ("$regex terms", MAX_WHERE_REGEXES, regexes),
    ];
    match limits.into_iter().find(|(_, limit, actual)| actual > limit) {
        Some((measure, limit, actual)) => Err(QueryError::TooComplex {
            measure,
            limit,
            actual,
        }),
        None => Ok(()),
    }
}

/// A value that is an object whose keys all start with `$` is a set of
/// operators; anything else is an equality.
fn parse_conditions(value: &Value) -> Result<Vec<Condition>, QueryError> {
    match value {
        Value::Object(object)
            if !object.is_empty() && object.keys().all(|key| key.starts_with('$')) =>
        {
            let mut conditions = Vec::with_capacity(object.len());
            let options = object.get("$options");
            for (operator, operand) in object {
                if operator == "$options" {
                    if !object.contains_key("$regex") {
                        return Err(QueryError::WrongOperand {
                            operator: "$options".into(),
                            expected: "a $regex beside it",
                            got: "none",
                        });
                    }
                    continue;
                }
                conditions.push(parse_condition(operator, operand, options)?);
            }
            Ok(conditions)
        }
        Value::Object(object) if object.keys().any(|key| key.starts_with('$')) => {
            Err(QueryError::WrongOperand {
                operator: object
                    .keys()
                    .find(|key| key.starts_with('$'))
                    .cloned()
                    .unwrap_or_default(),
                expected: "only operators in the same object",
                got: "a mix of operators and properties",
            })
        }
        other => Ok(vec![Condition::Eq(other.clone())]),
    }
}

fn parse_condition(
    operator: &str,
    operand: &Value,
    options: Option<&Value>,
) -> Result<Condition, QueryError> {
    let wrong = |expected: &'static str| QueryError::WrongOperand {
        operator: operator.to_owned(),
        expected,
        got: json_kind(operand),
    };
    let array = || match operand {
        Value::Array(items) => Ok(items.clone()),
        _ => Err(wrong("an array")),
    };
    Ok(match operator {
        "$eq" => Condition::Eq(operand.clone()),
        "$ne" => Condition::Ne(operand.clone()),
        "$gt" => Condition::Gt(operand.clone()),
        "$gte" => Condition::Gte(operand.clone()),
        "$lt" => Condition::Lt(operand.clone()),
        "$lte" => Condition::Lte(operand.clone()),
        "$in" => Condition::In(array()?),
        "$nin" => Condition::Nin(array()?),
        "$all" => Condition::All(array()?),
        "$size" => Condition::Size(
            operand
                .as_u64()
                .ok_or_else(|| wrong("a non-negative integer"))?,
        ),
        "$exists" => Condition::Exists(operand.as_bool().ok_or_else(|| wrong("a boolean"))?),
        "$regex" => {
            let pattern = operand.as_str().ok_or_else(|| wrong("a string"))?;
            let flags = match options {
                None => "",
                Some(Value::String(flags)) => flags.as_str(),
                Some(other) => {
                    return Err(QueryError::WrongOperand {
                        operator: "$options".into(),
                        expected: "a string of flags",
                        got: json_kind(other),
                    });
                }
            };
            let mut builder = regex::RegexBuilder::new(pattern);
            builder.size_limit(REGEX_SIZE_LIMIT);
            for flag in flags.chars() {
                match flag {
                    'i' => builder.case_insensitive(true),
                    'm' => builder.multi_line(true),
                    's' => builder.dot_matches_new_line(true),
                    'x' => builder.ignore_whitespace(true),
                    _ => {
                        return Err(QueryError::BadRegex(format!("unknown option {flag}")));
                    }
                };
            }
            Condition::Regex(
                builder
                    .build()
                    .map_err(|error| QueryError::BadRegex(error.to_string()))?,
            )
        }
        "$elemMatch" => {
            let Value::Object(object) = operand else {
                return Err(wrong("an object"));
            };
            if !object.is_empty()
                && object.keys().all(|key| key.starts_with('$'))
                && !object
                    .keys()
                    .any(|k| matches!(k.as_str(), "$and" | "$or" | "$nor"))
            {
                Condition::ElemMatch(Box::new(ElemMatch::Value(parse_conditions(operand)?)))
            } else {
                Condition::ElemMatch(Box::new(ElemMatch::Document(Filter::parse_object(object)?)))
            }
        }
        "$not" => match operand {
            Value::Object(_) => Condition::Not(parse_conditions(operand)?),
            Value::String(_) => Condition::Not(vec![parse_condition("$regex", operand, None)?]),
            _ => return Err(wrong("an object of operators")),
        },
        other => return Err(QueryError::UnknownOperator(other.to_owned())),
    })
}

/// The value at a dotted path, `None` when absent.
pub fn lookup<'a>(document: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = document;
    for segment in path.split('.') {
        current = match current {
            Value::Object(object) => object.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// Orders two JSON values of the same kind; `None` across kinds.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                Some(x.cmp(&y))
            } else {
                x.as_f64()?.partial_cmp(&y.as_f64()?)
            }
        }
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare(a, b) == Some(Ordering::Equal),
        _ => a == b,
    }
}

impl Condition {
    /// Whether the property value (absent = `None`) satisfies the condition.
    fn matches(&self, value: Option<&Value>) -> bool {
        // Conditions that look at the whole value, arrays included.
        match self {
            Condition::Exists(wanted) => return value.is_some() == *wanted,
            Condition::Size(size) => {
                return matches!(value, Some(Value::Array(items)) if items.len() as u64 == *size);
            }
            Condition::All(wanted) => {
                return match value {
                    Some(Value::Array(items)) => wanted
                        .iter()
                        .all(|w| items.iter().any(|item| equal(item, w))),
                    Some(single) => wanted.iter().all(|w| equal(single, w)),
                    None => false,
                };
            }
            Condition::ElemMatch(elem) => {
                return match value {
                    Some(Value::Array(items)) => items.iter().any(|item| match elem.as_ref() {
                        ElemMatch::Document(filter) => filter.matches(item),
                        ElemMatch::Value(conditions) => {
                            conditions.iter().all(|c| c.matches_scalar(Some(item)))
                        }
                    }),
                    _ => false,
                };
            }
            Condition::Ne(operand) => return !Condition::Eq(operand.clone()).matches(value),
            Condition::Nin(operands) => return !Condition::In(operands.clone()).matches(value),
            Condition::Not(conditions) => return !conditions.iter().all(|c| c.matches(value)),
            _ => {}
        }
        match value {
            // An equality with a whole array, or any element of it.
            Some(Value::Array(items)) => {
                self.matches_scalar(value)
                    || items.iter().any(|item| self.matches_scalar(Some(item)))
            }
            _ => self.matches_scalar(value),
        }
    }

    fn matches_scalar(&self, value: Option<&Value>) -> bool {
        let ordered = |operand: &Value, accept: fn(Ordering) -> bool| {
            value
                .and_then(|value| compare(value, operand))
                .is_some_and(accept)
        };
        match self {
            Condition::Eq(operand) => match value {
                Some(value) => equal(value, operand),
                None => operand.is_null(),
            },
            Condition::Gt(operand) => ordered(operand, Ordering::is_gt),
            Condition::Gte(operand) => ordered(operand, Ordering::is_ge),
            Condition::Lt(operand) => ordered(operand, Ordering::is_lt),
            Condition::Lte(operand) => ordered(operand, Ordering::is_le),
            Condition::In(operands) => operands
                .iter()
                .any(|operand| Condition::Eq(operand.clone()).matches_scalar(value)),
            Condition::Regex(regex) => matches!(value, Some(Value::String(s)) if regex.is_match(s)),
            other => other.matches(value),
        }
    }
}

/// A parsed `sort`: properties in the order given, `true` = ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sort(pub Vec<(String, bool)>);

impl<'de> serde::Deserialize<'de> for Sort {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Sort;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of property: 1 or -1")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Sort, A::Error> {
                // Visited in document order, which is the sort precedence.
                let mut keys = Vec::new();
                while let Some((key, direction)) = map.next_entry::<String, i64>()? {
                    match direction {
                        1 => keys.push((key, true)),
                        -1 => keys.push((key, false)),
                        _ => {
                            return Err(serde::de::Error::custom("sort direction must be 1 or -1"));
                        }
                    }
                }
                Ok(Sort(keys))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Orders documents by a [`Sort`]; absent and null values first, then by
/// JSON kind (bool < number < string < other), then by value.
pub fn sort_documents(documents: &mut [Value], sort: &Sort) {
    fn rank(value: Option<&Value>) -> u8 {
        match value {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(_) => 4,
        }
    }
    if sort.0.is_empty() {
        return;
    }
    documents.sort_by(|a, b| {
        for (path, ascending) in &sort.0 {
            let (x, y) = (lookup(a, path), lookup(b, path));
            let order = rank(x).cmp(&rank(y)).then_with(|| match (x, y) {
                (Some(x), Some(y)) => compare(x, y).unwrap_or(Ordering::Equal),
                _ => Ordering::Equal,
            });
            let order = if *ascending { order } else { order.reverse() };
            if order != Ordering::Equal {
                return order;
            }
        }
        Ordering::Equal
    });
}

/// Every select parameter of one request.
#[derive(Debug, Clone)]
pub struct Select {
    /// `where`: which documents.
    pub filter: Filter,
    /// `props`: the top-level properties to keep (`None`: all).
    pub props: Option<Vec<String>>,
    /// `sort`: the order.
    pub sort: Sort,
    /// `limit`: at most this many per page (`None`: all).
    pub limit: Option<usize>,
    /// 1-based.
    pub page: usize,
    /// `count=true`: answer the total in `X-Total-Count`.
    pub count: bool,
}

/// The result of applying a [`Select`].
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    /// The page of matching documents, sorted and projected.
    pub documents: Vec<Value>,
    /// Matches before `limit`/`page`.
    pub total: usize,
}

impl Default for Select {
    fn default() -> Self {
        Select {
            filter: Filter::all(),
            props: None,
            sort: Sort::default(),
            limit: None,
            page: 1,
            count: false,
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    param: &'static str,
    text: &str,
) -> Result<T, QueryError> {
    serde_json::from_str(text).map_err(|error| QueryError::NotJson {
        param,
        reason: error.to_string(),
    })
}

impl Select {
    /// Reads the raw query-string values (each JSON-encoded, as Vantiq's SDKs
    /// send them).
    pub fn from_params(
        where_: Option<&str>,
        props: Option<&str>,
        sort: Option<&str>,
        limit: Option<&str>,
        page: Option<&str>,
        count: Option<&str>,
    ) -> Result<Select, QueryError> {
        let mut select = Select::default();
        if let Some(text) = where_ {
            select.filter = Filter::parse(&decode::<Value>("where", text)?)?;
        }
        if let Some(text) = props {
            let value: Value = decode("props", text)?;
            let Value::Array(items) = value else {
                return Err(QueryError::BadProps);
            };
            select.props = Some(
                items
                    .into_iter()
                    .map(|item| match item {
                        Value::String(name) => Ok(name),
                        _ => Err(QueryError::BadProps),
                    })
                    .collect::<Result<_, _>>()?,
            );
        }
        if let Some(text) = sort {
            select.sort = serde_json::from_str(text).map_err(|_| QueryError::BadSort)?;
        }
        let integer = |param: &'static str, text: &str| {
            text.trim()
                .parse::<usize>()
                .ok()
                .filter(|value| *value > 0)
                .ok_or_else(|| QueryError::BadInteger {
                    param,
                    value: text.chars().take(40).collect(),
                })
        };
        if let Some(text) = limit {
            select.limit = Some(integer("limit", text)?);
        }
        if let Some(text) = page {
            select.page = integer("page", text)?;
        }
        select.count = count.is_some_and(|text| text.trim() == "true");
        Ok(select)
    }

    /// Filters, sorts, pages and projects `documents`.
    pub fn apply(&self, documents: Vec<Value>) -> Selected {
        let mut matched: Vec<Value> = documents
            .into_iter()
            .filter(|document| self.filter.matches(document))
            .collect();
        let total = matched.len();
        sort_documents(&mut matched, &self.sort);
        let documents = match self.limit {
            Some(limit) => matched
                .into_iter()
                .skip(limit.saturating_mul(self.page - 1))
                .take(limit)
                .collect(),
            None => matched,
        };
        let documents = match &self.props {
            Some(props) => documents
                .into_iter()
                .map(|document| project(&document, props))
                .collect(),
            None => documents,
        };
        Selected { documents, total }
    }
}

/// Keeps only the named top-level properties.
fn project(document: &Value, props: &[String]) -> Value {
    let mut out = Map::new();
    for prop in props {
        if let Some(value) = document.get(prop.as_str()) {
            out.insert(prop.clone(), value.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matches(filter: Value, document: Value) -> bool {
        Filter::parse(&filter).unwrap().matches(&document)
    }

    #[test]
    fn equality_and_comparisons() {
        let doc = json!({"name": "c1", "n": 5, "tags": ["a", "b"], "nested": {"x": 1.5}});
        assert!(matches(json!({"name": "c1"}), doc.clone()));
        assert!(!matches(json!({"name": "c2"}), doc.clone()));
        assert!(matches(json!({"n": {"$gt": 4, "$lte": 5}}), doc.clone()));
        assert!(!matches(json!({"n": {"$gt": "4"}}), doc.clone()));
        assert!(matches(json!({"nested.x": {"$gte": 1.5}}), doc.clone()));
        assert!(matches(json!({"tags": "a"}), doc.clone()));
        assert!(matches(json!({"tags": {"$all": ["b", "a"]}}), doc.clone()));
        assert!(matches(json!({"tags": {"$size": 2}}), doc.clone()));
        assert!(matches(json!({"name": {"$in": ["x", "c1"]}}), doc.clone()));
        assert!(matches(json!({"name": {"$nin": ["x"]}}), doc.clone()));
        assert!(matches(json!({"missing": {"$ne": 1}}), doc.clone()));
        assert!(matches(json!({"missing": {"$exists": false}}), doc.clone()));
        assert!(matches(
            json!({"name": {"$regex": "^C", "$options": "i"}}),
            doc.clone()
        ));
        assert!(matches(json!({"n": {"$not": {"$gt": 9}}}), doc));
    }

    #[test]
    fn clauses_beyond_their_limits_are_refused_before_compiling() {
        let regexes = |count: usize| json!({"$or": (0..count).map(|n| json!({format!("p{n}"): {"$regex": "^a"}})).collect::<Vec<_>>()});
        assert!(Filter::parse(&regexes(MAX_WHERE_REGEXES)).is_ok());
        assert_eq!(
            Filter::parse(&regexes(MAX_WHERE_REGEXES + 1)).unwrap_err(),
            QueryError::TooComplex {
                measure: "$regex terms",
                limit: MAX_WHERE_REGEXES,
                actual: MAX_WHERE_REGEXES + 1,
            }
        );
        // `$not` with a pattern is a regex too.
        let mixed = json!({"$and": [regexes(MAX_WHERE_REGEXES), {"x": {"$not": "^b"}}]});
        assert!(matches!(
            Filter::parse(&mixed),
            Err(QueryError::TooComplex {
                measure: "$regex terms",
                ..
            })
        ));

        let mut deep = json!({"a": 1});
        for _ in 0..MAX_WHERE_DEPTH {
            deep = json!({"$and": [deep]});
        }
        assert!(matches!(
            Filter::parse(&deep),
            Err(QueryError::TooComplex {
                measure: "levels of nesting",
                limit: MAX_WHERE_DEPTH,
                ..
            })
        ));
        let shallow = json!({"$and": [{"$or": [{"a": {"$elemMatch": {"b": {"$in": [1, 2]}}}}]}]});
        assert!(Filter::parse(&shallow).is_ok());

        let large = json!({"name": {"$in": vec!["x".repeat(100); MAX_WHERE_BYTES / 100]}});
        match Filter::parse(&large) {
            Err(QueryError::TooComplex {
                measure: "bytes",
                limit,
                actual,
            }) => {
                assert_eq!(limit, MAX_WHERE_BYTES);
                assert!(actual > MAX_WHERE_BYTES, "{actual}");
            }
            other => panic!("expected a size refusal, got {other:?}"),
        }
    }

    #[test]
    fn logical_operators() {
        let doc = json!({"a": 1, "b": 2});
        assert!(matches(json!({"$or": [{"a": 2}, {"b": 2}]}), doc.clone()));
        assert!(matches(json!({"$and": [{"a": 1}, {"b": 2}]}), doc.clone()));
        assert!(matches(json!({"$nor": [{"a": 2}, {"b": 3}]}), doc.clone()));
        assert!(matches(json!({"$not": {"a": 2}}), doc));
    }

    #[test]
    fn elem_match() {
        let doc = json!({"items": [{"k": "x", "v": 1}, {"k": "y", "v": 7}], "nums": [1, 9]});
        assert!(matches(
            json!({"items": {"$elemMatch": {"k": "y", "v": {"$gt": 5}}}}),
            doc.clone()
        ));
        assert!(!matches(
            json!({"items": {"$elemMatch": {"k": "x", "v": {"$gt": 5}}}}),
            doc.clone()
        ));
        assert!(matches(
            json!({"nums": {"$elemMatch": {"$gt": 5, "$lt": 10}}}),
            doc
        ));
    }

    #[test]
    fn hostile_where_clauses_are_refused_not_executed() {
        for bad in [
            json!({"name": {"$where": "1=1"}}),
            json!({"$expr": {}}),
            json!({"name": {"$regex": 5}}),
            json!({"name": {"$in": "x"}}),
            json!({"$or": {"a": 1}}),
            json!({"name": {"$regex": "("}}),
            json!({"name": {"$size": -1}}),
            json!({"a": {"$gt": 1, "b": 2}}),
            json!([1, 2]),
        ] {
            assert!(Filter::parse(&bad).is_err(), "{bad} was accepted");
        }
        // SQL in a value is only a string to compare with.
        assert!(!matches(
            json!({"name": "x' OR '1'='1"}),
            json!({"name": "c1"})
        ));
    }

    #[test]
    fn select_sorts_pages_and_projects() {
        let docs: Vec<Value> = (1..=5)
            .map(|i| json!({"name": format!("c{i}"), "n": i % 3}))
            .collect();
        let select = Select::from_params(
            Some(r#"{"n":{"$gte":0}}"#),
            Some(r#"["name"]"#),
            Some(r#"{"n":-1,"name":1}"#),
            Some("2"),
            Some("2"),
            Some("true"),
        )
        .unwrap();
        let selected = select.apply(docs);
        assert_eq!(selected.total, 5);
        // n: c1=1 c2=2 c3=0 c4=1 c5=2 → desc n, asc name: c2 c5 c1 c4 c3
        assert_eq!(
            selected.documents,
            vec![json!({"name": "c1"}), json!({"name": "c4"})]
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        assert!(matches!(
            Select::from_params(None, None, None, Some("-3"), None, None),
            Err(QueryError::BadInteger { param: "limit", .. })
        ));
        assert!(matches!(
            Select::from_params(Some("{"), None, None, None, None, None),
            Err(QueryError::NotJson { param: "where", .. })
        ));
        assert_eq!(
            Select::from_params(None, None, Some(r#"{"a":2}"#), None, None, None).unwrap_err(),
            QueryError::BadSort
        );
    }
}
