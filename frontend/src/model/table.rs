//! The runs list's chosen columns and grouping, from the relay's `GET /api/values`
//! answer (`{config_keys, metric_keys, runs: {id: {config, metrics}}}`): plain data,
//! tested natively.

use serde_json::Value;
use stepwatch_events::{num, RunSummary};

/// A column beyond the fixed ones: `c:<config key>` or `m:<metric>`.
pub fn column_parts(col: &str) -> (bool, &str) {
    match col.split_once(':') {
        Some(("m", k)) => (false, k),
        Some((_, k)) => (true, k),
        None => (true, col),
    }
}

/// A value as the table shows it: text as is, numbers as people read them.
pub fn show(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => {
            num::parse_non_finite(s).map_or_else(|| s.clone(), |x| num::display(x, 5))
        }
        Value::Number(_) => num::from_json(v).map_or_else(String::new, |x| num::display(x, 5)),
        other => other.to_string(),
    }
}

/// The value of `col` for `run` in a values answer.
pub fn value<'a>(values: &'a Value, run: &str, col: &str) -> &'a Value {
    let (config, key) = column_parts(col);
    &values["runs"][run][if config { "config" } else { "metrics" }][key]
}

/// The label of the group `s` falls in for `by` (`group`, or a column).
pub fn group_of(s: &RunSummary, values: &Value, by: &str) -> Option<String> {
    if by == "group" {
        return s.group.clone();
    }
    Some(value(values, &s.run, by))
        .filter(|v| !v.is_null())
        .map(show)
}

/// One line of the table: a group's heading (label, runs in it) or a run.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // built once per list change, moved into the view
pub enum Item {
    Head(Option<String>, usize),
    Row(RunSummary),
}

/// The rows under group headings, groups in label order (numbers by value, the runs
/// without one last), each group's rows in the order given.
pub fn grouped(rows: Vec<RunSummary>, values: &Value, by: &str) -> Vec<Item> {
    if by.is_empty() {
        return rows.into_iter().map(Item::Row).collect();
    }
    let mut groups: Vec<(Option<String>, Vec<RunSummary>)> = Vec::new();
    for s in rows {
        let g = group_of(&s, values, by);
        match groups.iter_mut().find(|(k, _)| *k == g) {
            Some((_, v)) => v.push(s),
            None => groups.push((g, vec![s])),
        }
    }
    let key = |g: &Option<String>| {
        let n = g.as_deref().and_then(super::parse_f64);
        (g.is_none(), n.is_none(), n.unwrap_or(0.0), g.clone())
    };
    super::sort::sort_by(&mut groups, |a, b| {
        let (ka, kb) = (key(&a.0), key(&b.0));
        (ka.0, ka.1)
            .cmp(&(kb.0, kb.1))
            .then(ka.2.total_cmp(&kb.2))
            .then(ka.3.cmp(&kb.3))
    });
    let mut out = Vec::new();
    for (g, rows) in groups {
        out.push(Item::Head(g, rows.len()));
        out.extend(rows.into_iter().map(Item::Row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(id: &str, group: Option<&str>) -> RunSummary {
        RunSummary {
            run: id.into(),
            group: group.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn groups_by_group_and_by_config_value() {
        let values = json!({"runs": {
            "a": {"config": {"lr": 0.1}, "metrics": {"val_loss": 0.5}},
            "b": {"config": {"lr": 0.01}, "metrics": {"val_loss": "NaN"}},
            "c": {"config": {"lr": 0.1}, "metrics": {}},
        }});
        let rows = vec![run("a", Some("s1")), run("b", None), run("c", Some("s1"))];
        let by_group = grouped(rows.clone(), &values, "group");
        assert_eq!(by_group[0], Item::Head(Some("s1".into()), 2));
        assert_eq!(by_group[3], Item::Head(None, 1));
        let by_lr = grouped(rows.clone(), &values, "c:lr");
        assert_eq!(by_lr[0], Item::Head(Some("0.01".into()), 1));
        assert_eq!(by_lr[2], Item::Head(Some("0.1".into()), 2));
        assert_eq!(show(value(&values, "b", "m:val_loss")), "NaN");
        assert_eq!(show(value(&values, "c", "m:val_loss")), "–");
        assert_eq!(grouped(rows, &values, "").len(), 3);
    }
}
