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

/// The first `limit` lines of the rows under group headings, groups in label order
/// (numbers by value, the runs without one last), each group's rows in the order given;
/// and how many lines there are in all. Only the lines returned are copied: the list
/// stays quick with 10,000 runs.
pub fn grouped(rows: &[&RunSummary], values: &Value, by: &str, limit: usize) -> (Vec<Item>, usize) {
    if by.is_empty() {
        let items = rows.iter().take(limit).map(|s| Item::Row((*s).clone()));
        return (items.collect(), rows.len());
    }
    // Each row with its group's sort key; a stable sort keeps the order within a group.
    let mut keyed: Vec<_> = rows
        .iter()
        .map(|&s| {
            let g = group_of(s, values, by);
            let n = g.as_deref().and_then(super::parse_f64);
            ((g.is_none(), n.is_none(), n.unwrap_or(0.0), g), s)
        })
        .collect();
    super::sort::sort_by(&mut keyed, |(a, _), (b, _)| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then(a.2.total_cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    let (mut out, mut total, mut i) = (Vec::new(), 0, 0);
    while i < keyed.len() {
        let label = &keyed[i].0 .3;
        let n = keyed[i..].iter().take_while(|k| k.0 .3 == *label).count();
        total += 1 + n;
        if out.len() < limit {
            out.push(Item::Head(label.clone(), n));
            let room = limit - out.len();
            out.extend(
                keyed[i..i + n]
                    .iter()
                    .take(room)
                    .map(|k| Item::Row(k.1.clone())),
            );
        }
        i += n;
    }
    (out, total)
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
        let runs = [run("a", Some("s1")), run("b", None), run("c", Some("s1"))];
        let rows: Vec<&RunSummary> = runs.iter().collect();
        let (by_group, n) = grouped(&rows, &values, "group", 100);
        assert_eq!((by_group.len(), n), (5, 5));
        assert_eq!(by_group[0], Item::Head(Some("s1".into()), 2));
        assert_eq!(by_group[3], Item::Head(None, 1));
        let (by_lr, _) = grouped(&rows, &values, "c:lr", 100);
        assert_eq!(by_lr[0], Item::Head(Some("0.01".into()), 1));
        assert_eq!(by_lr[2], Item::Head(Some("0.1".into()), 2));
        assert_eq!(show(value(&values, "b", "m:val_loss")), "NaN");
        assert_eq!(show(value(&values, "c", "m:val_loss")), "–");
        assert_eq!(grouped(&rows, &values, "", 100).0.len(), 3);
    }

    #[test]
    fn only_the_first_lines_are_made_and_the_count_says_how_many_there_are() {
        let runs: Vec<RunSummary> = (0..10)
            .map(|i| run(&format!("r{i}"), Some(if i < 5 { "a" } else { "b" })))
            .collect();
        let rows: Vec<&RunSummary> = runs.iter().collect();
        let values = json!({});
        let (flat, n) = grouped(&rows, &values, "", 4);
        assert_eq!((flat.len(), n), (4, 10));
        assert_eq!(flat[3], Item::Row(runs[3].clone()));
        let (lines, n) = grouped(&rows, &values, "group", 7);
        assert_eq!((lines.len(), n), (7, 12));
        assert_eq!(lines[0], Item::Head(Some("a".into()), 5));
        assert_eq!(lines[6], Item::Head(Some("b".into()), 5));
    }
}
